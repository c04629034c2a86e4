//! S3 adapter of [`MultipartStore`] and [`ObjectStore`] on aws-sdk-s3.
//!
//! The client is built once from an [`SdkConfig`] (the standard AWS credential and region chain,
//! which the binaries load with [`load_sdk_config`]) and an [`S3Config`] of tuning. Every part is
//! uploaded with its CRC32C, computed here and checked by S3; the upload is created with
//! `ChecksumAlgorithm::Crc32C` so S3 keeps the checksums and `ListParts` reports them.
//!
//! Errors become [`Error::S3`] with the operation in words ("upload part 7 of"), the bucket and
//! key, S3's error code, whether a retry can help (from the SDK's error kind, the HTTP status and
//! the error code, never the message), and the SDK error as the source.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
    Tag, Tagging,
};

use super::body::Content;
use super::checksum::{composite_crc32c, decode_crc32c, encode_crc32c};
use super::{
    ListedObject, ListedPart, MultipartStore, ObjectMeta, ObjectStore, OpenUpload, PartBody,
    UploadedPart,
};
use crate::error::{BoxError, Error, Result};
use crate::source::ByteStream;
use crate::types::{ETag, PartNumber, UploadId};
use crate::url::ObjectUrl;

/// Tuning of the S3 client. Credentials and the default region come from the [`SdkConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint of an S3-compatible store (MinIO, moto, Ceph, ...).
    ///
    /// Default `None`: AWS's own endpoint for the region, or the one the [`SdkConfig`] names.
    /// Wrong: every request fails to connect (dispatch failure) or is signed for the wrong host.
    pub endpoint_url: Option<String>,

    /// Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    ///
    /// Default `false` (virtual-hosted style, which AWS wants). Most S3-compatible stores and
    /// local test servers need `true`; bucket names with dots also need it over TLS.
    /// Wrong: DNS errors for `bucket.host`, or `NoSuchBucket` for a bucket that exists.
    pub force_path_style: bool,

    /// Region to sign for, overriding the [`SdkConfig`]'s.
    ///
    /// Default `None`: the region of the standard chain. Wrong: `PermanentRedirect` or
    /// `AuthorizationHeaderMalformed` naming the bucket's real region.
    pub region: Option<String>,

    /// Attempts per request, the first one included, with the SDK's exponential backoff
    /// (throttling, 5xx, timeouts and connection failures are retried).
    ///
    /// Default 5. Higher rides out longer throttling (`SlowDown`) at the cost of a slower failure;
    /// 1 disables retries. Too low: tasks fail on transient `SlowDown`/500s and the master has to
    /// retry a whole task instead of one request.
    pub max_attempts: u32,

    /// Time to establish a TCP (and TLS) connection.
    ///
    /// Default 5 s. Too short: spurious connect failures on a loaded network; too long: a
    /// black-holed endpoint stalls each attempt this long before the retry.
    pub connect_timeout: Duration,

    /// Time for one attempt of one request, sending the body included.
    ///
    /// Default 300 s, enough for a 5 GiB part at about 20 MB/s. It must exceed the largest
    /// part size divided by the slowest upload rate of one connection. Too short: large parts
    /// fail with timeouts on every attempt; too long: a hung request holds its task this long
    /// before the retry (a stalled body is cut earlier by the SDK's stalled-stream protection).
    pub attempt_timeout: Duration,

    /// Time for a whole request, all attempts and backoff included.
    ///
    /// Default 900 s. Bounds how long any store call can take, so nothing waits forever. Too
    /// short: retries are cut off; too long: a worker burns its time limit on one request.
    pub operation_timeout: Duration,

    /// The KMS key (key id, key ARN or alias ARN) to encrypt what gzship writes with, SSE-KMS:
    /// CreateMultipartUpload and the job records' PutObject send
    /// `x-amz-server-side-encryption: aws:kms` and this key.
    ///
    /// Default `None`: the bucket's default encryption (SSE-S3 unless the bucket names a key).
    /// Set it where a bucket policy demands SSE-KMS with a given key. The caller needs
    /// `kms:GenerateDataKey` and `kms:Decrypt` on the key (UploadPart encrypts with a data key,
    /// CompleteMultipartUpload and reading records decrypt). ETags of such objects and parts
    /// are not MD5s of their bytes; gzship checks parts by CRC32C and never compares an ETag
    /// with an MD5. Wrong: AccessDenied or `KMS.NotFoundException` at the job's first write.
    pub sse_kms_key: Option<String>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint_url: None,
            force_path_style: false,
            region: None,
            max_attempts: 5,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(300),
            operation_timeout: Duration::from_secs(900),
            sse_kms_key: None,
        }
    }
}

/// Loads the standard AWS configuration chain (environment, profile files, container and
/// instance metadata, web identity). For binaries: the library itself never reads the
/// environment.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// [`MultipartStore`] and [`ObjectStore`] on Amazon S3 or an S3-compatible store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    /// [`S3Config::sse_kms_key`].
    sse_kms_key: Option<String>,
}

impl S3Store {
    /// Builds the client from the standard chain's `sdk` and the tuning in `config`.
    pub fn new(sdk: &SdkConfig, config: &S3Config) -> Self {
        let mut builder = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(config.force_path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .operation_attempt_timeout(config.attempt_timeout)
                    .operation_timeout(config.operation_timeout)
                    .build(),
            )
            // Since aws-sdk-s3 1.69 the default is `WhenSupported`: a CRC32 of every body,
            // streamed bodies sent aws-chunked with a trailer. We compute the CRC32C of each
            // part ourselves (the checksum S3 keeps with the upload) and send it as a header, so
            // the SDK would only hash the same bytes a second time, and some S3-compatible stores
            // reject aws-chunked trailers. `WhenRequired` leaves checksums to us except where an
            // operation demands one (DeleteObjects), where the SDK still adds it.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            // `WhenSupported` would ask for and validate a checksum on every GetObject; an object
            // made by multipart upload only has a composite checksum, which the SDK cannot
            // validate anyway. `gzship verify` checks the decompressed bytes' SHA-256 instead.
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        if let Some(region) = &config.region {
            builder = builder.region(Region::new(region.clone()));
        }
        S3Store {
            client: Client::from_conf(builder.build()),
            sse_kms_key: config.sse_kms_key.clone(),
        }
    }

    /// Wraps a client built elsewhere (its retry, timeout and checksum settings are the
    /// caller's).
    pub fn from_client(client: Client) -> Self {
        S3Store {
            client,
            sse_kms_key: None,
        }
    }

    /// The underlying client (tests only: feature `testing`).
    #[cfg(feature = "testing")]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Uploads a part with the given CRC32C instead of the body's own, for tests of how a
    /// server treats a bad checksum (feature `testing`).
    #[cfg(feature = "testing")]
    pub async fn upload_part_with_crc32c(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        number: PartNumber,
        body: bytes::Bytes,
        crc32c: u32,
    ) -> Result<UploadedPart> {
        let body = PartBody::memory(body, crc32c);
        self.send_part(dest, upload_id, number, &body).await
    }

    /// Whether the object at `dest` is the one `parts` complete to: same size and same
    /// composite CRC32C (the CRC32C of the parts' CRC32Cs, which S3 reports as `<crc>-<count>`).
    /// Any failure to tell (no object, no checksum, an error) counts as "no". Public for the
    /// conformance tests only (feature `testing`); a retried Complete uses it.
    #[cfg(feature = "testing")]
    pub async fn holds_parts(&self, dest: &ObjectUrl, parts: &[UploadedPart]) -> bool {
        self.is_completed_from(dest, parts).await
    }

    /// `aws:kms` when [`S3Config::sse_kms_key`] names a key.
    fn sse(&self) -> Option<ServerSideEncryption> {
        self.sse_kms_key
            .as_ref()
            .map(|_| ServerSideEncryption::AwsKms)
    }

    /// A PutObject of a small JSON object (a job record, a claim) at `dest`, encrypted as the
    /// uploads are.
    fn put_request(
        &self,
        dest: &ObjectUrl,
        body: bytes::Bytes,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .content_type("application/json")
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.sse_kms_key.clone())
            .body(SdkByteStream::from(body))
    }

    /// See [`Self::holds_parts`].
    async fn is_completed_from(&self, dest: &ObjectUrl, parts: &[UploadedPart]) -> bool {
        let Ok(head) = self
            .client
            .head_object()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        else {
            return false;
        };
        let size: u64 = parts.iter().map(|p| p.size).sum();
        let (Some(len), Some(checksum)) = (head.content_length(), head.checksum_crc32_c()) else {
            return false;
        };
        let (crc, count) = match checksum.split_once('-') {
            Some((crc, count)) => (crc, Some(count)),
            None => (checksum, None),
        };
        u64::try_from(len) == Ok(size)
            && decode_crc32c(crc) == Ok(composite_crc32c(parts.iter().map(|p| p.crc32c)))
            && count.is_none_or(|c| c == parts.len().to_string())
    }

    async fn send_part(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        number: PartNumber,
        body: &PartBody,
    ) -> Result<UploadedPart> {
        let (size, crc32c) = (body.len(), body.crc32c());
        // A spooled part streams from its file; the SDK reopens it if it retries.
        let stream = match body.content() {
            Content::Memory(bytes) => SdkByteStream::from(bytes.clone()),
            Content::File(path) => SdkByteStream::read_from()
                .path(path)
                .buffer_size(1 << 20)
                .build()
                .await
                .map_err(|e| Error::io("open spooled part", path, std::io::Error::other(e)))?,
        };
        let out = self
            .client
            .upload_part()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .upload_id(upload_id.as_str())
            .part_number(part_i32(number))
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(encode_crc32c(crc32c))
            .body(stream)
            // The part's CRC32C, which S3 checks, already covers the body: SigV4's SHA-256 of
            // it (UNSIGNED-PAYLOAD instead) was 0.6% of a job's CPU (issue 15).
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| s3_error(format!("upload part {number} of"), dest, e))?;
        let etag = out
            .e_tag()
            .ok_or_else(|| missing(format!("upload part {number} of"), dest, "ETag"))
            .and_then(|t| {
                ETag::new(t).map_err(|e| bad_reply(format!("upload part {number} of"), dest, e))
            })?;
        Ok(UploadedPart {
            number,
            etag,
            size,
            crc32c,
        })
    }
}

impl MultipartStore for S3Store {
    async fn create_upload(&self, dest: &ObjectUrl, meta: &ObjectMeta) -> Result<UploadId> {
        const OP: &str = "create multipart upload of";
        let metadata: HashMap<String, String> = meta
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .set_metadata(Some(metadata));
        if !meta.content_type.is_empty() {
            req = req.content_type(&meta.content_type);
        }
        if let Some(key) = &self.sse_kms_key {
            req = req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(key);
        }
        let out = req.send().await.map_err(|e| s3_error(OP, dest, e))?;
        let id = out
            .upload_id()
            .ok_or_else(|| missing(OP, dest, "UploadId"))?;
        UploadId::new(id).map_err(|e| bad_reply(OP, dest, e))
    }

    async fn upload_part(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        number: PartNumber,
        body: PartBody,
    ) -> Result<UploadedPart> {
        self.send_part(dest, upload_id, number, &body).await
    }

    async fn complete_upload(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        parts: &[UploadedPart],
    ) -> Result<()> {
        const OP: &str = "complete multipart upload of";
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(part_i32(p.number))
                    .e_tag(p.etag.as_str())
                    .checksum_crc32_c(encode_crc32c(p.crc32c))
                    .build()
            })
            .collect();
        let res = self
            .client
            .complete_multipart_upload()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .upload_id(upload_id.as_str())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            // The SDK retries a Complete that timed out or failed with a 5xx; when the first
            // attempt did complete, the retry finds no upload. The object at the key, if it
            // has exactly these parts' size and composite CRC32C, is ours: report success.
            Err(e) if e.code() == Some("NoSuchUpload") => {
                if self.is_completed_from(dest, parts).await {
                    Ok(())
                } else {
                    Err(s3_error(OP, dest, e))
                }
            }
            Err(e) => Err(s3_error(OP, dest, e)),
        }
    }

    async fn abort_upload(&self, dest: &ObjectUrl, upload_id: &UploadId) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .upload_id(upload_id.as_str())
            .send()
            .await
            .map_err(|e| s3_error("abort multipart upload of", dest, e))?;
        Ok(())
    }

    async fn list_parts(&self, dest: &ObjectUrl, upload_id: &UploadId) -> Result<Vec<ListedPart>> {
        const OP: &str = "list parts of";
        let mut parts = Vec::new();
        let mut marker = None::<String>;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&dest.bucket)
                .key(&dest.key)
                .upload_id(upload_id.as_str())
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| s3_error(OP, dest, e))?;
            for p in out.parts() {
                let number = p
                    .part_number()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| missing(OP, dest, "PartNumber"))
                    .and_then(|n| PartNumber::new(n).map_err(|e| bad_reply(OP, dest, e)))?;
                let etag = p
                    .e_tag()
                    .ok_or_else(|| missing(OP, dest, "ETag"))
                    .and_then(|t| ETag::new(t).map_err(|e| bad_reply(OP, dest, e)))?;
                let size = p
                    .size()
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or_else(|| missing(OP, dest, "Size"))?;
                // Uploads created by gzship have one on S3; moto and some S3-compatible stores
                // never report part checksums.
                let crc32c = p
                    .checksum_crc32_c()
                    .map(|c| decode_crc32c(c).map_err(|e| bad_reply(OP, dest, e)))
                    .transpose()?;
                parts.push(ListedPart {
                    number,
                    etag,
                    size,
                    crc32c,
                });
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            marker = out.next_part_number_marker().map(str::to_owned);
            if marker.is_none() {
                return Err(missing(
                    OP,
                    dest,
                    "NextPartNumberMarker of a truncated listing",
                ));
            }
        }
        Ok(parts)
    }
}

impl ObjectStore for S3Store {
    async fn head_object(&self, dest: &ObjectUrl) -> Result<Option<(u64, ObjectMeta)>> {
        const OP: &str = "head object";
        let out = match self
            .client
            .head_object()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if matches!(e.err(), HeadObjectError::NotFound(_)) => {
                return Ok(None);
            }
            Err(e) => return Err(s3_error(OP, dest, e)),
        };
        let size = out
            .content_length()
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| missing(OP, dest, "Content-Length"))?;
        let meta = ObjectMeta {
            content_type: out.content_type().unwrap_or_default().to_owned(),
            metadata: out
                .metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        Ok(Some((size, meta)))
    }

    async fn get_object(&self, dest: &ObjectUrl) -> Result<ByteStream> {
        let out = self
            .client
            .get_object()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .send()
            .await
            .map_err(|e| s3_error("get object", dest, e))?;
        let dest = dest.clone();
        let chunks = futures::stream::try_unfold(out.body, move |mut body| {
            let dest = dest.clone();
            async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => Ok(Some((chunk, body))),
                    Ok(None) => Ok(None),
                    // The connection broke or stalled mid-body: reading again can succeed.
                    Err(e) => Err(Error::S3 {
                        op: "read body of object".into(),
                        bucket: dest.bucket.clone(),
                        key: dest.key.clone(),
                        code: None,
                        retryable: true,
                        source: Box::new(e),
                    }),
                }
            }
        });
        Ok(Box::pin(chunks))
    }

    async fn put_tags(&self, dest: &ObjectUrl, tags: &BTreeMap<String, String>) -> Result<()> {
        const OP: &str = "tag object";
        let tag_set = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad_reply(OP, dest, e))?;
        let tagging = Tagging::builder()
            .set_tag_set(Some(tag_set))
            .build()
            .map_err(|e| bad_reply(OP, dest, e))?;
        self.client
            .put_object_tagging()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .tagging(tagging)
            .send()
            .await
            .map_err(|e| s3_error(OP, dest, e))?;
        Ok(())
    }

    async fn get_tags(&self, dest: &ObjectUrl) -> Result<BTreeMap<String, String>> {
        const OP: &str = "read tags of";
        let out = self
            .client
            .get_object_tagging()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .send()
            .await
            .map_err(|e| s3_error(OP, dest, e))?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect())
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<OpenUpload>> {
        const OP: &str = "list multipart uploads in";
        let where_ = ObjectUrl {
            bucket: bucket.to_owned(),
            key: prefix.to_owned(),
        };
        let mut uploads = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| s3_error(OP, &where_, e))?;
            for u in out.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    return Err(missing(OP, &where_, "Key or UploadId of an upload"));
                };
                uploads.push(OpenUpload {
                    key: key.to_owned(),
                    upload_id: UploadId::new(id).map_err(|e| bad_reply(OP, &where_, e))?,
                });
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                // A truncated listing without markers would repeat the first page forever.
                return Err(missing(OP, &where_, "NextKeyMarker of a truncated listing"));
            }
        }
        Ok(uploads)
    }

    async fn put_object(&self, dest: &ObjectUrl, body: bytes::Bytes) -> Result<()> {
        self.put_request(dest, body)
            .send()
            .await
            .map_err(|e| s3_error("put object", dest, e))?;
        Ok(())
    }

    async fn put_object_if_absent(&self, dest: &ObjectUrl, body: bytes::Bytes) -> Result<bool> {
        let sent = self.put_request(dest, body).if_none_match("*").send().await;
        match sent {
            Ok(_) => Ok(true),
            // 412: an object is there; 409: another conditional write to the key is under way.
            Err(e)
                if matches!(
                    e.code(),
                    Some("PreconditionFailed" | "ConditionalRequestConflict")
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(s3_error("put object (if absent)", dest, e)),
        }
    }

    async fn delete_object(&self, dest: &ObjectUrl) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&dest.bucket)
            .key(&dest.key)
            .send()
            .await
            .map_err(|e| s3_error("delete object", dest, e))?;
        Ok(())
    }

    async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>> {
        const OP: &str = "list objects in";
        let where_ = ObjectUrl {
            bucket: bucket.to_owned(),
            key: prefix.to_owned(),
        };
        let mut objects = Vec::new();
        let mut token = None::<String>;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error(OP, &where_, e))?;
            for o in out.contents() {
                let key = o
                    .key()
                    .ok_or_else(|| missing(OP, &where_, "Key of an object"))?;
                objects.push(ListedObject {
                    key: key.to_owned(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                });
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            token = out.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                // A truncated listing without a token would repeat the first page forever.
                return Err(missing(
                    OP,
                    &where_,
                    "NextContinuationToken of a truncated listing",
                ));
            }
        }
        Ok(objects)
    }
}

/// S3 error codes that say "slow down" or "try again": the throttling and transient codes of
/// aws-runtime's `AwsErrorCodeClassifier`, plus the 5xx codes S3 documents.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
];

fn is_retryable<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    crate::aws_error::is_retryable(err, RETRYABLE_CODES)
}

fn s3_error<E>(op: impl Into<String>, dest: &ObjectUrl, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    Error::S3 {
        op: op.into(),
        bucket: dest.bucket.clone(),
        key: dest.key.clone(),
        code: err.code().map(str::to_owned),
        retryable: is_retryable(&err),
        source: Box::new(err),
    }
}

/// A reply without a field S3 always sends: the server is not speaking S3 as we know it.
fn missing(op: impl Into<String>, dest: &ObjectUrl, field: &str) -> Error {
    bad_reply(op, dest, format!("the reply has no {field}"))
}

fn bad_reply(op: impl Into<String>, dest: &ObjectUrl, reason: impl Into<BoxError>) -> Error {
    Error::S3 {
        op: op.into(),
        bucket: dest.bucket.clone(),
        key: dest.key.clone(),
        code: None,
        retryable: false,
        source: reason.into(),
    }
}

fn part_i32(number: PartNumber) -> i32 {
    // PartNumber is 1..=10,000.
    i32::try_from(number.get()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::upload_part::UploadPartError;
    use aws_sdk_s3::primitives::SdkBody;

    use super::*;

    fn service(status: u16, code: &str) -> SdkError<UploadPartError> {
        let err = UploadPartError::generic(ErrorMetadata::builder().code(code).build());
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn retryable_from_kind_status_and_code() {
        assert!(is_retryable(&service(503, "SlowDown")));
        assert!(is_retryable(&service(500, "InternalError")));
        assert!(is_retryable(&service(400, "RequestTimeout")));
        assert!(is_retryable(&service(429, "TooManyRequests")));
        assert!(!is_retryable(&service(400, "EntityTooSmall")));
        assert!(!is_retryable(&service(404, "NoSuchUpload")));
        assert!(!is_retryable(&service(403, "AccessDenied")));
        assert!(!is_retryable(&service(400, "BadDigest")));
        let timeout = SdkError::<UploadPartError>::timeout_error("attempt timed out");
        assert!(is_retryable(&timeout));
        let refused = SdkError::<UploadPartError>::dispatch_failure(ConnectorError::io(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        ));
        assert!(is_retryable(&refused));
        let user = SdkError::<UploadPartError>::dispatch_failure(ConnectorError::user(
            "bad request".into(),
        ));
        assert!(!is_retryable(&user));
        let built = SdkError::<UploadPartError>::construction_failure("bad input");
        assert!(!is_retryable(&built));
    }

    #[test]
    fn errors_name_the_operation_and_keep_the_code() {
        let dest: ObjectUrl = "s3://bucket/some/key.gz".parse().unwrap();
        let err = s3_error("upload part 7 of", &dest, service(400, "EntityTooSmall"));
        let text = crate::error::chain(&err);
        assert!(
            text.starts_with("upload part 7 of s3://bucket/some/key.gz"),
            "{text}"
        );
        assert!(text.contains("EntityTooSmall"), "{text}");
        assert_eq!(err.s3_code(), Some("EntityTooSmall"));
        assert!(!err.is_retryable());
    }
}
