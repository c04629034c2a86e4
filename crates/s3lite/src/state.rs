//! Buckets, open uploads and completed objects, behind one mutex held only for bookkeeping
//! (bodies are read and written outside it).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use gzship_core::store::ListedPart;
use gzship_core::store::rules::{self, CompleteRefusal, RequestedPart};
use gzship_core::types::{ETag, MIN_PART_SIZE, PartNumber};

/// Where a part's or object's bytes are.
#[derive(Debug, Clone)]
pub enum Body {
    /// Discarded after hashing.
    Dropped,
    /// In memory (an object keeps its parts' buffers).
    Memory(Vec<Bytes>),
    /// In a file.
    File(PathBuf),
}

/// One uploaded part.
#[derive(Debug, Clone)]
pub struct PartInfo {
    /// Quoted ETag, as sent in the UploadPart reply.
    pub etag: ETag,
    pub size: u64,
    pub crc32c: u32,
    /// Binary MD5, when ETags are MD5s (for the object's MD5-of-MD5s ETag).
    pub md5: Option<[u8; 16]>,
    pub body: Body,
    pub last_modified: SystemTime,
}

/// An open multipart upload.
#[derive(Debug, Clone)]
pub struct Upload {
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// `x-amz-checksum-algorithm` of CreateMultipartUpload, upper case (`CRC32C`).
    pub checksum_algorithm: Option<String>,
    pub initiated: SystemTime,
    pub parts: BTreeMap<u32, PartInfo>,
}

/// A completed object.
#[derive(Debug, Clone)]
pub struct Object {
    pub size: u64,
    /// Quoted ETag.
    pub etag: String,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// S3's composite checksum (`base64-N`), when the upload was created with CRC32C.
    pub checksum_crc32c: Option<String>,
    pub body: Body,
    pub last_modified: SystemTime,
}

/// Everything the server knows.
#[derive(Debug, Default)]
pub struct State {
    /// Bucket name -> objects by key.
    pub buckets: BTreeMap<String, BTreeMap<String, Object>>,
    /// Upload id -> upload.
    pub uploads: HashMap<String, Upload>,
    next_upload: u64,
}

impl State {
    /// A fresh upload id that sorts after the previous ones (ListMultipartUploads orders by
    /// key, then id).
    pub fn new_upload_id(&mut self) -> String {
        self.next_upload += 1;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{:012}-{nanos:08x}", self.next_upload)
    }
}

impl PartInfo {
    /// The part as S3's rules look at it.
    fn listed(&self, number: PartNumber) -> ListedPart {
        ListedPart {
            number,
            etag: self.etag.clone(),
            size: self.size,
            crc32c: Some(self.crc32c),
        }
    }
}

/// Why a Complete is refused: S3's error code, message and extra XML fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub extra: Vec<(&'static str, String)>,
}

impl Refusal {
    /// S3's reply to a Complete that its rules refuse: the code, S3's message for it and the
    /// fields S3 adds.
    fn of(r: &CompleteRefusal, upload: &Upload, requested: &[RequestedPart]) -> Refusal {
        let (message, extra) = match r {
            CompleteRefusal::NoParts => (
                "The XML you provided was not well-formed or did not validate against our \
                 published schema"
                    .to_owned(),
                Vec::new(),
            ),
            CompleteRefusal::OutOfOrder { .. } => (
                "The list of parts was not in ascending order. The parts list must be specified \
                 in order by part number."
                    .to_owned(),
                Vec::new(),
            ),
            CompleteRefusal::NotUploaded { part }
            | CompleteRefusal::WrongETag { part, .. }
            | CompleteRefusal::WrongCrc32c { part, .. } => {
                let given = requested.iter().find(|p| p.number == *part);
                (
                    "One or more of the specified parts could not be found.  The part may not \
                     have been uploaded, or the specified entity tag may not match the part's \
                     entity tag."
                        .to_owned(),
                    vec![
                        ("UploadId", String::new()),
                        ("PartNumber", part.to_string()),
                        (
                            "ETag",
                            given.map(|p| p.etag.to_string()).unwrap_or_default(),
                        ),
                    ],
                )
            }
            CompleteRefusal::TooSmall { part, size } => {
                let etag = upload.parts.get(&part.get()).map(|p| p.etag.as_str());
                (
                    "Your proposed upload is smaller than the minimum allowed object size."
                        .to_owned(),
                    vec![
                        ("ProposedSize", size.to_string()),
                        ("MinSizeAllowed", MIN_PART_SIZE.to_string()),
                        ("PartNumber", part.to_string()),
                        (
                            "ETag",
                            etag.unwrap_or_default().trim_matches('"').to_owned(),
                        ),
                    ],
                )
            }
            // A rule gzship-core adds later: its own words, S3's code.
            _ => (r.to_string(), Vec::new()),
        };
        Refusal {
            status: 400,
            code: r.code(),
            message,
            extra,
        }
    }
}

/// Checks a Complete request against the upload with S3's rules (gzship-core's
/// [`check_complete`](rules::check_complete)) and returns the parts to join, in order.
pub fn check_complete(
    upload: &Upload,
    requested: &[RequestedPart],
) -> Result<Vec<PartInfo>, Refusal> {
    rules::check_complete(requested, |n| {
        upload.parts.get(&n.get()).map(|p| p.listed(n))
    })
    .map_err(|r| Refusal::of(&r, upload, requested))?;
    // Every part named is there: the rules just looked each one up.
    Ok(requested
        .iter()
        .filter_map(|want| upload.parts.get(&want.number.get()).cloned())
        .collect())
}

/// The object's ETag: S3's MD5 of the parts' binary MD5s when ETags are MD5s, otherwise a
/// CRC32C of the parts' ETags; `-N` appended either way.
pub fn object_etag(parts: &[PartInfo]) -> String {
    use md5::Digest as _;
    let n = parts.len();
    if parts.iter().all(|p| p.md5.is_some()) {
        let mut h = md5::Md5::new();
        for p in parts {
            if let Some(m) = &p.md5 {
                h.update(m);
            }
        }
        format!("\"{}-{n}\"", hex::encode(h.finalize()))
    } else {
        let crc = parts.iter().fold(0u32, |c, p| {
            crc32c::crc32c_append(c, p.etag.as_str().as_bytes())
        });
        format!("\"{crc:08x}-{n}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(size: u64, etag: &str) -> PartInfo {
        PartInfo {
            etag: ETag::new(format!("\"{etag}\"")).unwrap(),
            size,
            crc32c: 7,
            md5: None,
            body: Body::Dropped,
            last_modified: SystemTime::UNIX_EPOCH,
        }
    }

    fn upload(parts: &[(u32, u64)]) -> Upload {
        Upload {
            bucket: "b".into(),
            key: "k".into(),
            content_type: None,
            metadata: Vec::new(),
            checksum_algorithm: None,
            initiated: SystemTime::UNIX_EPOCH,
            parts: parts
                .iter()
                .map(|&(n, size)| (n, part(size, &format!("e{n}"))))
                .collect(),
        }
    }

    fn req(numbers: &[u32]) -> Vec<RequestedPart> {
        numbers
            .iter()
            .map(|&n| RequestedPart {
                number: PartNumber::new(n).unwrap(),
                etag: ETag::new(format!("\"e{n}\"")).unwrap(),
                crc32c: Some(7),
            })
            .collect()
    }

    const MIN: u64 = MIN_PART_SIZE;

    #[test]
    fn joins_the_named_parts_in_order() {
        let u = upload(&[(1, MIN), (7, MIN + 1), (20, 10)]);
        let sizes = |r: &[u32]| -> Vec<u64> {
            check_complete(&u, &req(r))
                .unwrap()
                .iter()
                .map(|p| p.size)
                .collect()
        };
        assert_eq!(sizes(&[1, 7, 20]), [MIN, MIN + 1, 10]);
        assert_eq!(sizes(&[7, 20]), [MIN + 1, 10]);
    }

    /// The rules are gzship-core's (tested there); here, each refusal is S3's reply.
    #[test]
    fn refusals_are_s3s_replies() {
        let u = upload(&[(1, MIN), (2, MIN - 1), (3, 10)]);
        let refuse = |r: &[RequestedPart]| check_complete(&u, r).unwrap_err();

        let r = refuse(&req(&[1, 2, 3]));
        assert_eq!((r.status, r.code), (400, "EntityTooSmall"));
        assert_eq!(
            r.extra,
            [
                ("ProposedSize", (MIN - 1).to_string()),
                ("MinSizeAllowed", MIN.to_string()),
                ("PartNumber", "2".to_owned()),
                ("ETag", "e2".to_owned()),
            ]
        );

        let mut wrong = req(&[1, 3]);
        wrong[1].etag = ETag::new("\"nope\"").unwrap();
        let r = refuse(&wrong);
        assert_eq!((r.status, r.code), (400, "InvalidPart"));
        assert!(r.message.starts_with("One or more of the specified parts"));
        assert_eq!(
            r.extra,
            [
                ("UploadId", String::new()),
                ("PartNumber", "3".to_owned()),
                ("ETag", "\"nope\"".to_owned()),
            ]
        );
        assert_eq!(refuse(&req(&[1, 4])).code, "InvalidPart");

        let r = refuse(&req(&[2, 1]));
        assert_eq!(
            (r.status, r.code, r.extra.len()),
            (400, "InvalidPartOrder", 0)
        );
        let r = refuse(&[]);
        assert_eq!((r.status, r.code, r.extra.len()), (400, "MalformedXML", 0));
    }
}
