//! A local directory that behaves like an S3 bucket with multipart uploads, for people without
//! S3 (`gzship run sftp://host/file /some/dir/file.gz`) and for fast tests.
//!
//! It keeps S3's rules exactly as S3 does, so a job that completes here completes on S3: parts
//! may arrive in any order and concurrently, re-uploading a part replaces it, part numbers may
//! have gaps, and `complete_upload` refuses what S3 refuses, with S3's error codes, by
//! [`rules::check_complete`](super::rules::check_complete): parts out of order, unknown parts or
//! ETags (`InvalidPartOrder`, `InvalidPart`) and a non-last part under 5 MiB
//! (`EntityTooSmall`). Nothing partial ever appears at the key: the object is assembled in a
//! temporary file and renamed onto the key.
//!
//! # Layout
//! A store has one of two shapes:
//! - [`LocalStore::new`]`(root)`: many buckets, one directory each. Bucket `b` is `<root>/b`
//!   (it must exist, as a bucket must on S3) and key `k` is `<root>/b/k`.
//! - [`LocalStore::directory`]`(dir)`: one bucket named [`LOCAL_BUCKET`] that is `dir` itself;
//!   [`LocalStore::for_file`] maps a file path onto it.
//!
//! Inside a bucket directory `<bucket>`:
//! ```text
//! <bucket>/<key>                                   completed objects
//! <bucket>/.gzship-uploads/<upload-id>/upload.json  an open upload: its key and metadata
//! <bucket>/.gzship-uploads/<upload-id>/00007        part 7 (written to a temp file, renamed)
//! <bucket>/.gzship-meta/<key>.json                  content type and metadata of an object
//! ```
//! Keys are split on `/` into directories. A key with an empty, `.` or `..` component, or whose
//! first component is one of the hidden directories above, is refused.
//!
//! ETags are the first 16 bytes of the part's SHA-256 (S3 uses MD5; both are opaque to
//! callers). `list_parts` and `complete_upload` read the parts back to hash them: they cost one
//! read of the data, never memory beyond a buffer.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::rules::{CompleteRefusal, RequestedPart, check_complete};
use super::{
    ListedObject, ListedPart, MultipartStore, ObjectMeta, ObjectStore, OpenUpload, PartBody,
    UploadedPart,
};
use crate::error::{BoxError, Error, Result};
use crate::source::ByteStream;
use crate::types::{ETag, PartNumber, UploadId};
use crate::url::ObjectUrl;

/// The bucket name of a [`LocalStore::directory`] store.
pub const LOCAL_BUCKET: &str = "local";

const UPLOADS_DIR: &str = ".gzship-uploads";
const META_DIR: &str = ".gzship-meta";
const MANIFEST: &str = "upload.json";
/// Size of the reads that stream objects and hash parts.
const CHUNK: usize = 256 * 1024;

/// Why the local store refused a request the way S3 would: the source of its [`Error::S3`],
/// whose `code` is the same S3 error code. Completion refusals are a
/// [`CompleteRefusal`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStoreError {
    /// S3's error code for the same failure (`EntityTooSmall`, `NoSuchUpload`, ...).
    pub code: &'static str,
    /// What is wrong, with the part, sizes or path involved.
    pub message: String,
}

impl fmt::Display for LocalStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for LocalStoreError {}

#[derive(Debug, Clone)]
enum Shape {
    /// Bucket `b` is `<root>/b`.
    Buckets(PathBuf),
    /// Bucket [`LOCAL_BUCKET`] is this directory.
    Directory(PathBuf),
}

/// [`MultipartStore`] and [`ObjectStore`] on a local directory; see the [module docs](self) for
/// the layout.
#[derive(Debug, Clone)]
pub struct LocalStore {
    shape: Shape,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    key: String,
    content_type: String,
    metadata: BTreeMap<String, String>,
}

impl LocalStore {
    /// A store whose buckets are the subdirectories of `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore {
            shape: Shape::Buckets(root.into()),
        }
    }

    /// A store with one bucket, [`LOCAL_BUCKET`], that is `dir` itself.
    pub fn directory(dir: impl Into<PathBuf>) -> Self {
        LocalStore {
            shape: Shape::Directory(dir.into()),
        }
    }

    /// The store and object URL that put an object at the local file `path`: a
    /// [`directory`](Self::directory) store on the file's directory, and key = the file name.
    /// A relative path is taken from the current directory.
    pub fn for_file(path: &Path) -> Result<(LocalStore, ObjectUrl)> {
        let bad = |reason: &str| Error::invalid("local destination", format!("{path:?} {reason}"));
        let abs = std::path::absolute(path)
            .map_err(|e| Error::io("resolve local destination", path, e))?;
        let name = abs
            .file_name()
            .ok_or_else(|| bad("does not name a file"))?
            .to_str()
            .ok_or_else(|| bad("has a file name that is not UTF-8"))?;
        let dir = abs.parent().ok_or_else(|| bad("has no parent directory"))?;
        let dest = ObjectUrl {
            bucket: LOCAL_BUCKET.to_owned(),
            key: name.to_owned(),
        };
        Ok((LocalStore::directory(dir), dest))
    }

    /// Where an object lives on disk (whether or not it exists).
    pub fn object_path(&self, dest: &ObjectUrl) -> Result<PathBuf> {
        let bucket = self.bucket_dir(&dest.bucket)?;
        Ok(bucket.join(checked_key(&dest.key)?))
    }

    fn bucket_dir(&self, bucket: &str) -> Result<PathBuf> {
        match &self.shape {
            Shape::Buckets(root) => {
                let mut comps = Path::new(bucket).components();
                let ok = matches!(comps.next(), Some(Component::Normal(_)))
                    && comps.next().is_none()
                    && !bucket.starts_with('.')
                    && !bucket.contains('\0');
                if !ok {
                    return Err(Error::invalid(
                        "bucket",
                        format!(
                            "{bucket:?} is not a directory name (one path component, no leading '.')"
                        ),
                    ));
                }
                Ok(root.join(bucket))
            }
            Shape::Directory(dir) if bucket == LOCAL_BUCKET => Ok(dir.clone()),
            Shape::Directory(dir) => Err(Error::invalid(
                "bucket",
                format!(
                    "the local store on {} has one bucket, {LOCAL_BUCKET:?}, not {bucket:?}",
                    dir.display()
                ),
            )),
        }
    }

    /// Where the metadata of an existing object lives (`NoSuchKey` when there is no object).
    async fn meta_path(&self, op: &str, dest: &ObjectUrl) -> Result<PathBuf> {
        if self.head_object(dest).await?.is_none() {
            return Err(s3_like(
                op,
                dest,
                "NoSuchKey",
                "there is no object at the key".to_owned(),
            ));
        }
        let bucket = self.bucket_dir(&dest.bucket)?;
        let key = checked_key(&dest.key)?;
        Ok(bucket
            .join(META_DIR)
            .join(format!("{}.json", key.display())))
    }

    /// The bucket directory, which must exist (`NoSuchBucket` otherwise).
    async fn existing_bucket(&self, op: &str, dest: &ObjectUrl) -> Result<PathBuf> {
        let dir = self.bucket_dir(&dest.bucket)?;
        match fs::metadata(&dir).await {
            Ok(m) if m.is_dir() => Ok(dir),
            Ok(_) => Err(s3_like(
                op,
                dest,
                "NoSuchBucket",
                format!("{} is not a directory", dir.display()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(s3_like(
                op,
                dest,
                "NoSuchBucket",
                format!("the directory {} does not exist", dir.display()),
            )),
            Err(e) => Err(Error::io("stat bucket directory", &dir, e)),
        }
    }

    /// The staging directory of an open upload of `dest`, with its manifest (`NoSuchUpload` when
    /// the id is unknown, malformed or belongs to another key, as on S3).
    async fn open_upload(
        &self,
        op: &str,
        dest: &ObjectUrl,
        upload_id: &UploadId,
    ) -> Result<(PathBuf, Manifest)> {
        checked_key(&dest.key)?;
        let bucket = self.existing_bucket(op, dest).await?;
        let no_such = || {
            s3_like(
                op,
                dest,
                "NoSuchUpload",
                format!("upload {upload_id} does not exist (completed, aborted or never created)"),
            )
        };
        if !is_upload_id(upload_id.as_str()) {
            return Err(no_such());
        }
        let dir = bucket.join(UPLOADS_DIR).join(upload_id.as_str());
        let manifest = match read_manifest(&dir).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(no_such()),
            Err(e) => return Err(e),
        };
        if manifest.key != dest.key {
            return Err(no_such());
        }
        Ok((dir, manifest))
    }
}

impl LocalStore {
    /// Whether the object at `dest` is exactly `parts`, by size and each part's CRC32C.
    async fn holds_parts(&self, dest: &ObjectUrl, parts: &[UploadedPart]) -> Result<bool> {
        let path = self.object_path(dest)?;
        let mut file = match fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("open object", &path, e)),
        };
        let size: u64 = parts.iter().map(|p| p.size).sum();
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::io("stat object", &path, e))?
            .len();
        if len != size {
            return Ok(false);
        }
        let mut buf = BytesMut::with_capacity(CHUNK);
        for p in parts {
            let (mut left, mut crc) = (p.size, 0u32);
            while left > 0 {
                buf.clear();
                let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                let n = (&mut file)
                    .take(want as u64)
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| Error::io("read object", &path, e))?;
                if n == 0 {
                    return Ok(false);
                }
                crc = crc32c::crc32c_append(crc, &buf);
                left -= n as u64;
            }
            if crc != p.crc32c {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl MultipartStore for LocalStore {
    async fn create_upload(&self, dest: &ObjectUrl, meta: &ObjectMeta) -> Result<UploadId> {
        const OP: &str = "create multipart upload of";
        checked_key(&dest.key)?;
        let bucket = self.existing_bucket(OP, dest).await?;
        let uploads = bucket.join(UPLOADS_DIR);
        let id = hex::encode(rand::random::<[u8; 16]>());
        // The upload appears whole or not at all: its directory is filled under a temporary
        // name and renamed into place.
        let tmp = uploads.join(format!(".tmp-{id}"));
        fs::create_dir_all(&tmp)
            .await
            .map_err(|e| Error::io("create upload staging directory", &tmp, e))?;
        let manifest = Manifest {
            key: dest.key.clone(),
            content_type: meta.content_type.clone(),
            metadata: meta.metadata.clone(),
        };
        write_json(&tmp.join(MANIFEST), &manifest).await?;
        let dir = uploads.join(&id);
        fs::rename(&tmp, &dir)
            .await
            .map_err(|e| Error::io("rename upload staging directory", &dir, e))?;
        UploadId::new(id)
    }

    async fn upload_part(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        number: PartNumber,
        body: PartBody,
    ) -> Result<UploadedPart> {
        let op = format!("upload part {number} of");
        let (dir, _) = self.open_upload(&op, dest, upload_id).await?;
        let tmp = dir.join(format!(".tmp-{}-{}", part_name(number), random_suffix()));
        let written = async {
            let mut file = fs::File::create(&tmp)
                .await
                .map_err(|e| Error::io("create part file", &tmp, e))?;
            let mut sums = PartSums::default();
            let mut chunks = body.stream().await?;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                sums.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io("write part file", &tmp, e))?;
            }
            // The checksum the client sent must match the bytes, as S3 checks it.
            if sums.crc32c != body.crc32c() || sums.size != body.len() {
                return Err(s3_like(
                    &op,
                    dest,
                    "BadDigest",
                    format!(
                        "the part's {} bytes have CRC32C {:08x}; the request said {} bytes \
                         with CRC32C {:08x}",
                        sums.size,
                        sums.crc32c,
                        body.len(),
                        body.crc32c()
                    ),
                ));
            }
            // Acknowledged parts survive a crash, as on S3.
            file.sync_data()
                .await
                .map_err(|e| Error::io("sync part file", &tmp, e))?;
            let path = dir.join(part_name(number));
            fs::rename(&tmp, &path)
                .await
                .map_err(|e| Error::io("rename part file", &path, e))?;
            Ok(sums)
        }
        .await;
        if written.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        let sums = written?;
        Ok(UploadedPart {
            number,
            size: sums.size,
            crc32c: sums.crc32c,
            etag: sums.etag()?,
        })
    }

    async fn complete_upload(
        &self,
        dest: &ObjectUrl,
        upload_id: &UploadId,
        parts: &[UploadedPart],
    ) -> Result<()> {
        const OP: &str = "complete multipart upload of";
        let (dir, manifest) = match self.open_upload(OP, dest, upload_id).await {
            Ok(open) => open,
            // Completing again what already completed succeeds, as on S3 (a retried Complete):
            // the object at the key must be exactly these parts.
            Err(e)
                if e.s3_code() == Some("NoSuchUpload") && self.holds_parts(dest, parts).await? =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let requested: Vec<RequestedPart> = parts.iter().map(RequestedPart::from).collect();

        // S3's rules first on what is known without reading the parts (which exist, their order
        // and sizes), taking each part's ETag and CRC32C to be the ones named, so that a bad list
        // fails before any data is copied.
        let mut on_disk = BTreeMap::new();
        for p in parts {
            let path = dir.join(part_name(p.number));
            match fs::metadata(&path).await {
                Ok(m) => {
                    let part = ListedPart {
                        number: p.number,
                        etag: p.etag.clone(),
                        size: m.len(),
                        crc32c: None,
                    };
                    on_disk.insert(p.number, part);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat part file", &path, e)),
            }
        }
        check_complete(&requested, |n| on_disk.get(&n).cloned())
            .map_err(|r| refused(OP, dest, r))?;

        // Then assemble into a temporary file beside the parts, hashing each part as it is
        // copied, check the rules again with the ETags and CRC32Cs found (and the sizes, should
        // a part have been replaced meanwhile), and rename the file onto the key.
        let tmp = dir.join(format!(".object-{}", random_suffix()));
        let assembled = assemble(&dir, &tmp, parts).await.and_then(|copied| {
            check_complete(&requested, |n| copied.get(&n).cloned())
                .map_err(|r| refused(OP, dest, r))
        });
        if let Err(e) = assembled {
            let _ = fs::remove_file(&tmp).await;
            return Err(e);
        }

        let bucket = self.bucket_dir(&dest.bucket)?;
        let key = checked_key(&dest.key)?;
        let meta_path = bucket
            .join(META_DIR)
            .join(format!("{}.json", key.display()));
        let object = bucket.join(&key);
        let placed = async {
            for path in [&meta_path, &object] {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)
                        .await
                        .map_err(|e| Error::io("create directory", parent, e))?;
                }
            }
            // Metadata first: a crash between the two renames leaves new metadata beside the
            // old object, never a new object without its metadata.
            let meta = ObjectMeta {
                content_type: manifest.content_type,
                metadata: manifest.metadata,
            };
            write_json(&meta_path, &StoredMeta::from(meta)).await?;
            fs::rename(&tmp, &object)
                .await
                .map_err(|e| Error::io("rename assembled object onto", &object, e))
        }
        .await;
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp).await;
            return Err(e);
        }
        remove_upload_dir(&dir).await
    }

    async fn abort_upload(&self, dest: &ObjectUrl, upload_id: &UploadId) -> Result<()> {
        let (dir, _) = self
            .open_upload("abort multipart upload of", dest, upload_id)
            .await?;
        remove_upload_dir(&dir).await
    }

    async fn list_parts(&self, dest: &ObjectUrl, upload_id: &UploadId) -> Result<Vec<ListedPart>> {
        let (dir, _) = self.open_upload("list parts of", dest, upload_id).await?;
        let mut entries = fs::read_dir(&dir)
            .await
            .map_err(|e| Error::io("list upload staging directory", &dir, e))?;
        let mut numbers = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| Error::io("list upload staging directory", &dir, e))?
        {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() == 5
                && name.bytes().all(|b| b.is_ascii_digit())
                && let Some(n) = name.parse().ok().and_then(|n| PartNumber::new(n).ok())
            {
                numbers.push(n);
            }
        }
        numbers.sort();
        let mut parts = Vec::with_capacity(numbers.len());
        let mut buf = BytesMut::with_capacity(CHUNK);
        for number in numbers {
            let path = dir.join(part_name(number));
            let mut file = match fs::File::open(&path).await {
                Ok(f) => f,
                // Replaced or aborted between the listing and here.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("open part file", &path, e)),
            };
            let sums = sum_part(&mut file, &path, &mut buf, None).await?;
            let (size, crc32c) = (sums.size, sums.crc32c);
            parts.push(ListedPart {
                number,
                etag: sums.etag()?,
                size,
                crc32c: Some(crc32c),
            });
        }
        Ok(parts)
    }
}

impl ObjectStore for LocalStore {
    async fn get_object(&self, dest: &ObjectUrl) -> Result<ByteStream> {
        let path = self.object_path(dest)?;
        let file = match fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(s3_like(
                    "get object",
                    dest,
                    "NoSuchKey",
                    format!("{} does not exist", path.display()),
                ));
            }
            Err(e) => return Err(Error::io("open object", &path, e)),
        };
        let chunks = futures::stream::try_unfold((file, path), |(mut file, path)| async move {
            let mut buf = BytesMut::with_capacity(CHUNK);
            let n = file
                .read_buf(&mut buf)
                .await
                .map_err(|e| Error::io("read object", &path, e))?;
            Ok((n > 0).then(|| (buf.freeze(), (file, path))))
        });
        Ok(Box::pin(chunks))
    }

    async fn put_tags(&self, dest: &ObjectUrl, tags: &BTreeMap<String, String>) -> Result<()> {
        let meta_path = self.meta_path("tag object", dest).await?;
        let mut stored = read_json::<StoredMeta>(&meta_path)
            .await?
            .unwrap_or(StoredMeta {
                content_type: String::new(),
                metadata: BTreeMap::new(),
                tags: BTreeMap::new(),
            });
        stored.tags = tags.clone();
        if let Some(parent) = meta_path.parent() {
            fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        write_json(&meta_path, &stored).await
    }

    async fn get_tags(&self, dest: &ObjectUrl) -> Result<BTreeMap<String, String>> {
        let meta_path = self.meta_path("read tags of", dest).await?;
        Ok(read_json::<StoredMeta>(&meta_path)
            .await?
            .map(|m| m.tags)
            .unwrap_or_default())
    }

    async fn head_object(&self, dest: &ObjectUrl) -> Result<Option<(u64, ObjectMeta)>> {
        let bucket = self.bucket_dir(&dest.bucket)?;
        let key = checked_key(&dest.key)?;
        let path = bucket.join(&key);
        let size = match fs::metadata(&path).await {
            Ok(m) if m.is_file() => m.len(),
            // A directory is a key prefix, not an object.
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("stat object", &path, e)),
        };
        let meta_path = bucket
            .join(META_DIR)
            .join(format!("{}.json", key.display()));
        // A file put there by other means has no recorded metadata.
        let meta = match read_json::<StoredMeta>(&meta_path).await? {
            Some(m) => m.into(),
            None => ObjectMeta::default(),
        };
        Ok(Some((size, meta)))
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<OpenUpload>> {
        let where_ = ObjectUrl {
            bucket: bucket.to_owned(),
            key: prefix.to_owned(),
        };
        let dir = self
            .existing_bucket("list multipart uploads in", &where_)
            .await?
            .join(UPLOADS_DIR);
        let mut entries = match fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list upload staging directory", &dir, e)),
        };
        let mut uploads = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| Error::io("list upload staging directory", &dir, e))?
        {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_upload_id(&id) {
                continue;
            }
            // An upload completed or aborted while listing is simply not open any more.
            if let Some(m) = read_manifest(&entry.path()).await?
                && m.key.starts_with(prefix)
            {
                uploads.push(OpenUpload {
                    key: m.key,
                    upload_id: UploadId::new(id)?,
                });
            }
        }
        uploads.sort_by(|a, b| {
            (a.key.as_str(), a.upload_id.as_str()).cmp(&(b.key.as_str(), b.upload_id.as_str()))
        });
        Ok(uploads)
    }

    async fn put_object(&self, dest: &ObjectUrl, body: Bytes) -> Result<()> {
        let bucket = self.existing_bucket("put object", dest).await?;
        let key = checked_key(&dest.key)?;
        let object = bucket.join(&key);
        let meta_path = bucket
            .join(META_DIR)
            .join(format!("{}.json", key.display()));
        if let Some(parent) = object.parent() {
            fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        // A new object has no metadata of its own: drop the replaced object's.
        match fs::remove_file(&meta_path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove metadata", &meta_path, e));
            }
            _ => {}
        }
        let tmp = staging_path(&object);
        let written = async {
            fs::write(&tmp, &body)
                .await
                .map_err(|e| Error::io("write", &tmp, e))?;
            fs::rename(&tmp, &object)
                .await
                .map_err(|e| Error::io("rename onto", &object, e))
        }
        .await;
        if written.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        written
    }

    async fn put_object_if_absent(&self, dest: &ObjectUrl, body: Bytes) -> Result<bool> {
        let bucket = self.existing_bucket("put object (if absent)", dest).await?;
        let key = checked_key(&dest.key)?;
        let object = bucket.join(&key);
        if let Some(parent) = object.parent() {
            fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        // Written whole under a temporary name, then linked onto the key: the link fails when
        // a file is there, atomically.
        let tmp = staging_path(&object);
        fs::write(&tmp, &body)
            .await
            .map_err(|e| Error::io("write", &tmp, e))?;
        let linked = fs::hard_link(&tmp, &object).await;
        let _ = fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("link onto", &object, e)),
        }
    }

    async fn delete_object(&self, dest: &ObjectUrl) -> Result<()> {
        let bucket = self.existing_bucket("delete object", dest).await?;
        let key = checked_key(&dest.key)?;
        let meta_path = bucket
            .join(META_DIR)
            .join(format!("{}.json", key.display()));
        for path in [bucket.join(&key), meta_path] {
            match fs::remove_file(&path).await {
                Ok(()) => remove_empty_parents(&path, &bucket).await,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete object", &path, e)),
            }
        }
        Ok(())
    }

    async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>> {
        let where_ = ObjectUrl {
            bucket: bucket.to_owned(),
            key: prefix.to_owned(),
        };
        let root = self.existing_bucket("list objects in", &where_).await?;
        // Walk only the directory the prefix's complete components name.
        let start_key = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let start = if start_key.is_empty() {
            root.clone()
        } else {
            match checked_key(start_key) {
                Ok(p) => root.join(p),
                // No key can start with such a prefix.
                Err(_) => return Ok(Vec::new()),
            }
        };
        let mut objects = Vec::new();
        let mut dirs = vec![(start, start_key.to_owned())];
        while let Some((dir, dir_key)) = dirs.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(Error::io("list directory", &dir, e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| Error::io("list directory", &dir, e))?
            {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let key = if dir_key.is_empty() {
                    name.clone()
                } else {
                    format!("{dir_key}/{name}")
                };
                // The store's own directories, and files being written, are not objects.
                if checked_key(&key).is_err() || (name.starts_with('.') && name.contains(".tmp-")) {
                    continue;
                }
                let kind = entry
                    .file_type()
                    .await
                    .map_err(|e| Error::io("stat", &entry.path(), e))?;
                if kind.is_dir() {
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        dirs.push((entry.path(), key));
                    }
                } else if kind.is_file() && key.starts_with(prefix) {
                    let size = entry
                        .metadata()
                        .await
                        .map_err(|e| Error::io("stat", &entry.path(), e))?
                        .len();
                    objects.push(ListedObject { key, size });
                }
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }
}

/// Removes the directories that held `path` as long as they are empty, up to (not including)
/// `bucket`, as S3 has no directories to leave behind.
async fn remove_empty_parents(path: &Path, bucket: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == bucket || !d.starts_with(bucket) || fs::remove_dir(d).await.is_err() {
            break;
        }
        dir = d.parent();
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredMeta {
    content_type: String,
    metadata: BTreeMap<String, String>,
    /// Object tags, set after the object is complete.
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

impl From<ObjectMeta> for StoredMeta {
    fn from(m: ObjectMeta) -> Self {
        StoredMeta {
            content_type: m.content_type,
            metadata: m.metadata,
            tags: BTreeMap::new(),
        }
    }
}

impl From<StoredMeta> for ObjectMeta {
    fn from(m: StoredMeta) -> Self {
        ObjectMeta {
            content_type: m.content_type,
            metadata: m.metadata,
        }
    }
}

/// Running size, CRC32C and SHA-256 of a part.
#[derive(Default)]
struct PartSums {
    size: u64,
    crc32c: u32,
    sha: Sha256,
}

impl PartSums {
    fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        self.sha.update(data);
    }

    fn etag(self) -> Result<ETag> {
        etag_of(self.sha.finalize().as_slice())
    }
}

fn etag_of(sha256: &[u8]) -> Result<ETag> {
    ETag::new(format!("\"{}\"", hex::encode(&sha256[..16])))
}

/// Reads the part file at `path` through, hashing it and copying it to `copy` when given.
async fn sum_part(
    part: &mut fs::File,
    path: &Path,
    buf: &mut BytesMut,
    mut copy: Option<(&mut fs::File, &Path)>,
) -> Result<PartSums> {
    let mut sums = PartSums::default();
    loop {
        buf.clear();
        let n = part
            .read_buf(buf)
            .await
            .map_err(|e| Error::io("read part file", path, e))?;
        if n == 0 {
            break;
        }
        sums.update(buf);
        if let Some((out, out_path)) = copy.as_mut() {
            out.write_all(buf)
                .await
                .map_err(|e| Error::io("write assembled object", out_path, e))?;
        }
    }
    Ok(sums)
}

/// Copies `parts` from `dir` into a new file `tmp`, in the order given, and returns what was
/// copied of each: its size, ETag and CRC32C. It stops at a part that is not there (replaced or
/// aborted since it was looked at), which is then missing from the result.
async fn assemble(
    dir: &Path,
    tmp: &Path,
    parts: &[UploadedPart],
) -> Result<BTreeMap<PartNumber, ListedPart>> {
    let mut out = fs::File::create(tmp)
        .await
        .map_err(|e| Error::io("create assembled object", tmp, e))?;
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut copied = BTreeMap::new();
    for p in parts {
        let path = dir.join(part_name(p.number));
        let mut part = match fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(copied),
            Err(e) => return Err(Error::io("open part file", &path, e)),
        };
        let sums = sum_part(&mut part, &path, &mut buf, Some((&mut out, tmp))).await?;
        let (size, crc32c) = (sums.size, sums.crc32c);
        let listed = ListedPart {
            number: p.number,
            etag: sums.etag()?,
            size,
            crc32c: Some(crc32c),
        };
        copied.insert(p.number, listed);
    }
    out.sync_all()
        .await
        .map_err(|e| Error::io("sync assembled object", tmp, e))?;
    Ok(copied)
}

/// Removes an upload's staging directory; renaming it away first makes the upload vanish at
/// once, so a part upload racing with it fails instead of landing in a half-deleted directory.
async fn remove_upload_dir(dir: &Path) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let gone = dir.with_file_name(format!(".gone-{name}-{}", random_suffix()));
    fs::rename(dir, &gone)
        .await
        .map_err(|e| Error::io("remove upload staging directory", dir, e))?;
    fs::remove_dir_all(&gone)
        .await
        .map_err(|e| Error::io("remove upload staging directory", &gone, e))
}

async fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    read_json(&dir.join(MANIFEST)).await
}

async fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match fs::read(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        Error::io(
            "parse",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

/// Writes JSON to a temporary file and renames it onto `path`.
async fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| {
        Error::io(
            "serialize",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let tmp = path.with_extension(format!("tmp-{}", random_suffix()));
    fs::write(&tmp, &text)
        .await
        .map_err(|e| Error::io("write", &tmp, e))?;
    fs::rename(&tmp, path)
        .await
        .map_err(|e| Error::io("rename onto", path, e))
}

/// The key as a relative path, refusing anything that could leave the bucket or collide with
/// the store's own files.
fn checked_key(key: &str) -> Result<PathBuf> {
    let bad = |reason: &str| Error::invalid("key", format!("{key:?} {reason}"));
    if key.is_empty() {
        return Err(bad("is empty"));
    }
    if key.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut path = PathBuf::new();
    for (i, comp) in key.split('/').enumerate() {
        match comp {
            "" => {
                return Err(bad(
                    "has an empty path component (a leading, trailing or double '/')",
                ));
            }
            "." | ".." => return Err(bad("has a '.' or '..' component")),
            UPLOADS_DIR | META_DIR if i == 0 => {
                return Err(bad(
                    "starts with a directory the local store keeps for itself",
                ));
            }
            c => path.push(c),
        }
    }
    Ok(path)
}

fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn part_name(number: PartNumber) -> String {
    format!("{:05}", number.get())
}

/// A hidden name beside `object` to write it under before it is renamed or linked into place
/// (listings skip such names).
fn staging_path(object: &Path) -> PathBuf {
    let name = object
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    object.with_file_name(format!(".{name}.tmp-{}", random_suffix()))
}

fn random_suffix() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// An S3 error with S3's `code`, as the local store reports what S3 would refuse.
fn s3_like(op: &str, dest: &ObjectUrl, code: &'static str, message: String) -> Error {
    refusal(op, dest, code, Box::new(LocalStoreError { code, message }))
}

/// A CompleteMultipartUpload that S3's rules refuse.
fn refused(op: &str, dest: &ObjectUrl, r: CompleteRefusal) -> Error {
    refusal(op, dest, r.code(), Box::new(r))
}

fn refusal(op: &str, dest: &ObjectUrl, code: &'static str, source: BoxError) -> Error {
    Error::S3 {
        op: op.to_owned(),
        bucket: dest.bucket.clone(),
        key: dest.key.clone(),
        code: Some(code.to_owned()),
        retryable: false,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_the_bucket() {
        for bad in [
            "",
            "..",
            "a/../b",
            "./a",
            "/abs",
            "a//b",
            "a/",
            ".gzship-uploads/x",
            ".gzship-meta/x",
        ] {
            assert!(checked_key(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(checked_key("a/b.gz").ok(), Some(PathBuf::from("a/b.gz")));
        assert!(checked_key("x/.gzship-meta").is_ok());
    }

    #[test]
    fn buckets_are_one_plain_component() {
        let store = LocalStore::new("/r");
        for bad in ["", ".", "..", "a/b", ".hidden"] {
            assert!(store.bucket_dir(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(store.bucket_dir("b").ok(), Some(PathBuf::from("/r/b")));
        let dir = LocalStore::directory("/d");
        assert_eq!(dir.bucket_dir(LOCAL_BUCKET).ok(), Some(PathBuf::from("/d")));
        assert!(dir.bucket_dir("other").is_err());
    }

    #[test]
    fn for_file_maps_onto_the_files_directory() -> Result<()> {
        let (store, dest) = LocalStore::for_file(Path::new("/data/out/x.gz"))?;
        assert_eq!(dest.bucket, LOCAL_BUCKET);
        assert_eq!(dest.key, "x.gz");
        assert_eq!(store.object_path(&dest)?, PathBuf::from("/data/out/x.gz"));
        assert!(LocalStore::for_file(Path::new("/")).is_err());
        Ok(())
    }

    /// A part whose bytes do not match the CRC32C the request carries is refused, as S3 answers
    /// `BadDigest`, and leaves no part file.
    #[tokio::test]
    async fn a_wrong_crc32c_is_bad_digest() -> Result<()> {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bkt")).unwrap();
        let store = LocalStore::new(root.path());
        let dest: ObjectUrl = "s3://bkt/k.gz".parse()?;
        let id = store.create_upload(&dest, &ObjectMeta::default()).await?;
        let bytes = bytes::Bytes::from_static(b"some part");
        let body = PartBody::memory(bytes.clone(), crc32c::crc32c(&bytes) ^ 1);
        let err = store
            .upload_part(&dest, &id, PartNumber::new(1)?, body)
            .await
            .unwrap_err();
        assert_eq!(err.s3_code(), Some("BadDigest"), "{err:?}");
        assert!(store.list_parts(&dest, &id).await?.is_empty());
        store.abort_upload(&dest, &id).await
    }
}
