//! Where the object goes: the [`MultipartStore`] contract (create, upload parts, complete or
//! abort), the [`ObjectStore`] reads and listings around it, their S3 adapter ([`s3`]), a local
//! directory store that keeps S3's rules for people without S3 ([`local`]), S3's
//! completion rules as one pure function ([`rules`]), and S3's forms of CRC32C checksums
//! ([`checksum`]).

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::source::ByteStream;
use crate::types::{ETag, PartNumber, UploadId};
use crate::url::ObjectUrl;

pub mod body;
pub mod checksum;
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

/// A completed object as a listing reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// The multipart upload contract gzship builds an object with: create, upload parts, list
/// them, complete or abort. It is S3's own contract, and every implementation keeps it as S3
/// does (the local store and gzship-s3lite through [`rules::check_complete`]).
///
/// The methods are stateless: each call names the destination and the upload, so whoever holds
/// the [`UploadId`] (the master, a worker on another machine, a resumed job) can make it.
///
/// # Ordering
/// - `create_upload` comes first. Its [`UploadId`] names the upload in every other call, always
///   with the same destination: an id used with another key is `NoSuchUpload`.
/// - `upload_part` may be called concurrently and in any order, between `create_upload` and
///   `complete_upload`/`abort_upload`. `list_parts` reports what has been acknowledged so far.
/// - `complete_upload` joins the parts it is given, which must strictly ascend by part number
///   (gaps are allowed; parts not named are discarded). Only then does the object appear at the
///   key, whole: no reader ever sees a partial object.
/// - After a successful `complete_upload` or `abort_upload` the upload is gone: `upload_part`,
///   `list_parts` and `abort_upload` fail with `NoSuchUpload`.
///
/// # Idempotency
/// - Uploading a part number again replaces that part, and only the ETag of the latest upload
///   completes it. A retried task therefore uploads its parts again without harm.
/// - `complete_upload` again with the same parts, after one succeeded (a retried request whose
///   first attempt went through), succeeds when the object at the key is exactly those parts
///   (same size and CRC32Cs), and fails with `NoSuchUpload` otherwise.
/// - `abort_upload` of an upload that is already gone may fail (`NoSuchUpload` on S3); whether
///   an upload is still open is told by [`ObjectStore::list_uploads`], not by that error.
///
/// # Limits
/// - Part numbers are 1..=[`MAX_PARTS`](crate::types::MAX_PARTS) (a [`PartNumber`]).
/// - A part is at most [`MAX_PART_SIZE`](crate::types::MAX_PART_SIZE) (`EntityTooLarge` at
///   upload) and, unless it is the last one completed, at least
///   [`MIN_PART_SIZE`](crate::types::MIN_PART_SIZE): `complete_upload` fails with
///   `EntityTooSmall`, since only then is it known which part is last.
/// - `complete_upload` fails with `InvalidPartOrder` for parts that do not strictly ascend and
///   with `InvalidPart` for a part not uploaded or named with another ETag or CRC32C.
///
/// # Who aborts
/// The caller that created the upload completes or aborts it; a store never aborts on its own,
/// and a failed `complete_upload` leaves the upload open, as S3 does. Until then its parts are
/// kept (and, on S3, billed): a bucket lifecycle rule that aborts incomplete multipart uploads is
/// the backstop for a caller that died.
///
/// # Errors
/// Failures are [`Error::S3`](crate::Error::S3) naming the operation, the bucket and the key,
/// with S3's error code where the store answered with one
/// ([`Error::s3_code`](crate::Error::s3_code)) and whether retrying can help.
pub trait MultipartStore: Send + Sync {
    /// Starts a multipart upload to `dest`, whose object will have `meta`.
    fn create_upload(
        &self,
        dest: &ObjectUrl,
        meta: &ObjectMeta,
    ) -> impl Future<Output = Result<UploadId>> + Send;

    /// Uploads one part with its CRC32C checksum (`body` carries both length and checksum, so
    /// a spooled part streams from its file). The store checks the checksum (`BadDigest`).
    fn upload_part(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        number: PartNumber,
        body: PartBody,
    ) -> impl Future<Output = Result<UploadedPart>> + Send;

    /// Lists the parts uploaded so far to an open upload, in part-number order.
    fn list_parts(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
    ) -> impl Future<Output = Result<Vec<ListedPart>>> + Send;

    /// Completes the upload from `parts` (strictly ascending part numbers): the object appears
    /// at the key.
    fn complete_upload(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        parts: &[UploadedPart],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Aborts the upload, discarding its parts; nothing appears at the key.
    fn abort_upload(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Everything around the multipart contract of [`MultipartStore`]: reading a completed object
/// back (its bytes, size, metadata and tags), tagging it, listing the uploads still open in a
/// bucket, and the small objects of job records (put whole, listed, deleted). The master tags
/// the object it completed and lists uploads to tell whether an abort took; jobs keep their
/// records beside the destination ([`crate::job`]); `gzship verify` reads objects back.
///
/// Reads see completed objects only, never an upload in progress. A key with no object is
/// `None` from `head_object` and `NoSuchKey` from the others. Failures are
/// [`Error::S3`](crate::Error::S3), as for [`MultipartStore`].
pub trait ObjectStore: Send + Sync {
    /// The object's size and metadata, or `None` if nothing is at the key.
    fn head_object(
        &self,
        dest: &ObjectUrl,
    ) -> impl Future<Output = Result<Option<(u64, ObjectMeta)>>> + Send;

    /// Streams a completed object back, in chunks of the store's choosing.
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

    /// Lists the multipart uploads still open in `bucket` with a key under `prefix`, by key,
    /// then upload id.
    fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<OpenUpload>>> + Send;

    /// Writes a small object whole in one request (a job record: a few KiB to a few MiB),
    /// replacing any object at the key. It appears whole or not at all.
    fn put_object(&self, dest: &ObjectUrl, body: Bytes) -> impl Future<Output = Result<()>> + Send;

    /// Writes a small object only if no object is at the key (S3's conditional write,
    /// `If-None-Match: *`): `true` when it was written, `false` when an object was there (or
    /// another conditional write to the key was under way). Jobs claim their destination so.
    fn put_object_if_absent(
        &self,
        dest: &ObjectUrl,
        body: Bytes,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Removes the object at the key. Removing a key with no object succeeds, as on S3.
    fn delete_object(&self, dest: &ObjectUrl) -> impl Future<Output = Result<()>> + Send;

    /// Lists the completed objects in `bucket` whose key starts with `prefix`, in key order
    /// (every page of S3's listing).
    fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<ListedObject>>> + Send;
}
