//! The destination the user named: S3 (`s3://bucket/key`) or a local file path.

use gzship_core::Result;
use gzship_core::source::ByteStream;
use gzship_core::store::local::LocalStore;
use gzship_core::store::s3::{S3Config, S3Store, load_sdk_config};
use gzship_core::store::{
    ListedObject, ListedPart, MultipartStore, ObjectMeta, ObjectStore, OpenUpload, PartBody,
    UploadedPart,
};
use gzship_core::{ObjectUrl, PartNumber, UploadId};

/// Either store, chosen at run time from the destination.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// Amazon S3 or an S3-compatible server.
    S3(S3Store),
    /// A local directory that keeps S3's rules.
    Local(LocalStore),
}

/// Parses DESTINATION: `s3://bucket/key`, or else a local file path.
pub async fn open(destination: &str, s3: &S3Config) -> Result<(AnyStore, ObjectUrl)> {
    if destination.starts_with("s3://") {
        let url: ObjectUrl = destination.parse()?;
        let sdk = load_sdk_config().await;
        Ok((AnyStore::S3(S3Store::new(&sdk, s3)), url))
    } else {
        let (store, url) = LocalStore::for_file(std::path::Path::new(destination))?;
        Ok((AnyStore::Local(store), url))
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::S3($s) => $e,
            AnyStore::Local($s) => $e,
        }
    };
}

impl MultipartStore for AnyStore {
    async fn create_upload(&self, dest: &ObjectUrl, meta: &ObjectMeta) -> Result<UploadId> {
        dispatch!(self, s => s.create_upload(dest, meta).await)
    }

    async fn upload_part(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        number: PartNumber,
        body: PartBody,
    ) -> Result<UploadedPart> {
        dispatch!(self, s => s.upload_part(dest, upload_id, number, body).await)
    }

    async fn complete_upload(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        parts: &[UploadedPart],
    ) -> Result<()> {
        dispatch!(self, s => s.complete_upload(dest, upload_id, parts).await)
    }

    async fn abort_upload(&self, dest: &ObjectUrl, upload_id: &UploadId) -> Result<()> {
        dispatch!(self, s => s.abort_upload(dest, upload_id).await)
    }

    async fn list_parts(&self, dest: &ObjectUrl, upload_id: &UploadId) -> Result<Vec<ListedPart>> {
        dispatch!(self, s => s.list_parts(dest, upload_id).await)
    }
}

impl ObjectStore for AnyStore {
    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<OpenUpload>> {
        dispatch!(self, s => s.list_uploads(bucket, prefix).await)
    }

    async fn get_object(&self, dest: &ObjectUrl) -> Result<ByteStream> {
        dispatch!(self, s => s.get_object(dest).await)
    }

    async fn put_tags(
        &self,
        dest: &ObjectUrl,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        dispatch!(self, s => s.put_tags(dest, tags).await)
    }

    async fn get_tags(
        &self,
        dest: &ObjectUrl,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        dispatch!(self, s => s.get_tags(dest).await)
    }

    async fn head_object(&self, dest: &ObjectUrl) -> Result<Option<(u64, ObjectMeta)>> {
        dispatch!(self, s => s.head_object(dest).await)
    }

    async fn put_object(&self, dest: &ObjectUrl, body: bytes::Bytes) -> Result<()> {
        dispatch!(self, s => s.put_object(dest, body).await)
    }

    async fn put_object_if_absent(&self, dest: &ObjectUrl, body: bytes::Bytes) -> Result<bool> {
        dispatch!(self, s => s.put_object_if_absent(dest, body).await)
    }

    async fn delete_object(&self, dest: &ObjectUrl) -> Result<()> {
        dispatch!(self, s => s.delete_object(dest).await)
    }

    async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>> {
        dispatch!(self, s => s.list_objects(bucket, prefix).await)
    }
}
