//! Where the object goes: the [`MultipartStore`] trait, its S3 adapter and a local directory
//! store that keeps S3's rules for people without S3.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::source::ByteStream;
use crate::types::{ETag, ObjectUrl, PartNumber, UploadId};

pub mod body;
pub mod local;
pub mod rules;
pub mod s3;

pub use body::PartBody;

/// What is stored with the object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `Content-Type`, `application/gzip` for gzship's objects.
    pub content_type: String,
    /// User metadata (`x-amz-meta-*`), keys lowercase.
    pub metadata: BTreeMap<String, String>,
}

/// One uploaded part, as S3 acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadedPart {
    /// Part number.
    pub number: PartNumber,
    /// ETag returned by UploadPart.
    pub etag: ETag,
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the part's bytes, sent with the upload and checked by the server.
    pub crc32c: u32,
}

/// A part as ListParts reports it. Unlike [`UploadedPart`], its checksum may be unknown: some
/// S3-compatible stores (moto among them) do not report part checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    /// Part number.
    pub number: PartNumber,
    /// ETag.
    pub etag: ETag,
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the part, when the store reports it.
    pub crc32c: Option<u32>,
}

impl From<UploadedPart> for ListedPart {
    fn from(p: UploadedPart) -> Self {
        ListedPart {
            number: p.number,
            etag: p.etag,
            size: p.size,
            crc32c: Some(p.crc32c),
        }
    }
}

/// A multipart upload that is still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    /// Object key.
    pub key: String,
    /// Upload id.
    pub upload_id: UploadId,
}

/// An object store with S3's multipart semantics.
///
/// Contract (S3's own, which every implementation enforces as S3 does):
/// - `upload_part` may be called concurrently and in any order; uploading the same part number
///   again replaces it (so a retried task is idempotent).
/// - `complete_upload` takes the parts in ascending part-number order; gaps are allowed. Every
///   part but the last must be at least [`MIN_PART_SIZE`](crate::types::MIN_PART_SIZE), or the
///   store fails with `EntityTooSmall`. Only then does the object appear at the key.
/// - `abort_upload` discards every part; nothing appears at the key. The caller that created
///   the upload is the one that completes or aborts it.
pub trait MultipartStore: Send + Sync {
    /// Starts a multipart upload to `dest`.
    fn create_upload(
        &self,
        dest: &ObjectUrl,
        meta: &ObjectMeta,
    ) -> impl Future<Output = Result<UploadId>> + Send;

    /// Uploads one part with its CRC32C checksum (`body` carries both length and checksum, so
    /// a spooled part streams from its file).
    fn upload_part(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        number: PartNumber,
        body: PartBody,
    ) -> impl Future<Output = Result<UploadedPart>> + Send;

    /// Completes the upload from `parts` (ascending part numbers).
    fn complete_upload(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        parts: &[UploadedPart],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Aborts the upload, discarding its parts.
    fn abort_upload(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Lists the multipart uploads still open in `bucket` under `prefix`.
    fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<OpenUpload>>> + Send;

    /// Lists the parts uploaded so far to an open upload, in part-number order.
    fn list_parts(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
    ) -> impl Future<Output = Result<Vec<ListedPart>>> + Send;

    /// Streams a completed object back (for `gzship verify`).
    fn get_object(&self, dest: &ObjectUrl) -> impl Future<Output = Result<ByteStream>> + Send;

    /// Replaces the tags of a completed object (S3 object tagging: at most 10, keys up to 128
    /// and values up to 256 characters). gzship records there what is known only after the
    /// upload, the source's CRC-32. A new object has no tags.
    fn put_tags(
        &self,
        dest: &ObjectUrl,
        tags: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The tags of a completed object.
    fn get_tags(
        &self,
        dest: &ObjectUrl,
    ) -> impl Future<Output = Result<BTreeMap<String, String>>> + Send;

    /// The object's size and metadata, or `None` if nothing is at the key.
    fn head_object(
        &self,
        dest: &ObjectUrl,
    ) -> impl Future<Output = Result<Option<(u64, ObjectMeta)>>> + Send;
}
