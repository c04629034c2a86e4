//! Buckets, open uploads and completed objects, behind one mutex held only for bookkeeping
//! (bodies are read and written outside it).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;

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
    pub etag: String,
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

/// A part named in CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedPart {
    pub number: u32,
    pub etag: String,
    pub crc32c: Option<String>,
}

/// Why a Complete is refused: S3's error code, message and extra XML fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub extra: Vec<(&'static str, String)>,
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('"')
}

/// Checks a Complete request against the upload as S3 does and returns the parts to join, in
/// order.
pub fn check_complete(
    upload: &Upload,
    requested: &[RequestedPart],
    min_part_size: u64,
) -> Result<Vec<PartInfo>, Refusal> {
    if requested.is_empty() {
        return Err(Refusal {
            status: 400,
            code: "MalformedXML",
            message: "The XML you provided was not well-formed or did not validate against our \
                      published schema"
                .into(),
            extra: Vec::new(),
        });
    }
    if requested.windows(2).any(|w| w[1].number <= w[0].number) {
        return Err(Refusal {
            status: 400,
            code: "InvalidPartOrder",
            message: "The list of parts was not in ascending order. The parts list must be \
                      specified in order by part number."
                .into(),
            extra: Vec::new(),
        });
    }
    let mut out = Vec::with_capacity(requested.len());
    for (i, want) in requested.iter().enumerate() {
        let invalid = || Refusal {
            status: 400,
            code: "InvalidPart",
            message: "One or more of the specified parts could not be found.  The part may not \
                      have been uploaded, or the specified entity tag may not match the part's \
                      entity tag."
                .into(),
            extra: vec![
                ("UploadId", String::new()),
                ("PartNumber", want.number.to_string()),
                ("ETag", want.etag.clone()),
            ],
        };
        let Some(part) = upload.parts.get(&want.number) else {
            return Err(invalid());
        };
        if unquote(&part.etag) != unquote(&want.etag) {
            return Err(invalid());
        }
        if let Some(crc) = &want.crc32c
            && crc.trim() != crate::xml::crc32c_base64(part.crc32c)
        {
            return Err(invalid());
        }
        let is_last = i + 1 == requested.len();
        if !is_last && part.size < min_part_size {
            return Err(Refusal {
                status: 400,
                code: "EntityTooSmall",
                message: "Your proposed upload is smaller than the minimum allowed object size."
                    .into(),
                extra: vec![
                    ("ProposedSize", part.size.to_string()),
                    ("MinSizeAllowed", min_part_size.to_string()),
                    ("PartNumber", want.number.to_string()),
                    ("ETag", unquote(&part.etag).to_owned()),
                ],
            });
        }
        out.push(part.clone());
    }
    Ok(out)
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
        let crc = parts
            .iter()
            .fold(0u32, |c, p| crc32c::crc32c_append(c, p.etag.as_bytes()));
        format!("\"{crc:08x}-{n}\"")
    }
}

/// S3's composite CRC32C of an object made of `parts`: the CRC32C of the parts' CRC32Cs as
/// big-endian bytes, base64, then `-N`.
pub fn composite_crc32c(parts: &[PartInfo]) -> String {
    let crc = parts.iter().fold(0u32, |c, p| {
        crc32c::crc32c_append(c, &p.crc32c.to_be_bytes())
    });
    format!("{}-{}", crate::xml::crc32c_base64(crc), parts.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(size: u64, etag: &str) -> PartInfo {
        PartInfo {
            etag: format!("\"{etag}\""),
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
                number: n,
                etag: format!("\"e{n}\""),
                crc32c: None,
            })
            .collect()
    }

    #[test]
    fn gaps_allowed_last_part_may_be_short() {
        let u = upload(&[(1, 5 << 20), (7, 6 << 20), (20, 10)]);
        let parts = check_complete(&u, &req(&[1, 7, 20]), 5 << 20).unwrap();
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn refusals_have_s3s_codes() {
        let u = upload(&[(1, 5 << 20), (2, (5 << 20) - 1), (3, 10)]);
        let code = |r: &[u32]| check_complete(&u, &req(r), 5 << 20).unwrap_err().code;
        assert_eq!(code(&[1, 2, 3]), "EntityTooSmall");
        assert_eq!(code(&[2, 1]), "InvalidPartOrder");
        assert_eq!(code(&[1, 1]), "InvalidPartOrder");
        assert_eq!(code(&[1, 4]), "InvalidPart");
        assert_eq!(code(&[]), "MalformedXML");
        let mut wrong = req(&[1]);
        wrong[0].etag = "\"nope\"".into();
        assert_eq!(
            check_complete(&u, &wrong, 5 << 20).unwrap_err().code,
            "InvalidPart"
        );
        // Quotes around the ETag do not matter.
        let mut bare = req(&[1, 3]);
        bare[0].etag = "e1".into();
        assert!(check_complete(&u, &bare, 5 << 20).is_ok());
    }

    #[test]
    fn composite_checksum_is_s3s() {
        // Two parts with CRC32Cs 1 and 2: CRC32C of 00000001 00000002.
        let mut a = part(1, "a");
        a.crc32c = 1;
        let mut b = part(1, "b");
        b.crc32c = 2;
        let expect = crc32c::crc32c(&[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(
            composite_crc32c(&[a, b]),
            format!("{}-2", crate::xml::crc32c_base64(expect))
        );
    }
}
