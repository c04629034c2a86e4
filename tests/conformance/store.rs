//! The store conformance suite (`gzship_testkit::conformance::store`) against every backend:
//! moto's S3 server, the local store and gzship-s3lite, one test per check and backend
//! (`conformance::store::<check>::{moto, local, s3lite}`); then what is particular to one
//! backend. Every moto or s3lite test starts its own server, every local test has its own
//! directory.

use std::time::Duration;

use gzship_core::error::chain;
use gzship_core::store::local::LocalStore;
use gzship_core::store::s3::{S3Config, S3Store};
use gzship_core::store::{MultipartStore, ObjectStore};
use gzship_core::types::MIN_PART_SIZE;
use gzship_core::{Error, ObjectUrl, UploadId};
use gzship_testkit::conformance::store::{
    BUCKET, assert_no_local_leftovers, body, dest, local, meta, moto, part, read_all, upload,
};

/// Each check becomes a module with a `moto`, a `local` and an `s3lite` test.
macro_rules! store_tests {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use gzship_testkit::conformance::store::{self as suite, Behaviour};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn moto() {
                let (_server, store) = suite::moto().await;
                suite::$check(&store, &suite::dest(stringify!($check)), Behaviour::MOTO).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                let (dir, store) = suite::local();
                suite::$check(&store, &suite::dest(stringify!($check)), Behaviour::S3).await;
                suite::assert_no_local_leftovers(dir.path());
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3lite() {
                let (_server, store) = suite::s3lite().await;
                suite::$check(&store, &suite::dest(stringify!($check)), Behaviour::S3LITE).await;
            }
        }
    )*};
}

gzship_testkit::for_each_store_check!(store_tests);

// ---------------------------------------------------------------------------------------------
// Backend-specific behaviour.

/// A part upload to a server that is gone fails with an `Error::S3` that names the part, is
/// retryable (the server may come back), and does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_stopped_server_fails_part_upload_fast() {
    let (mut server, store) = moto().await;
    let dest = dest("stopped");
    let id = store.create_upload(&dest, &meta()).await.unwrap();
    server.stop();
    // A guard against a hang, not a performance threshold.
    let res = tokio::time::timeout(
        Duration::from_secs(120),
        store.upload_part(&dest, &id, part(7), body(90, 1000).into()),
    )
    .await
    .expect("upload_part to a stopped server hung");
    let err = res.expect_err("the server is gone");
    let text = chain(&err);
    assert!(
        text.starts_with(&format!("upload part 7 of {dest}")),
        "{text}"
    );
    assert!(
        matches!(
            err,
            Error::S3 {
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

/// moto's composite CRC32C of a multipart object (with the crc32c package installed) is the one
/// `S3Store` expects, so a retried Complete that finds no upload recognises the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_object_checksum_matches_the_parts() {
    let (_server, store) = moto().await;
    let dest = dest("composite");
    let id = store.create_upload(&dest, &meta()).await.unwrap();
    let parts = vec![
        upload(&store, &dest, &id, 1, &body(120, MIN_PART_SIZE as usize)).await,
        upload(&store, &dest, &id, 4, &body(121, 1000)).await,
    ];
    assert!(!store.holds_parts(&dest, &parts).await, "no object yet");
    store.complete_upload(&dest, &id, &parts).await.unwrap();
    assert!(store.holds_parts(&dest, &parts).await);
    let mut other = parts.clone();
    other[0].crc32c ^= 1;
    assert!(!store.holds_parts(&dest, &other).await);
    assert!(!store.holds_parts(&dest, &parts[..1]).await);
}

/// A server that accepts connections but never answers: the attempt timeout ends the request
/// with a retryable error instead of a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_times_out_on_a_silent_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let config = S3Config {
        endpoint_url: Some(format!("http://{addr}")),
        force_path_style: true,
        max_attempts: 1,
        attempt_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(5),
        ..S3Config::default()
    };
    let store = S3Store::new(&gzship_testkit::s3::sdk_config(), &config);
    let dest = dest("silent");
    let id = UploadId::new("some-upload").unwrap();
    // A guard against a hang, not a performance threshold.
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        store.upload_part(&dest, &id, part(3), body(92, 1000).into()),
    )
    .await
    .expect("upload_part to a silent server hung");
    let err = res.expect_err("the server never answers");
    let text = chain(&err);
    assert!(
        text.starts_with(&format!("upload part 3 of {dest}")),
        "{text}"
    );
    assert!(text.contains("timeout"), "{text}");
    assert!(err.is_retryable(), "{err:?}");
    hold.abort();
}

/// An UploadPart is sent with its CRC32C and an unsigned payload (`x-amz-content-sha256:
/// UNSIGNED-PAYLOAD`): SigV4 does not hash the body a second time (issue 15). Read off the
/// wire by a listener that answers like S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_sends_parts_with_their_crc32c_and_an_unsigned_payload() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = body(93, 1000);
    let len = b.len();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // The head, then the body's bytes.
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before its request head");
            request.extend_from_slice(&buf[..n]);
        }
        let head_len = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        while request.len() < head_len + len {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before its body");
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nETag: \"0123456789abcdef0123456789abcdef\"\r\n\
              Content-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
        String::from_utf8_lossy(&request[..head_len]).to_lowercase()
    });
    let config = S3Config {
        endpoint_url: Some(format!("http://{addr}")),
        force_path_style: true,
        max_attempts: 1,
        ..S3Config::default()
    };
    let store = S3Store::new(&gzship_testkit::s3::sdk_config(), &config);
    let id = UploadId::new("some-upload").unwrap();
    store
        .upload_part(&dest("unsigned"), &id, part(2), b.clone().into())
        .await
        .unwrap();
    let head = server.await.unwrap();
    assert!(head.starts_with("put /"), "{head}");
    assert!(
        head.contains("x-amz-content-sha256: unsigned-payload\r\n"),
        "{head}"
    );
    // S3's header form of a CRC32C: base64 of its four big-endian bytes.
    let crc = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        crc32c::crc32c(&b).to_be_bytes(),
    )
    .to_lowercase();
    assert!(
        head.contains(&format!("x-amz-checksum-crc32c: {crc}\r\n")),
        "{head}"
    );
}

/// moto does not check the CRC32C sent with a part (S3 answers `BadDigest`): this pins the
/// quirk, so that nobody takes a green moto run as proof that checksums are enforced, and so
/// that a moto that starts checking is noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_quirk_accepts_a_wrong_crc32c() {
    let (_server, store) = moto().await;
    let dest = dest("bad-checksum");
    let id = store.create_upload(&dest, &meta()).await.unwrap();
    let b = body(95, 1000);
    let wrong = crc32c::crc32c(&b) ^ 1;
    let res = store
        .upload_part_with_crc32c(&dest, &id, part(1), b.clone(), wrong)
        .await;
    assert!(
        res.is_ok(),
        "moto now refuses a wrong CRC32C: make this a check of S3's BadDigest: {}",
        chain(&res.unwrap_err())
    );
    store.abort_upload(&dest, &id).await.unwrap();
}

/// Complete never leaves a partial object at the key: a failed Complete keeps an earlier object
/// intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_failed_complete_keeps_previous_object() {
    let (dir, store) = local();
    let dest = dest("keep");
    let old = body(100, 100);
    let id = store.create_upload(&dest, &meta()).await.unwrap();
    let p = upload(&store, &dest, &id, 1, &old).await;
    store.complete_upload(&dest, &id, &[p]).await.unwrap();

    let id = store.create_upload(&dest, &meta()).await.unwrap();
    let parts = vec![
        upload(&store, &dest, &id, 1, &body(101, 10)).await,
        upload(&store, &dest, &id, 2, &body(102, 10)).await,
    ];
    assert!(store.complete_upload(&dest, &id, &parts).await.is_err());
    assert_eq!(read_all(&store, &dest).await, old.to_vec());
    store.abort_upload(&dest, &id).await.unwrap();
    assert_no_local_leftovers(dir.path());
}

/// Keys that would leave the bucket directory are refused before anything is written.
#[tokio::test]
async fn local_refuses_keys_that_escape() {
    let (dir, store) = local();
    for key in [
        "../escape.gz",
        "a/../../escape.gz",
        "a//b.gz",
        ".gzship-uploads/x",
    ] {
        let dest = ObjectUrl {
            bucket: BUCKET.into(),
            key: key.into(),
        };
        let err = store.create_upload(&dest, &meta()).await.expect_err(key);
        assert!(matches!(err, Error::Invalid { .. }), "{key}: {err:?}");
    }
    assert!(!dir.path().join("escape.gz").exists());
}

/// A missing bucket directory is `NoSuchBucket`, as on S3 (no directory is created).
#[tokio::test]
async fn local_missing_bucket_is_no_such_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path());
    let err = store
        .create_upload(&dest("nobucket"), &meta())
        .await
        .expect_err("no bucket directory");
    assert!(chain(&err).contains("NoSuchBucket"), "{}", chain(&err));
    assert!(!dir.path().join(BUCKET).exists());
}

/// `LocalStore::for_file` puts the object exactly at the given path.
#[tokio::test]
async fn local_for_file_writes_the_named_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.gz");
    let (store, dest) = LocalStore::for_file(&path).unwrap();
    let b = body(110, 1234);
    let id = store.create_upload(&dest, &meta()).await.unwrap();
    let p = upload(&store, &dest, &id, 1, &b).await;
    store.complete_upload(&dest, &id, &[p]).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b.to_vec());
    assert_eq!(
        store.head_object(&dest).await.unwrap().map(|h| h.1),
        Some(meta())
    );
}
