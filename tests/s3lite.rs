//! gzship-s3lite beyond the store conformance suite (which runs against it in
//! `conformance::store`): its storage modes and ETag kinds, the part checksum it checks and moto
//! does not, paged listings, and the `put` client; through gzship's real `S3Store`.

use bytes::Bytes;
use gzship_core::ObjectUrl;
use gzship_core::error::chain;
use gzship_core::store::s3::S3Store;
use gzship_core::store::{MultipartStore, ObjectStore, UploadedPart};
use gzship_core::types::MIN_PART_SIZE;
use gzship_s3lite::{Config, EtagKind, Server, Storage};
use gzship_testkit::conformance::store::{meta, part, read_all};
use gzship_testkit::data::{DataKind, generate};

const BUCKET: &str = "bench";

async fn server(storage: Storage, etag: EtagKind) -> (Server, S3Store) {
    let server = Server::start(Config {
        storage,
        etag,
        buckets: vec![BUCKET.into()],
    })
    .await
    .unwrap();
    let store = gzship_testkit::s3::store_at(&server.endpoint_url());
    (server, store)
}

fn dest(key: &str) -> ObjectUrl {
    format!("s3://{BUCKET}/{key}").parse().unwrap()
}

/// Create, upload parts with a gap and out of order, list, complete, head, get: the object is
/// the parts' bytes in part-number order, with gzship's metadata and S3's composite CRC32C.
async fn round_trip(storage: Storage, etag: EtagKind) {
    let keeps_bodies = storage != Storage::Discard;
    let (_server, store) = server(storage, etag).await;
    let d = dest("logs/access.log.gz");
    let id = store.create_upload(&d, &meta()).await.unwrap();
    let a = Bytes::from(generate(DataKind::Random, MIN_PART_SIZE as usize, 1));
    let b = Bytes::from(generate(DataKind::Logs, 6 << 20, 2));
    let c = Bytes::from_static(b"the short last part");
    let mut parts: Vec<UploadedPart> = Vec::new();
    // Part 9 first, then 1 and 4: gaps and any order, as gzship's part windows do.
    for (num, body) in [(9, c.clone()), (1, a.clone()), (4, b.clone())] {
        parts.push(
            store
                .upload_part(&d, &id, part(num), body.into())
                .await
                .unwrap(),
        );
    }
    parts.sort_by_key(|p| p.number);

    let listed = store.list_parts(&d, &id).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.number.get()).collect::<Vec<_>>(),
        [1, 4, 9]
    );
    for (l, p) in listed.iter().zip(&parts) {
        assert_eq!(
            (l.etag.as_str(), l.size, l.crc32c),
            (p.etag.as_str(), p.size, Some(p.crc32c))
        );
    }
    let open = store.list_uploads(BUCKET, "logs/").await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].upload_id, id);
    assert!(
        store
            .list_uploads(BUCKET, "other/")
            .await
            .unwrap()
            .is_empty()
    );

    store.complete_upload(&d, &id, &parts).await.unwrap();
    assert!(store.list_uploads(BUCKET, "").await.unwrap().is_empty());
    let (size, got_meta) = store.head_object(&d).await.unwrap().expect("object exists");
    assert_eq!(size, (a.len() + b.len() + c.len()) as u64);
    assert_eq!(got_meta, meta());
    // The composite CRC32C is S3's: gzship recognises its own completed object by it.
    assert!(store.holds_parts(&d, &parts).await);
    assert!(!store.holds_parts(&d, &parts[..2]).await);
    assert!(store.head_object(&dest("missing")).await.unwrap().is_none());
    if keeps_bodies {
        assert_eq!(
            read_all(&store, &d).await,
            [&a[..], &b[..], &c[..]].concat()
        );
    }
}

#[tokio::test]
async fn round_trip_in_memory_with_md5_etags() {
    round_trip(Storage::Memory, EtagKind::Md5).await;
}

#[tokio::test]
async fn round_trip_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(Storage::Dir(dir.path().to_owned()), EtagKind::Crc32c).await;
    let file = dir.path().join(BUCKET).join("logs/access.log.gz");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        MIN_PART_SIZE + (6 << 20) + 19
    );
    // Part files are gone once the object is assembled.
    assert_eq!(
        std::fs::read_dir(dir.path().join(".uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn discarded_bodies_still_complete_and_head() {
    let (_server, store) = server(Storage::Discard, EtagKind::Crc32c).await;
    let d = dest("k");
    let id = store.create_upload(&d, &meta()).await.unwrap();
    let p = store
        .upload_part(&d, &id, part(1), Bytes::from_static(b"x").into())
        .await
        .unwrap();
    store
        .complete_upload(&d, &id, std::slice::from_ref(&p))
        .await
        .unwrap();
    assert_eq!(store.head_object(&d).await.unwrap().unwrap().0, 1);
    assert!(store.holds_parts(&d, &[p]).await);
    let err = store.get_object(&d).await.err().expect("bodies are gone");
    assert!(chain(&err).contains("NotImplemented"), "{}", chain(&err));
}

/// A benchmark's server discards part bodies, but jobs read their records back: objects put
/// whole are kept in every storage mode.
#[tokio::test]
async fn put_objects_are_kept_when_bodies_are_discarded() {
    let (_server, store) = server(Storage::Discard, EtagKind::Crc32c).await;
    let d = dest(".gzship/jobs/j/job.json");
    store
        .put_object(&d, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(read_all(&store, &d).await, b"{}");
    let listed = store.list_objects(&d.bucket, ".gzship/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, d.key);
}

/// UploadPart checks the CRC32C sent with the part, as S3 does (`BadDigest`); moto does not
/// (`conformance::store::moto_quirk_accepts_a_wrong_crc32c`). Complete's own refusals are the
/// store suite's.
#[tokio::test]
async fn a_part_with_a_wrong_crc32c_is_bad_digest() {
    let (_server, store) = server(Storage::Discard, EtagKind::Crc32c).await;
    let d = dest("bad");
    let id = store.create_upload(&d, &meta()).await.unwrap();
    let err = store
        .upload_part_with_crc32c(&d, &id, part(1), Bytes::from_static(b"abc"), 1)
        .await
        .unwrap_err();
    assert_eq!(err.s3_code(), Some("BadDigest"), "{}", chain(&err));
    assert!(store.list_parts(&d, &id).await.unwrap().is_empty());
    store.abort_upload(&d, &id).await.unwrap();
}

#[tokio::test]
async fn listings_page() {
    let (_server, store) = server(Storage::Discard, EtagKind::Crc32c).await;
    let client = store.client();
    let d = dest("paged");
    let id = store.create_upload(&d, &meta()).await.unwrap();
    for p in 1..=5 {
        store
            .upload_part(&d, &id, part(p * 2), Bytes::from_static(b"p").into())
            .await
            .unwrap();
    }
    let page = client
        .list_parts()
        .bucket(BUCKET)
        .key("paged")
        .upload_id(id.as_str())
        .max_parts(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(page.next_part_number_marker(), Some("4"));
    // S3Store follows the markers.
    assert_eq!(store.list_parts(&d, &id).await.unwrap().len(), 5);
    for i in 0..3 {
        store
            .create_upload(&dest(&format!("u{i}")), &meta())
            .await
            .unwrap();
    }
    let page = client
        .list_multipart_uploads()
        .bucket(BUCKET)
        .max_uploads(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.uploads().len(), 2);
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(store.list_uploads(BUCKET, "").await.unwrap().len(), 4);
    let err = store.list_uploads("no-such-bucket", "").await.unwrap_err();
    assert!(chain(&err).contains("NoSuchBucket"), "{}", chain(&err));
}

#[tokio::test]
async fn put_uploads_a_stream_in_parts() {
    let (server, store) = server(Storage::Memory, EtagKind::Md5).await;
    let data = generate(DataKind::Logs, (12 << 20) + 5, 3);
    let options = gzship_s3lite::put::PutOptions {
        part_size: 5 << 20,
        in_flight: 2,
    };
    let report = gzship_s3lite::put::put(store.client(), BUCKET, "put.log", &data[..], options)
        .await
        .unwrap();
    assert_eq!(report.bytes, data.len() as u64);
    assert_eq!(report.parts, 3);
    assert_eq!(read_all(&store, &dest("put.log")).await, data);
    // An empty input is an empty object.
    gzship_s3lite::put::put(store.client(), BUCKET, "empty", &b""[..], options)
        .await
        .unwrap();
    assert_eq!(
        store.head_object(&dest("empty")).await.unwrap().unwrap().0,
        0
    );
    server.stop().await.unwrap();
}

/// ListParts with `part-number-marker=4294967295` (the s3lite_http fuzz target's corpus input
/// list_parts_max_marker)
/// overflowed `marker + 1` (a panic that dropped the connection in a debug build; a listing
/// from part 0 in a release build). It lists nothing, as S3 does.
#[tokio::test]
async fn list_parts_after_the_largest_marker_is_empty() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, store) = server(Storage::Memory, EtagKind::Crc32c).await;
    let d = dest("marker.gz");
    let id = store.create_upload(&d, &meta()).await.unwrap();
    store
        .upload_part(&d, &id, part(1), Bytes::from_static(b"x").into())
        .await
        .unwrap();
    let mut conn = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let request = format!(
        "GET /{BUCKET}/marker.gz?uploadId={}&part-number-marker=4294967295 HTTP/1.1\r\n\
         host: s3\r\nconnection: close\r\n\r\n",
        id.as_str()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(!reply.contains("<Part>"), "{reply}");
}
