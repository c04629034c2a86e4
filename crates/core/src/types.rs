//! Domain values: byte ranges, part numbers, upload ids, ETags, and S3's limits on parts. The
//! two kinds of location (`sftp://` sources and `s3://` destinations) are in [`crate::url`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// 1 KiB.
pub const KIB: u64 = 1024;
/// 1 MiB.
pub const MIB: u64 = 1024 * KIB;
/// 1 GiB.
pub const GIB: u64 = 1024 * MIB;
/// 1 TiB.
pub const TIB: u64 = 1024 * GIB;

/// S3's smallest legal size for every part but an upload's last (`EntityTooSmall` otherwise).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest legal part.
pub const MAX_PART_SIZE: u64 = 5 * GIB;
/// S3's highest part number.
pub const MAX_PARTS: u32 = 10_000;

/// A half-open byte range `[start, end)` of the source file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawRange", into = "RawRange")]
pub struct ByteRange {
    start: u64,
    end: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: u64,
    end: u64,
}

impl TryFrom<RawRange> for ByteRange {
    type Error = Error;
    fn try_from(raw: RawRange) -> Result<Self> {
        ByteRange::new(raw.start, raw.end)
    }
}

impl From<ByteRange> for RawRange {
    fn from(r: ByteRange) -> Self {
        RawRange {
            start: r.start,
            end: r.end,
        }
    }
}

impl ByteRange {
    /// `[start, end)`; fails when `end < start`.
    pub fn new(start: u64, end: u64) -> Result<Self> {
        if end < start {
            return Err(Error::invalid(
                "byte range",
                format!("end {end} is before start {start}"),
            ));
        }
        Ok(ByteRange { start, end })
    }

    /// `[start, start + len)`; fails on overflow.
    pub fn with_len(start: u64, len: u64) -> Result<Self> {
        let end = start
            .checked_add(len)
            .ok_or_else(|| Error::invalid("byte range", format!("{start} + {len} overflows")))?;
        Ok(ByteRange { start, end })
    }

    /// First byte of the range.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the last byte of the range.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The rest of the range from `offset` on (clamped to the range).
    pub fn from_offset(&self, offset: u64) -> ByteRange {
        let start = offset.clamp(self.start, self.end);
        ByteRange {
            start,
            end: self.end,
        }
    }
}

impl fmt::Debug for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// An S3 part number, 1..=10,000.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PartNumber(u32);

impl PartNumber {
    /// The first part number.
    pub const FIRST: PartNumber = PartNumber(1);

    /// Validates `n` against S3's 1..=10,000.
    pub fn new(n: u32) -> Result<Self> {
        if (1..=MAX_PARTS).contains(&n) {
            Ok(PartNumber(n))
        } else {
            Err(Error::invalid(
                "part number",
                format!("{n} is outside S3's 1..={MAX_PARTS}"),
            ))
        }
    }

    /// The number as S3 wants it.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The next part number, if there is one.
    pub fn next(self) -> Option<PartNumber> {
        PartNumber::new(self.0 + 1).ok()
    }
}

impl TryFrom<u32> for PartNumber {
    type Error = Error;
    fn try_from(n: u32) -> Result<Self> {
        PartNumber::new(n)
    }
}

impl From<PartNumber> for u32 {
    fn from(p: PartNumber) -> u32 {
        p.0
    }
}

impl fmt::Debug for PartNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for PartNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The part numbers a task may use: `[first, first + count)`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawWindow", into = "RawWindow")]
pub struct PartWindow {
    first: PartNumber,
    count: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    first: u32,
    count: u32,
}

impl TryFrom<RawWindow> for PartWindow {
    type Error = Error;
    fn try_from(raw: RawWindow) -> Result<Self> {
        PartWindow::new(PartNumber::new(raw.first)?, raw.count)
    }
}

impl From<PartWindow> for RawWindow {
    fn from(w: PartWindow) -> Self {
        RawWindow {
            first: w.first.get(),
            count: w.count,
        }
    }
}

impl PartWindow {
    /// A window of `count >= 1` parts starting at `first`, ending at or before part 10,000.
    pub fn new(first: PartNumber, count: u32) -> Result<Self> {
        if count == 0 || first.get() as u64 + count as u64 - 1 > MAX_PARTS as u64 {
            return Err(Error::invalid(
                "part window",
                format!("{count} parts from part {first} do not fit in 1..={MAX_PARTS}"),
            ));
        }
        Ok(PartWindow { first, count })
    }

    /// First part number of the window.
    pub fn first(&self) -> PartNumber {
        self.first
    }

    /// Number of part numbers in the window.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Last part number of the window (inclusive).
    pub fn last(&self) -> PartNumber {
        PartNumber(self.first.0 + self.count - 1)
    }

    /// The `i`-th part number of the window (0-based), if inside it.
    pub fn nth(&self, i: u32) -> Option<PartNumber> {
        (i < self.count).then(|| PartNumber(self.first.0 + i))
    }

    /// Whether `p` lies inside the window.
    pub fn contains(&self, p: PartNumber) -> bool {
        p >= self.first && p <= self.last()
    }
}

impl fmt::Debug for PartWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parts {}..={}", self.first, self.last())
    }
}

impl fmt::Display for PartWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.first, self.last())
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Wraps a non-empty value.
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                if s.is_empty() {
                    return Err(Error::invalid($what, "it is empty"));
                }
                Ok($name(s))
            }

            /// The value as sent on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// The id S3 gives a multipart upload.
    UploadId,
    "upload id"
);
string_newtype!(
    /// The ETag S3 returns for an uploaded part (quotes included, as S3 sends it).
    ETag,
    "etag"
);

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary: for
/// values with a byte limit (S3 metadata, SQS attributes).
pub fn prefix_within(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_within_keeps_whole_characters() {
        assert_eq!(prefix_within("abc", 10), "abc");
        assert_eq!(prefix_within("abc", 2), "ab");
        // 'ü' is two bytes: a cut inside it drops it whole.
        assert_eq!(prefix_within("aü", 2), "a");
        assert_eq!(prefix_within("aü", 3), "aü");
        assert_eq!(prefix_within("üü", 0), "");
    }

    #[test]
    fn byte_range_is_half_open() {
        let r = ByteRange::new(3, 10).unwrap();
        assert_eq!(r.len(), 7);
        assert!(!r.is_empty());
        assert!(ByteRange::new(5, 5).unwrap().is_empty());
        assert!(ByteRange::new(6, 5).is_err());
        assert!(ByteRange::with_len(u64::MAX, 1).is_err());
        assert_eq!(r.from_offset(7), ByteRange::new(7, 10).unwrap());
        assert_eq!(r.from_offset(0), r);
        assert_eq!(r.from_offset(99), ByteRange::new(10, 10).unwrap());
    }

    #[test]
    fn byte_range_json_rejects_reversed_and_unknown_fields() {
        let r: ByteRange = serde_json::from_str(r#"{"start":1,"end":2}"#).unwrap();
        assert_eq!(r.len(), 1);
        assert!(serde_json::from_str::<ByteRange>(r#"{"start":2,"end":1}"#).is_err());
        assert!(serde_json::from_str::<ByteRange>(r#"{"start":1,"end":2,"x":0}"#).is_err());
    }

    #[test]
    fn part_numbers_are_bounded() {
        assert!(PartNumber::new(0).is_err());
        assert!(PartNumber::new(10_001).is_err());
        assert_eq!(PartNumber::new(10_000).unwrap().next(), None);
        assert_eq!(PartNumber::FIRST.next().unwrap().get(), 2);
        assert!(serde_json::from_str::<PartNumber>("0").is_err());
    }

    #[test]
    fn part_windows_fit_inside_s3_numbers() {
        let w = PartWindow::new(PartNumber::new(9_999).unwrap(), 2).unwrap();
        assert_eq!(w.last().get(), 10_000);
        assert!(PartWindow::new(PartNumber::new(9_999).unwrap(), 3).is_err());
        assert!(PartWindow::new(PartNumber::FIRST, 0).is_err());
        assert_eq!(w.nth(1).unwrap().get(), 10_000);
        assert_eq!(w.nth(2), None);
        assert!(w.contains(PartNumber::new(10_000).unwrap()));
        assert!(!w.contains(PartNumber::new(9_998).unwrap()));
    }
}
