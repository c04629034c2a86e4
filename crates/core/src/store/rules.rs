//! S3's rules for CompleteMultipartUpload, as one pure function, [`check_complete`]. The stores
//! that keep S3's rules themselves (the [local store](super::local) and gzship-s3lite) both
//! call it, so they refuse exactly what S3 refuses, with S3's error codes.
//!
//! The rules, in the order they are checked (the first one broken is reported):
//! 1. At least one part is named (`MalformedXML`: S3's schema wants a `Part`).
//! 2. Part numbers strictly ascend, so none repeats (`InvalidPartOrder`). Gaps are allowed.
//! 3. For each named part, in order: it was uploaded (`InvalidPart`); its ETag is the one the
//!    upload returned, quotes aside (`InvalidPart`); its CRC32C, where both the request and the
//!    store have one, is the part's (`InvalidPart`); and unless it is the last part, it is at
//!    least [`MIN_PART_SIZE`] bytes (`EntityTooSmall`).
//!
//! Rule 2 also keeps a request to [`MAX_PARTS`](crate::types::MAX_PARTS) parts, since part
//! numbers are 1..=10,000. A part over [`MAX_PART_SIZE`](crate::types::MAX_PART_SIZE) never
//! gets this far: UploadPart refuses it (`EntityTooLarge`).

use std::fmt;

use super::{ListedPart, UploadedPart};
use crate::types::{ETag, MIN_PART_SIZE, PartNumber};

/// A part as a CompleteMultipartUpload request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedPart {
    /// Part number.
    pub number: PartNumber,
    /// The ETag UploadPart returned for it.
    pub etag: ETag,
    /// Its CRC32C, if the request gives one (gzship always does; S3 checks it when given).
    pub crc32c: Option<u32>,
}

impl From<&UploadedPart> for RequestedPart {
    fn from(p: &UploadedPart) -> Self {
        RequestedPart {
            number: p.number,
            etag: p.etag.clone(),
            crc32c: Some(p.crc32c),
        }
    }
}

/// Why S3 refuses a CompleteMultipartUpload. [`code`](Self::code) is S3's error code for it;
/// the message ends with that code, as the local store's errors show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompleteRefusal {
    /// The request names no part.
    NoParts,
    /// `part` follows `previous` but does not come after it (descending or repeated).
    OutOfOrder {
        /// The part before it in the request.
        previous: PartNumber,
        /// The part out of place.
        part: PartNumber,
    },
    /// The part was never uploaded (or was aborted with its upload).
    NotUploaded {
        /// The part named.
        part: PartNumber,
    },
    /// The ETag named is not the part's: a stale ETag of a replaced part, or a wrong one.
    WrongETag {
        /// The part named.
        part: PartNumber,
        /// The ETag in the request.
        given: ETag,
        /// The ETag of the part the store holds.
        uploaded: ETag,
    },
    /// The CRC32C named is not the part's.
    WrongCrc32c {
        /// The part named.
        part: PartNumber,
        /// The CRC32C in the request.
        given: u32,
        /// The CRC32C of the part the store holds.
        uploaded: u32,
    },
    /// A part that is not the last is under [`MIN_PART_SIZE`].
    TooSmall {
        /// The part named.
        part: PartNumber,
        /// Its size in bytes.
        size: u64,
    },
}

impl CompleteRefusal {
    /// S3's error code for the refusal: `MalformedXML`, `InvalidPartOrder`, `InvalidPart` or
    /// `EntityTooSmall`.
    pub fn code(&self) -> &'static str {
        match self {
            CompleteRefusal::NoParts => "MalformedXML",
            CompleteRefusal::OutOfOrder { .. } => "InvalidPartOrder",
            CompleteRefusal::NotUploaded { .. }
            | CompleteRefusal::WrongETag { .. }
            | CompleteRefusal::WrongCrc32c { .. } => "InvalidPart",
            CompleteRefusal::TooSmall { .. } => "EntityTooSmall",
        }
    }

    /// The part the refusal is about, if it is about one.
    pub fn part(&self) -> Option<PartNumber> {
        match self {
            CompleteRefusal::NoParts => None,
            CompleteRefusal::OutOfOrder { part, .. }
            | CompleteRefusal::NotUploaded { part }
            | CompleteRefusal::WrongETag { part, .. }
            | CompleteRefusal::WrongCrc32c { part, .. }
            | CompleteRefusal::TooSmall { part, .. } => Some(*part),
        }
    }
}

impl fmt::Display for CompleteRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompleteRefusal::NoParts => f.write_str("no part is named; at least one is needed"),
            CompleteRefusal::OutOfOrder { previous, part } => write!(
                f,
                "part {part} follows part {previous}: part numbers must strictly ascend"
            ),
            CompleteRefusal::NotUploaded { part } => write!(f, "part {part} was not uploaded"),
            CompleteRefusal::WrongETag {
                part,
                given,
                uploaded,
            } => write!(
                f,
                "the ETag given for part {part} is {given}, but the part uploaded has {uploaded}"
            ),
            CompleteRefusal::WrongCrc32c {
                part,
                given,
                uploaded,
            } => write!(
                f,
                "the CRC32C given for part {part} is {given:08x}, but the part uploaded has \
                 {uploaded:08x}"
            ),
            CompleteRefusal::TooSmall { part, size } => write!(
                f,
                "part {part} is {size} bytes; every part but the last must be at least \
                 {MIN_PART_SIZE} bytes"
            ),
        }?;
        write!(f, " ({})", self.code())
    }
}

impl std::error::Error for CompleteRefusal {}

/// Checks a CompleteMultipartUpload of `requested` against the parts the store holds, as S3
/// does (see the [module docs](self) for the rules and their order). `uploaded` looks a part
/// up by number; its `crc32c` may be `None` where the store does not know it.
///
/// `Ok` means S3 would join exactly the `requested` parts, in the order given.
pub fn check_complete(
    requested: &[RequestedPart],
    uploaded: impl Fn(PartNumber) -> Option<ListedPart>,
) -> Result<(), CompleteRefusal> {
    if requested.is_empty() {
        return Err(CompleteRefusal::NoParts);
    }
    if let Some(w) = requested.windows(2).find(|w| w[1].number <= w[0].number) {
        return Err(CompleteRefusal::OutOfOrder {
            previous: w[0].number,
            part: w[1].number,
        });
    }
    let last = requested.len() - 1;
    for (i, want) in requested.iter().enumerate() {
        let part = want.number;
        let Some(have) = uploaded(part) else {
            return Err(CompleteRefusal::NotUploaded { part });
        };
        if unquoted(&want.etag) != unquoted(&have.etag) {
            return Err(CompleteRefusal::WrongETag {
                part,
                given: want.etag.clone(),
                uploaded: have.etag,
            });
        }
        if let (Some(given), Some(uploaded)) = (want.crc32c, have.crc32c)
            && given != uploaded
        {
            return Err(CompleteRefusal::WrongCrc32c {
                part,
                given,
                uploaded,
            });
        }
        if i < last && have.size < MIN_PART_SIZE {
            return Err(CompleteRefusal::TooSmall {
                part,
                size: have.size,
            });
        }
    }
    Ok(())
}

/// S3 takes an ETag with or without its quotes.
fn unquoted(etag: &ETag) -> &str {
    etag.as_str().trim().trim_matches('"')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn n(p: u32) -> PartNumber {
        PartNumber::new(p).unwrap()
    }

    fn etag(p: u32) -> ETag {
        ETag::new(format!("\"e{p}\"")).unwrap()
    }

    /// Parts `(number, size)` as a store holds them, with ETag `"e<n>"` and CRC32C `n`.
    fn store(parts: &[(u32, u64)]) -> BTreeMap<PartNumber, ListedPart> {
        parts
            .iter()
            .map(|&(p, size)| {
                let listed = ListedPart {
                    number: n(p),
                    etag: etag(p),
                    size,
                    crc32c: Some(p),
                };
                (n(p), listed)
            })
            .collect()
    }

    /// The request that names `numbers` with their right ETags and CRC32Cs.
    fn request(numbers: &[u32]) -> Vec<RequestedPart> {
        numbers
            .iter()
            .map(|&p| RequestedPart {
                number: n(p),
                etag: etag(p),
                crc32c: Some(p),
            })
            .collect()
    }

    fn check(
        held: &BTreeMap<PartNumber, ListedPart>,
        requested: &[RequestedPart],
    ) -> Result<(), CompleteRefusal> {
        check_complete(requested, |p| held.get(&p).cloned())
    }

    const MIN: u64 = MIN_PART_SIZE;

    #[test]
    fn gaps_are_allowed_and_the_last_part_may_be_short() {
        let held = store(&[(1, MIN), (7, MIN + 1), (20, 1)]);
        assert_eq!(check(&held, &request(&[1, 7, 20])), Ok(()));
        // A subset is fine too: parts left out are simply not joined.
        assert_eq!(check(&held, &request(&[7, 20])), Ok(()));
        // One short part alone is the last part.
        assert_eq!(check(&held, &request(&[20])), Ok(()));
        // Exactly the minimum is enough.
        assert_eq!(check(&held, &request(&[1, 7])), Ok(()));
    }

    #[test]
    fn refusals_carry_s3s_codes() {
        let held = store(&[(1, MIN), (2, MIN - 1), (3, 10)]);
        let refuse = |numbers: &[u32]| check(&held, &request(numbers)).unwrap_err();

        assert_eq!(check(&held, &[]), Err(CompleteRefusal::NoParts));
        assert_eq!(CompleteRefusal::NoParts.code(), "MalformedXML");

        let r = refuse(&[2, 1]);
        assert_eq!(
            r,
            CompleteRefusal::OutOfOrder {
                previous: n(2),
                part: n(1)
            }
        );
        assert_eq!(r.code(), "InvalidPartOrder");
        assert_eq!(refuse(&[1, 1]).code(), "InvalidPartOrder");

        let r = refuse(&[1, 4]);
        assert_eq!(r, CompleteRefusal::NotUploaded { part: n(4) });
        assert_eq!(r.code(), "InvalidPart");

        let r = refuse(&[1, 2, 3]);
        assert_eq!(
            r,
            CompleteRefusal::TooSmall {
                part: n(2),
                size: MIN - 1
            }
        );
        assert_eq!(r.code(), "EntityTooSmall");
        assert_eq!(r.part(), Some(n(2)));
    }

    #[test]
    fn etags_must_match_quotes_aside() {
        let held = store(&[(1, MIN), (2, 5)]);
        let mut wrong = request(&[1, 2]);
        wrong[1].etag = ETag::new("\"nope\"").unwrap();
        let r = check(&held, &wrong).unwrap_err();
        assert_eq!(
            r,
            CompleteRefusal::WrongETag {
                part: n(2),
                given: ETag::new("\"nope\"").unwrap(),
                uploaded: etag(2),
            }
        );
        assert_eq!(r.code(), "InvalidPart");

        let mut bare = request(&[1, 2]);
        bare[0].etag = ETag::new("e1").unwrap();
        assert_eq!(check(&held, &bare), Ok(()));
    }

    #[test]
    fn crc32c_is_checked_where_both_sides_know_it() {
        let mut held = store(&[(1, MIN), (2, 5)]);
        let mut wrong = request(&[1, 2]);
        wrong[0].crc32c = Some(99);
        let r = check(&held, &wrong).unwrap_err();
        assert_eq!(
            r,
            CompleteRefusal::WrongCrc32c {
                part: n(1),
                given: 99,
                uploaded: 1
            }
        );
        assert_eq!(r.code(), "InvalidPart");
        // A request without checksums, or a store that does not know them, skips the check.
        let mut none = request(&[1, 2]);
        none[0].crc32c = None;
        assert_eq!(check(&held, &none), Ok(()));
        held.get_mut(&n(1)).unwrap().crc32c = None;
        assert_eq!(check(&held, &wrong), Ok(()));
    }

    #[test]
    fn the_first_broken_rule_is_reported() {
        // Order is checked over the whole list before any part is looked up.
        let held = store(&[(1, 1), (3, 1)]);
        assert_eq!(
            check(&held, &request(&[1, 9, 3])).unwrap_err().code(),
            "InvalidPartOrder"
        );
        // Per part, in list order: part 1 is too small before part 2 is found missing.
        assert_eq!(
            check(&held, &request(&[1, 2])),
            Err(CompleteRefusal::TooSmall {
                part: n(1),
                size: 1
            })
        );
        // Within one part, a missing part is reported before anything else.
        assert_eq!(
            check(&held, &request(&[2, 3])),
            Err(CompleteRefusal::NotUploaded { part: n(2) })
        );
        // A wrong ETag is reported before the part's size.
        let mut wrong = request(&[1, 3]);
        wrong[0].etag = ETag::new("x").unwrap();
        assert_eq!(check(&held, &wrong).unwrap_err().code(), "InvalidPart");
    }

    #[test]
    fn messages_say_what_is_wrong_and_end_with_the_code() {
        let r = CompleteRefusal::TooSmall {
            part: n(3),
            size: 100,
        };
        assert_eq!(
            r.to_string(),
            "part 3 is 100 bytes; every part but the last must be at least 5242880 bytes \
             (EntityTooSmall)"
        );
        let r = CompleteRefusal::OutOfOrder {
            previous: n(4),
            part: n(4),
        };
        assert_eq!(
            r.to_string(),
            "part 4 follows part 4: part numbers must strictly ascend (InvalidPartOrder)"
        );
    }

    #[test]
    fn uploaded_parts_make_a_request() {
        let p = UploadedPart {
            number: n(4),
            etag: etag(4),
            size: 10,
            crc32c: 77,
        };
        assert_eq!(
            RequestedPart::from(&p),
            RequestedPart {
                number: n(4),
                etag: etag(4),
                crc32c: Some(77)
            }
        );
    }

    /// One way to break an otherwise valid request, at position `at` (modulo its length).
    #[derive(Debug, Clone, Copy)]
    enum Break {
        None,
        SwapWithNext,
        Repeat,
        UnknownNumber,
        WrongETag,
        WrongCrc32c,
        Shrink,
    }

    fn breaks() -> impl Strategy<Value = Break> {
        prop_oneof![
            Just(Break::None),
            Just(Break::SwapWithNext),
            Just(Break::Repeat),
            Just(Break::UnknownNumber),
            Just(Break::WrongETag),
            Just(Break::WrongCrc32c),
            Just(Break::Shrink),
        ]
    }

    /// Uploaded parts: distinct numbers with sizes around the minimum.
    fn uploads() -> impl Strategy<Value = BTreeMap<u32, u64>> {
        let size = prop_oneof![Just(MIN), MIN..MIN + 1000, 0..MIN];
        proptest::collection::btree_map(1..=200u32, size, 1..40)
    }

    proptest! {
        /// A request made of held parts in ascending order is accepted exactly when every part
        /// but the last is big enough; each way of breaking it gets S3's code for it.
        #[test]
        fn valid_requests_pass_and_each_break_gets_its_code(
            held in uploads(),
            keep in proptest::collection::vec(any::<bool>(), 40),
            broken in breaks(),
            at in any::<usize>(),
        ) {
            let mut held_parts =
                store(&held.iter().map(|(&p, &s)| (p, s)).collect::<Vec<_>>());
            // A nonempty ascending selection of the held parts.
            let mut numbers: Vec<u32> = held
                .keys()
                .zip(keep.iter().chain(std::iter::repeat(&true)))
                .filter(|(_, k)| **k)
                .map(|(p, _)| *p)
                .collect();
            if numbers.is_empty() {
                numbers.push(*held.keys().next().unwrap());
            }
            // Parts too small for a non-last position are made big enough, so the untouched
            // request is valid.
            for p in &numbers[..numbers.len() - 1] {
                let part = held_parts.get_mut(&n(*p)).unwrap();
                part.size = part.size.max(MIN);
            }
            let mut req = request(&numbers);
            prop_assert_eq!(check(&held_parts, &req), Ok(()));

            let i = at % req.len();
            let expect = match broken {
                Break::None => None,
                Break::SwapWithNext if i + 1 < req.len() => {
                    req.swap(i, i + 1);
                    Some("InvalidPartOrder")
                }
                Break::SwapWithNext => None,
                Break::Repeat => {
                    let again = req[i].clone();
                    req.insert(i + 1, again);
                    Some("InvalidPartOrder")
                }
                Break::UnknownNumber => {
                    // 201..=300 are never uploaded; appending keeps the order.
                    req.push(RequestedPart {
                        number: n(201 + (at % 100) as u32),
                        etag: etag(1),
                        crc32c: None,
                    });
                    // The old last part is no longer last: it may now be too small.
                    let old_last = held_parts[&req[req.len() - 2].number].size;
                    Some(if old_last < MIN { "EntityTooSmall" } else { "InvalidPart" })
                }
                Break::WrongETag => {
                    req[i].etag = ETag::new(format!("\"other{}\"", req[i].number)).unwrap();
                    Some("InvalidPart")
                }
                Break::WrongCrc32c => {
                    req[i].crc32c = req[i].crc32c.map(|c| c ^ 0x8000_0000);
                    Some("InvalidPart")
                }
                Break::Shrink if i + 1 < req.len() => {
                    held_parts.get_mut(&req[i].number).unwrap().size = MIN - 1;
                    Some("EntityTooSmall")
                }
                // The last part may be of any size.
                Break::Shrink => {
                    held_parts.get_mut(&req[i].number).unwrap().size = 0;
                    None
                }
            };
            let got = check(&held_parts, &req);
            prop_assert_eq!(got.as_ref().err().map(CompleteRefusal::code), expect);
            if let Err(r) = got {
                // The refusal names a part of the request, except for an empty one.
                prop_assert!(req.iter().any(|p| Some(p.number) == r.part()));
            }
        }
    }
}
