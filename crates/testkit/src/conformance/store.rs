//! The conformance suite of [`MultipartStore`] (with its [`ObjectStore`]), after arrow-rs
//! `object_store`'s `integration.rs`: each check is a public async fn over `&impl Store` and a
//! fresh destination, and a runner calls every check against every backend. gzship's top-level
//! `tests/conformance/store.rs` runs them against moto's S3 server, the local store and
//! gzship-s3lite, started here by [`moto`], [`local`] and [`s3lite`].
//!
//! Where a backend legitimately differs from S3 the difference is a field of [`Behaviour`],
//! and a check skips only what the backend lacks. [`for_each_store_check!`] names every check,
//! so that a runner does not keep a list of its own.
//!
//! [`for_each_store_check!`]: crate::for_each_store_check

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use gzship_core::assemble::PartAssembler;
use gzship_core::error::chain;
use gzship_core::spool::SpoolSink;
use gzship_core::store::body::Content;
use gzship_core::store::local::LocalStore;
use gzship_core::store::s3::S3Store;
use gzship_core::store::{MultipartStore, ObjectMeta, ObjectStore, UploadedPart};
use gzship_core::types::{MIB, MIN_PART_SIZE};
use gzship_core::{ETag, Error, ObjectUrl, PartNumber, PartWindow, UploadId};

use crate::data::{self, DataKind};
use crate::s3::S3Server;

/// The bucket every backend has when [`moto`], [`local`] or [`s3lite`] returns.
pub const BUCKET: &str = "conformance";

/// What the suite needs of a backend: the multipart contract and the reads around it.
pub trait Store: MultipartStore + ObjectStore {}

impl<T: MultipartStore + ObjectStore> Store for T {}

/// S3 behaviours a backend may lack; the suite checks each one where the backend has it.
/// [`Behaviour::S3`] is S3 (and the local store); moto and gzship-s3lite lack some.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// ListParts reports each part's CRC32C (moto 5.1 never reports part checksums).
    pub lists_part_checksums: bool,
    /// Complete refuses descending part numbers with `InvalidPartOrder` (moto accepts them).
    pub checks_part_order: bool,
    /// Complete refuses a part named with a CRC32C that is not the part's (`InvalidPart`).
    pub checks_complete_checksums: bool,
    /// An upload id used with another key is `NoSuchUpload` (moto ignores the key).
    pub binds_upload_to_key: bool,
    /// UploadPart and Complete of an aborted upload are `NoSuchUpload` (moto answers 500 with an
    /// empty body).
    pub aborted_upload_is_no_such_upload: bool,
    /// Objects take tags (PutObjectTagging, GetObjectTagging); gzship-s3lite, made for
    /// throughput benchmarks, has no tagging, so the master's CRC-32 tag is a warning there.
    pub keeps_tags: bool,
}

impl Behaviour {
    /// S3, and gzship's local store, which keeps S3's rules.
    pub const S3: Behaviour = Behaviour {
        lists_part_checksums: true,
        checks_part_order: true,
        checks_complete_checksums: true,
        binds_upload_to_key: true,
        aborted_upload_is_no_such_upload: true,
        keeps_tags: true,
    };

    /// moto's server ([`crate::s3::MOTO_VERSION`]).
    pub const MOTO: Behaviour = Behaviour {
        lists_part_checksums: false,
        checks_part_order: false,
        checks_complete_checksums: false,
        binds_upload_to_key: false,
        aborted_upload_is_no_such_upload: false,
        keeps_tags: true,
    };

    /// gzship-s3lite: S3's multipart rules (gzship-core's `store::rules`), no tagging.
    pub const S3LITE: Behaviour = Behaviour {
        keeps_tags: false,
        ..Behaviour::S3
    };
}

/// Seeded random bytes: the same `(seed, len)` always gives the same body, different seeds
/// differ.
pub fn body(seed: u64, len: usize) -> Bytes {
    Bytes::from(data::generate(DataKind::Random, len, seed))
}

/// Part number `n`; panics unless 1..=10,000.
pub fn part(n: u32) -> PartNumber {
    PartNumber::new(n).unwrap()
}

/// The content type and metadata every check creates its uploads with.
pub fn meta() -> ObjectMeta {
    ObjectMeta {
        content_type: "application/gzip".into(),
        metadata: BTreeMap::from([
            ("source-host".to_owned(), "example.test".to_owned()),
            ("source-size".to_owned(), "12345".to_owned()),
        ]),
    }
}

/// The object at `dest`, read whole.
pub async fn read_all(store: &impl ObjectStore, dest: &ObjectUrl) -> Vec<u8> {
    let mut stream = store.get_object(dest).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn concat(bodies: &[&Bytes]) -> Vec<u8> {
    bodies.iter().flat_map(|b| b.iter().copied()).collect()
}

/// Uploads `b` as part `n`; panics with the error chain when the store refuses.
pub async fn upload(
    store: &impl MultipartStore,
    dest: &ObjectUrl,
    id: &UploadId,
    n: u32,
    b: &Bytes,
) -> UploadedPart {
    store
        .upload_part(dest, id, part(n), b.clone().into())
        .await
        .unwrap_or_else(|e| panic!("upload part {n}: {}", chain(&e)))
}

async fn no_open_upload(store: &impl ObjectStore, dest: &ObjectUrl, id: &UploadId) {
    let open = store.list_uploads(&dest.bucket, "").await.unwrap();
    assert!(
        open.iter().all(|u| &u.upload_id != id),
        "upload {id} is still listed: {open:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The suite.

/// Create, upload, complete; the object has the bytes, the size, the content type and the
/// metadata, and the upload is no longer open.
pub async fn round_trip(store: &impl Store, dest: &ObjectUrl, _q: Behaviour) {
    assert_eq!(store.head_object(dest).await.unwrap(), None);
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let open = store.list_uploads(&dest.bucket, "").await.unwrap();
    assert!(open.iter().any(|u| u.upload_id == id && u.key == dest.key));

    let (a, b) = (body(1, MIN_PART_SIZE as usize), body(2, 1000));
    let pa = upload(store, dest, &id, 1, &a).await;
    let pb = upload(store, dest, &id, 2, &b).await;
    assert_eq!((pa.size, pa.crc32c), (a.len() as u64, crc32c::crc32c(&a)));
    assert_eq!((pb.size, pb.crc32c), (b.len() as u64, crc32c::crc32c(&b)));
    store.complete_upload(dest, &id, &[pa, pb]).await.unwrap();

    assert_eq!(read_all(store, dest).await, concat(&[&a, &b]));
    let (size, got) = store
        .head_object(dest)
        .await
        .unwrap()
        .expect("object exists");
    assert_eq!(size, (a.len() + b.len()) as u64);
    assert_eq!(got, meta());
    no_open_upload(store, dest, &id).await;
}

/// Parts uploaded concurrently and in reverse order assemble in part-number order.
pub async fn out_of_order_and_concurrent(store: &impl Store, dest: &ObjectUrl, _q: Behaviour) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let bodies = [
        body(10, MIN_PART_SIZE as usize),
        body(11, MIN_PART_SIZE as usize + 1),
        body(12, 4321),
    ];
    let uploads = (1..=3u32)
        .rev()
        .map(|n| upload(store, dest, &id, n, &bodies[n as usize - 1]));
    let mut parts = futures::future::join_all(uploads).await;
    parts.sort_by_key(|p| p.number);
    store.complete_upload(dest, &id, &parts).await.unwrap();
    assert_eq!(
        read_all(store, dest).await,
        concat(&[&bodies[0], &bodies[1], &bodies[2]])
    );
}

/// Part numbers 1, 3, 7: gaps are allowed, as on S3 (each task has its own part window).
pub async fn part_number_gaps(store: &impl Store, dest: &ObjectUrl, _q: Behaviour) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let (a, b, c) = (
        body(20, MIN_PART_SIZE as usize),
        body(21, MIN_PART_SIZE as usize),
        body(22, 10),
    );
    let parts = vec![
        upload(store, dest, &id, 1, &a).await,
        upload(store, dest, &id, 3, &b).await,
        upload(store, dest, &id, 7, &c).await,
    ];
    store.complete_upload(dest, &id, &parts).await.unwrap();
    assert_eq!(read_all(store, dest).await, concat(&[&a, &b, &c]));
}

/// Uploading a part number again replaces the part (a retried task is idempotent), and the
/// replaced part's ETag no longer completes the upload.
pub async fn reupload_replaces_part(store: &impl Store, dest: &ObjectUrl, q: Behaviour) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let (old, new) = (body(30, 2000), body(31, 3000));
    let p_old = upload(store, dest, &id, 1, &old).await;
    let p_new = upload(store, dest, &id, 1, &new).await;
    assert_ne!(p_old.etag, p_new.etag);

    if q.lists_part_checksums {
        let listed = store.list_parts(dest, &id).await.unwrap();
        assert_eq!(listed, vec![p_new.clone().into()]);
    }

    let stale = store
        .complete_upload(dest, &id, std::slice::from_ref(&p_old))
        .await
        .expect_err("completing with a replaced part's ETag must fail");
    assert!(chain(&stale).contains("InvalidPart"), "{}", chain(&stale));
    assert_eq!(store.head_object(dest).await.unwrap(), None);

    store.complete_upload(dest, &id, &[p_new]).await.unwrap();
    assert_eq!(read_all(store, dest).await, new.to_vec());
}

/// Completing an upload again with the same parts succeeds (a retried Complete whose first
/// attempt went through), and the object stays as it was.
pub async fn complete_again_succeeds(store: &impl Store, dest: &ObjectUrl, q: Behaviour) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let (a, b) = (body(35, MIN_PART_SIZE as usize), body(36, 100));
    let parts = vec![
        upload(store, dest, &id, 1, &a).await,
        upload(store, dest, &id, 2, &b).await,
    ];
    store.complete_upload(dest, &id, &parts).await.unwrap();
    store
        .complete_upload(dest, &id, &parts)
        .await
        .unwrap_or_else(|e| panic!("second complete: {}", chain(&e)));

    assert_eq!(read_all(store, dest).await, concat(&[&a, &b]));

    if !q.aborted_upload_is_no_such_upload {
        return;
    }
    // When the upload is gone (a retried Complete after success, simulated with another upload
    // of the key, aborted), the store reports success only if the object at the key is exactly
    // these parts (size and CRC32Cs).
    let gone = store.create_upload(dest, &meta()).await.unwrap();
    store.abort_upload(dest, &gone).await.unwrap();
    store
        .complete_upload(dest, &gone, &parts)
        .await
        .unwrap_or_else(|e| panic!("complete of a gone upload: {}", chain(&e)));
    let mut other = parts.clone();
    other[1].crc32c ^= 1;
    let err = store
        .complete_upload(dest, &gone, &other)
        .await
        .expect_err("a gone upload completed with parts that are not the object's");
    assert!(chain(&err).contains("NoSuchUpload"), "{}", chain(&err));
    assert_eq!(read_all(store, dest).await, concat(&[&a, &b]));
}

/// Completes with `parts`, which the store must refuse with S3's `code`, not retryable,
/// leaving nothing at the key (and the upload open, as S3 does).
async fn refused(
    store: &impl Store,
    dest: &ObjectUrl,
    id: &UploadId,
    parts: &[UploadedPart],
    code: &str,
) -> Error {
    let err = store
        .complete_upload(dest, id, parts)
        .await
        .expect_err(&format!("completing with {parts:?} must fail with {code}"));
    assert_eq!(err.s3_code(), Some(code), "{parts:?}: {}", chain(&err));
    assert!(!err.is_retryable(), "{err:?}");
    assert_eq!(store.head_object(dest).await.unwrap(), None);
    err
}

/// A non-last part under 5 MiB fails Complete with `EntityTooSmall`, not retryable, nothing at
/// the key; the upload stays open for the caller to abort.
pub async fn entity_too_small(store: &impl Store, dest: &ObjectUrl, _q: Behaviour) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let parts = vec![
        upload(store, dest, &id, 1, &body(40, MIN_PART_SIZE as usize - 1)).await,
        upload(store, dest, &id, 2, &body(41, 100)).await,
    ];
    let err = refused(store, dest, &id, &parts, "EntityTooSmall").await;
    let text = chain(&err);
    assert!(text.contains("EntityTooSmall"), "{text}");
    assert!(
        text.starts_with(&format!("complete multipart upload of {dest}")),
        "{text}"
    );
    assert!(matches!(err, Error::S3 { .. }), "{err:?}");

    // S3 keeps the upload open after a failed Complete: the caller aborts.
    let open = store.list_uploads(&dest.bucket, "").await.unwrap();
    assert!(open.iter().any(|u| u.upload_id == id));
    store.abort_upload(dest, &id).await.unwrap();
    no_open_upload(store, dest, &id).await;
}

/// Parts out of order at Complete, descending or named twice, are refused: part numbers must
/// strictly ascend.
pub async fn parts_out_of_order_refused(store: &impl Store, dest: &ObjectUrl, q: Behaviour) {
    if !q.checks_part_order {
        return;
    }
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let p1 = upload(store, dest, &id, 1, &body(45, MIN_PART_SIZE as usize)).await;
    let p2 = upload(store, dest, &id, 2, &body(46, MIN_PART_SIZE as usize)).await;
    let descending = [p2.clone(), p1.clone()];
    refused(store, dest, &id, &descending, "InvalidPartOrder").await;
    let repeated = [p1.clone(), p1, p2];
    refused(store, dest, &id, &repeated, "InvalidPartOrder").await;
    store.abort_upload(dest, &id).await.unwrap();
}

/// A part that was never uploaded, or named with an ETag that is not its own, is
/// `InvalidPart`; the upload still completes with the right parts after.
pub async fn unknown_part_or_etag_is_invalid_part(
    store: &impl Store,
    dest: &ObjectUrl,
    _q: Behaviour,
) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let (a, b) = (body(55, MIN_PART_SIZE as usize), body(56, 100));
    let p1 = upload(store, dest, &id, 1, &a).await;
    let p2 = upload(store, dest, &id, 2, &b).await;

    let mut unknown = p2.clone();
    unknown.number = part(3);
    refused(store, dest, &id, &[p1.clone(), unknown], "InvalidPart").await;
    let mut wrong_etag = p2.clone();
    wrong_etag.etag = ETag::new("\"0123456789abcdef0123456789abcdef\"").unwrap();
    refused(store, dest, &id, &[p1.clone(), wrong_etag], "InvalidPart").await;

    store.complete_upload(dest, &id, &[p1, p2]).await.unwrap();
    assert_eq!(read_all(store, dest).await, concat(&[&a, &b]));
}

/// A part named with a CRC32C that is not its own is `InvalidPart`.
pub async fn wrong_crc32c_at_complete_is_invalid_part(
    store: &impl Store,
    dest: &ObjectUrl,
    q: Behaviour,
) {
    if !q.checks_complete_checksums {
        return;
    }
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let mut p1 = upload(store, dest, &id, 1, &body(57, 100)).await;
    p1.crc32c ^= 1;
    refused(store, dest, &id, &[p1], "InvalidPart").await;
    store.abort_upload(dest, &id).await.unwrap();
}

/// Complete with no part at all is refused (S3's schema wants one: `MalformedXML`).
pub async fn no_parts_refused(store: &impl Store, dest: &ObjectUrl, _q: Behaviour) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    upload(store, dest, &id, 1, &body(58, 100)).await;
    refused(store, dest, &id, &[], "MalformedXML").await;
    store.abort_upload(dest, &id).await.unwrap();
}

/// Abort discards the parts: no open upload, nothing at the key, the upload id is gone.
pub async fn abort_leaves_nothing(store: &impl Store, dest: &ObjectUrl, q: Behaviour) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    upload(store, dest, &id, 1, &body(50, 1000)).await;
    store.abort_upload(dest, &id).await.unwrap();

    no_open_upload(store, dest, &id).await;
    assert_eq!(store.head_object(dest).await.unwrap(), None);
    assert!(store.get_object(dest).await.is_err());
    let err = store
        .list_parts(dest, &id)
        .await
        .expect_err("an aborted upload has no parts to list");
    assert!(chain(&err).contains("NoSuchUpload"), "{}", chain(&err));
    let err = store
        .upload_part(dest, &id, part(2), body(51, 10).into())
        .await
        .expect_err("an aborted upload takes no parts");
    if q.aborted_upload_is_no_such_upload {
        assert!(chain(&err).contains("NoSuchUpload"), "{}", chain(&err));
        assert!(!err.is_retryable(), "{err:?}");
    }
}

/// ListParts reports each part's number, size, ETag and CRC32C, in part-number order.
pub async fn list_parts_reports_sizes_and_crc32c(
    store: &impl Store,
    dest: &ObjectUrl,
    q: Behaviour,
) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    assert_eq!(store.list_parts(dest, &id).await.unwrap(), vec![]);
    let (a, b) = (body(60, 777), body(61, MIB as usize));
    let p5 = upload(store, dest, &id, 5, &a).await;
    let p2 = upload(store, dest, &id, 2, &b).await;
    let listed = store.list_parts(dest, &id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!((listed[0].number, listed[1].number), (p2.number, p5.number));
    assert_eq!((listed[0].size, listed[1].size), (MIB, 777));
    assert_eq!((&listed[0].etag, &listed[1].etag), (&p2.etag, &p5.etag));
    if q.lists_part_checksums {
        assert_eq!(listed, vec![p2.into(), p5.into()]);
        assert_eq!(listed[0].crc32c, Some(crc32c::crc32c(&b)));
    } else {
        assert_eq!((listed[0].crc32c, listed[1].crc32c), (None, None));
    }
    store.abort_upload(dest, &id).await.unwrap();
}

/// ListMultipartUploads filters by key prefix and lists several uploads of one key.
pub async fn list_uploads_by_prefix(store: &impl Store, dest: &ObjectUrl, _q: Behaviour) {
    let at = |key: &str| ObjectUrl {
        bucket: dest.bucket.clone(),
        key: format!("{}/{key}", dest.key),
    };
    let a1 = store.create_upload(&at("a/x.gz"), &meta()).await.unwrap();
    let a2 = store.create_upload(&at("a/x.gz"), &meta()).await.unwrap();
    let b1 = store.create_upload(&at("b/y.gz"), &meta()).await.unwrap();
    let under_a = store
        .list_uploads(&dest.bucket, &format!("{}/a/", dest.key))
        .await
        .unwrap();
    let mut ids: Vec<_> = under_a.iter().map(|u| u.upload_id.clone()).collect();
    ids.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut want = vec![a1.clone(), a2.clone()];
    want.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(ids, want);
    assert!(under_a.iter().all(|u| u.key == at("a/x.gz").key));
    let all = store.list_uploads(&dest.bucket, "").await.unwrap();
    assert!(all.iter().any(|u| u.upload_id == b1));
    for (k, id) in [("a/x.gz", &a1), ("a/x.gz", &a2), ("b/y.gz", &b1)] {
        store.abort_upload(&at(k), id).await.unwrap();
    }
    assert_eq!(store.list_uploads(&dest.bucket, "").await.unwrap(), vec![]);
}

/// An upload id is bound to its key: using it for another key is `NoSuchUpload`.
pub async fn upload_id_is_bound_to_its_key(store: &impl Store, dest: &ObjectUrl, q: Behaviour) {
    if !q.binds_upload_to_key {
        return;
    }
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let other = ObjectUrl {
        bucket: dest.bucket.clone(),
        key: format!("{}.other", dest.key),
    };
    let err = store
        .upload_part(&other, &id, part(1), body(70, 10).into())
        .await
        .expect_err("an upload id used for another key");
    assert!(chain(&err).contains("NoSuchUpload"), "{}", chain(&err));
    store.abort_upload(dest, &id).await.unwrap();
}

/// Tags can be set on a completed object and read back; a new object replaces them.
pub async fn tags_round_trip(store: &impl Store, dest: &ObjectUrl, q: Behaviour) {
    if !q.keeps_tags {
        return;
    }
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let p = upload(store, dest, &id, 1, &body(70, 100)).await;
    store.complete_upload(dest, &id, &[p]).await.unwrap();
    assert!(store.get_tags(dest).await.unwrap().is_empty());
    let tags = BTreeMap::from([
        ("gzship-crc32".to_owned(), "0a1b2c3d".to_owned()),
        ("other".to_owned(), "x".to_owned()),
    ]);
    store.put_tags(dest, &tags).await.unwrap();
    assert_eq!(store.get_tags(dest).await.unwrap(), tags);
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let p = upload(store, dest, &id, 1, &body(71, 100)).await;
    store.complete_upload(dest, &id, &[p]).await.unwrap();
    assert!(store.get_tags(dest).await.unwrap().is_empty());
    let missing = ObjectUrl {
        bucket: dest.bucket.clone(),
        key: format!("{}-missing", dest.key),
    };
    assert!(store.put_tags(&missing, &tags).await.is_err());
}

/// The object streams back in more than one chunk and with the same bytes (no whole-object
/// buffering is visible to the caller, and chunk boundaries do not lose bytes).
pub async fn get_object_streams(store: &impl Store, dest: &ObjectUrl, _q: Behaviour) {
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let a = body(80, 3 * MIB as usize);
    let p = upload(store, dest, &id, 1, &a).await;
    store.complete_upload(dest, &id, &[p]).await.unwrap();
    let chunks: Vec<Bytes> = store
        .get_object(dest)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(chunks.len() > 1, "one chunk of {} bytes", a.len());
    assert_eq!(chunks.concat(), a.to_vec());
}

/// Small objects (job records) are put whole, read back, replaced, listed by prefix in key
/// order across pages of the listing, and deleted; deleting a missing key succeeds, and a
/// missing key is `NoSuchKey`.
pub async fn small_objects_put_list_delete(store: &impl Store, dest: &ObjectUrl, _q: Behaviour) {
    let at = |name: &str| ObjectUrl {
        bucket: dest.bucket.clone(),
        key: format!("{}/{name}", dest.key),
    };
    let first = at("a/job.json");
    store
        .put_object(&first, Bytes::from_static(b"{\"v\":1}"))
        .await
        .unwrap();
    assert_eq!(read_all(store, &first).await, b"{\"v\":1}");
    store
        .put_object(&first, Bytes::from_static(b"{\"v\":2}"))
        .await
        .unwrap();
    assert_eq!(read_all(store, &first).await, b"{\"v\":2}");

    // More keys than one page of S3's listing (1,000), put 32 at a time.
    let names: Vec<String> = (0..1005).map(|i| format!("a/tasks/{i:05}.json")).collect();
    futures::stream::iter(&names)
        .map(|n| async move { store.put_object(&at(n), Bytes::from(n.clone())).await })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let other = at("b/job.json");
    store.put_object(&other, Bytes::new()).await.unwrap();

    let listed = store
        .list_objects(&dest.bucket, &format!("{}/a/", dest.key))
        .await
        .unwrap();
    let mut want: Vec<String> = names.iter().map(|n| at(n).key).collect();
    want.push(first.key.clone());
    want.sort();
    let keys: Vec<String> = listed.iter().map(|o| o.key.clone()).collect();
    assert_eq!(keys, want);
    assert_eq!(listed.iter().find(|o| o.key == first.key).unwrap().size, 7);
    let prefix = format!("{}/", dest.key);
    assert_eq!(
        store
            .list_objects(&dest.bucket, &prefix)
            .await
            .unwrap()
            .len(),
        want.len() + 1
    );
    let none = format!("{}/nothing-here/", dest.key);
    assert!(
        store
            .list_objects(&dest.bucket, &none)
            .await
            .unwrap()
            .is_empty()
    );

    store.delete_object(&first).await.unwrap();
    store.delete_object(&first).await.unwrap();
    let err = store.get_object(&first).await.err().expect("a deleted key");
    assert_eq!(err.s3_code(), Some("NoSuchKey"), "{}", chain(&err));
    assert!(store.head_object(&first).await.unwrap().is_none());
    futures::stream::iter(&names)
        .map(|n| async move { store.delete_object(&at(n)).await })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    store.delete_object(&other).await.unwrap();
    assert!(
        store
            .list_objects(&dest.bucket, &prefix)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A conditional put (`If-None-Match: *`) writes only where no object is: the second put to
/// a key is refused and leaves the first object; after a delete it writes again.
pub async fn put_if_absent_is_exclusive(store: &impl Store, dest: &ObjectUrl, _q: Behaviour) {
    let claim = ObjectUrl {
        bucket: dest.bucket.clone(),
        key: format!("{}/claims/one.json", dest.key),
    };
    let first = Bytes::from_static(b"first");
    assert!(store.put_object_if_absent(&claim, first).await.unwrap());
    let second = Bytes::from_static(b"second");
    assert!(!store.put_object_if_absent(&claim, second).await.unwrap());
    assert_eq!(read_all(store, &claim).await, b"first");
    store.delete_object(&claim).await.unwrap();
    let third = Bytes::from_static(b"third");
    assert!(store.put_object_if_absent(&claim, third).await.unwrap());
    assert_eq!(read_all(store, &claim).await, b"third");
    store.delete_object(&claim).await.unwrap();
}

/// A part spooled to a file (as a worker spools parts too big for its memory) uploads from
/// the file with the same size, CRC32C and bytes as from memory, and the file is gone after.
pub async fn spooled_parts_upload_from_their_files(
    store: &impl Store,
    dest: &ObjectUrl,
    _q: Behaviour,
) {
    let spool = tempfile::tempdir().unwrap();
    let window = PartWindow::new(part(1), 2).unwrap();
    let sink = SpoolSink::new(spool.path());
    let mut assembler = PartAssembler::with_sink(window, MIN_PART_SIZE, true, sink).unwrap();
    let (a, b) = (body(60, 7 * MIB as usize), body(61, 3 * MIB as usize + 17));
    let mut parts = assembler.push(&a).unwrap();
    parts.extend(assembler.push(&b).unwrap());
    parts.push(assembler.finish().unwrap().part);
    assert_eq!(parts.len(), 2);
    let id = store.create_upload(dest, &meta()).await.unwrap();
    let mut uploaded = Vec::new();
    for p in parts {
        assert!(matches!(p.data.content(), Content::File(_)));
        let (len, crc) = (p.data.len(), p.data.crc32c());
        let u = store
            .upload_part(dest, &id, p.number, p.data)
            .await
            .unwrap();
        assert_eq!((u.size, u.crc32c), (len, crc));
        uploaded.push(u);
    }
    store.complete_upload(dest, &id, &uploaded).await.unwrap();
    assert_eq!(read_all(store, dest).await, concat(&[&a, &b]));
    let left = std::fs::read_dir(spool.path()).unwrap().count();
    assert_eq!(left, 0, "spool files outlived their uploads");
}

// ---------------------------------------------------------------------------------------------
// Backends.

/// moto's S3 server with [`BUCKET`], and an [`S3Store`] on it. Use with [`Behaviour::MOTO`].
pub async fn moto() -> (S3Server, S3Store) {
    let server = S3Server::start().await;
    server.create_bucket(BUCKET).await;
    let store = server.store();
    (server, store)
}

/// A [`LocalStore`] in a new temporary directory with [`BUCKET`]. Use with [`Behaviour::S3`],
/// and check [`assert_no_local_leftovers`] after each check.
pub fn local() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().expect("create a temporary directory for the local store");
    std::fs::create_dir(dir.path().join(BUCKET)).expect("create the local store's bucket");
    let store = LocalStore::new(dir.path());
    (dir, store)
}

/// gzship-s3lite in this process, keeping bodies in memory, with [`BUCKET`], and an
/// [`S3Store`] on it. Use with [`Behaviour::S3LITE`].
pub async fn s3lite() -> (gzship_s3lite::Server, S3Store) {
    let config = gzship_s3lite::Config {
        storage: gzship_s3lite::Storage::Memory,
        buckets: vec![BUCKET.into()],
        ..gzship_s3lite::Config::default()
    };
    let server = gzship_s3lite::Server::start(config)
        .await
        .expect("start gzship-s3lite on 127.0.0.1");
    let store = crate::s3::store_at(&server.endpoint_url());
    (server, store)
}

/// The destination a check named `check` writes to, in [`BUCKET`].
pub fn dest(check: &str) -> ObjectUrl {
    ObjectUrl {
        bucket: BUCKET.into(),
        key: format!("conformance/{check}.gz"),
    }
}

/// After a check (which completes or aborts every upload it makes), the local store rooted at
/// `root` has no staging directory, temporary part or temporary object left.
pub fn assert_no_local_leftovers(root: &Path) {
    let uploads = root.join(BUCKET).join(".gzship-uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.file_name())).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", uploads.display());
}

/// Calls the macro `$runner` with the name of every check of the store suite, so that a runner
/// makes one test per check and backend without a list of its own:
///
/// ```ignore
/// macro_rules! store_tests {
///     ($($check:ident),*) => {$(
///         #[tokio::test]
///         async fn $check() {
///             let (_server, store) = suite::moto().await;
///             suite::$check(&store, &suite::dest(stringify!($check)), Behaviour::MOTO).await;
///         }
///     )*};
/// }
/// gzship_testkit::for_each_store_check!(store_tests);
/// ```
#[macro_export]
macro_rules! for_each_store_check {
    ($runner:ident) => {
        $runner!(
            round_trip,
            out_of_order_and_concurrent,
            part_number_gaps,
            reupload_replaces_part,
            complete_again_succeeds,
            entity_too_small,
            parts_out_of_order_refused,
            unknown_part_or_etag_is_invalid_part,
            wrong_crc32c_at_complete_is_invalid_part,
            no_parts_refused,
            abort_leaves_nothing,
            list_parts_reports_sizes_and_crc32c,
            list_uploads_by_prefix,
            upload_id_is_bound_to_its_key,
            get_object_streams,
            tags_round_trip,
            small_objects_put_list_delete,
            put_if_absent_is_exclusive,
            spooled_parts_upload_from_their_files
        );
    };
}
