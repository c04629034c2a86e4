//! The SFTP source against a real OpenSSH sshd: byte-identical ranges, every kind of refusal with
//! its own error, resumption after killed sessions, and files that change around a read.
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use gzship_core::Error;
use gzship_core::error::chain;
use gzship_core::source::sftp::{HostKeyPolicy, SftpConfig, SftpSource, SftpTuning, SshAuth};
use gzship_core::source::{ByteStream, Source, SourceStat};
use gzship_core::types::{ByteRange, SourceUrl};
use gzship_testkit::data::{self, DataKind};
use gzship_testkit::sshd::{self, KeyKind, Sshd};

fn fast_tuning() -> SftpTuning {
    SftpTuning {
        backoff: gzship_core::backoff::Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
        ..SftpTuning::default()
    }
}

fn config(sshd: &Sshd, auth: SshAuth, host_key: HostKeyPolicy) -> SftpConfig {
    SftpConfig {
        host: sshd.host().into(),
        port: sshd.port(),
        user: sshd.user().into(),
        auth,
        host_key,
        tuning: fast_tuning(),
    }
}

fn key_auth(sshd: &Sshd) -> SshAuth {
    SshAuth::private_key(sshd.client_key().private_key_pem.clone(), None)
}

fn pinned(sshd: &Sshd) -> HostKeyPolicy {
    HostKeyPolicy::fingerprint(sshd.host_key_fingerprint()).unwrap()
}

fn source(sshd: &Sshd, tuning: SftpTuning) -> SftpSource {
    SftpSource::new(config(sshd, key_auth(sshd), pinned(sshd)).with_tuning(tuning)).unwrap()
}

fn put(sshd: &Sshd, name: &str, kind: DataKind, len: u64, seed: u64) -> (PathBuf, String) {
    let path = sshd.data_dir().join(name);
    data::write_file(&path, kind, len, seed).unwrap();
    let remote = path.to_str().unwrap().to_owned();
    (path, remote)
}

async fn collect(stream: ByteStream) -> (Vec<u8>, Option<Error>) {
    let mut out = Vec::new();
    let mut stream = stream;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

async fn read(src: &SftpSource, path: &str, range: ByteRange, expect: SourceStat) -> Vec<u8> {
    let (bytes, err) = collect(src.read_range(path, range, expect).await.unwrap()).await;
    if let Some(e) = err {
        panic!("read {range} of {path}: {}", chain(&e));
    }
    bytes
}

fn range(start: u64, end: u64) -> ByteRange {
    ByteRange::new(start, end).unwrap()
}

#[tokio::test]
async fn ranges_are_byte_identical_to_the_file() {
    let sshd = Sshd::start();
    let len = 3 * 1024 * 1024 + 12_345;
    let (local, remote) = put(&sshd, "access.log", DataKind::Logs, len, 1);
    let want = std::fs::read(&local).unwrap();
    // Small READs so that ranges span many of them, and few in flight so that they queue.
    let small = source(
        &sshd,
        SftpTuning {
            request_size: 16 * 1024,
            requests_in_flight: 3,
            ..fast_tuning()
        },
    );
    let default = source(&sshd, fast_tuning());
    let two_conns = source(
        &sshd,
        SftpTuning {
            request_size: 20_000,
            connections: 2,
            ..fast_tuning()
        },
    );
    let expect = default.stat(&remote).await.unwrap();
    assert_eq!(expect.size, len);
    assert!(expect.is_file);
    let ranges = [
        range(0, 0),
        range(len, len),
        range(0, 1),
        range(len - 1, len),
        range(12_345, 1_000_001),
        range(16 * 1024 - 1, 16 * 1024 + 1),
        range(1, len - 1),
        range(0, len),
    ];
    for src in [&small, &default, &two_conns] {
        for r in ranges {
            let got = read(src, &remote, r, expect).await;
            assert!(
                got == want[r.start() as usize..r.end() as usize],
                "range {r} differs (got {} bytes)",
                got.len()
            );
        }
    }
}

#[tokio::test]
async fn multi_mib_file_over_one_and_two_connections() {
    let sshd = Sshd::start();
    let len = 40 * 1024 * 1024 + 7;
    let (local, remote) = put(&sshd, "random.bin", DataKind::Random, len, 2);
    let want = data::sha256_file(&local).unwrap();
    for connections in [1, 2] {
        let src = source(
            &sshd,
            SftpTuning {
                connections,
                requests_in_flight: 8,
                ..fast_tuning()
            },
        );
        let expect = src.stat(&remote).await.unwrap();
        let got = read(&src, &remote, range(0, len), expect).await;
        assert_eq!(got.len() as u64, len);
        assert_eq!(data::sha256(&got), want, "{connections} connections");
    }
}

#[tokio::test]
async fn every_credential_kind_logs_in() {
    let sshd = Sshd::start();
    let (_, remote) = put(&sshd, "f", DataKind::Zeros, 1000, 0);
    let keys = [
        sshd.new_client_key(KeyKind::Rsa, None, true),
        sshd.new_client_key(KeyKind::Ecdsa, None, true),
        sshd.new_client_key(KeyKind::Ed25519, Some("s3cret phrase"), true),
    ];
    for key in &keys {
        let auth =
            SshAuth::private_key_file(&key.private_key_path, key.passphrase.as_deref()).unwrap();
        let src = SftpSource::new(config(&sshd, auth, pinned(&sshd))).unwrap();
        let stat = src.stat(&remote).await;
        assert_eq!(stat.unwrap().size, 1000, "{:?} key", key.kind);
    }
    let mut cfg = config(&sshd, SshAuth::password(sshd::PASSWORD), pinned(&sshd));
    cfg.user = sshd::PASSWORD_USER.into();
    let src = SftpSource::new(cfg).unwrap();
    assert_eq!(src.stat(&remote).await.unwrap().size, 1000);
    assert!(
        !format!("{src:?}").contains(sshd::PASSWORD),
        "Debug shows the password"
    );
    let log = sshd.log();
    assert!(log.contains("Accepted password for gzship-test"), "{log}");
    assert!(
        log.contains("Accepted publickey") && log.contains("RSA SHA256:"),
        "{log}"
    );
}

#[tokio::test]
async fn known_hosts_plain_hashed_and_accept_any() {
    let sshd = Sshd::start();
    let (_, remote) = put(&sshd, "f", DataKind::Zeros, 10, 0);
    let other = sshd.new_client_key(KeyKind::Ed25519, None, false);
    let policies = [
        HostKeyPolicy::known_hosts(&sshd.known_hosts_line()),
        HostKeyPolicy::known_hosts(&format!(
            "# comment\nexample.com {}\n{}\n",
            other.public_key,
            sshd.hashed_known_hosts_line()
        )),
        HostKeyPolicy::AcceptAny,
    ];
    for policy in policies {
        let src = SftpSource::new(config(&sshd, key_auth(&sshd), policy.clone())).unwrap();
        assert_eq!(src.stat(&remote).await.unwrap().size, 10, "{policy:?}");
    }
    let kh_file = sshd.data_dir().join("known_hosts");
    std::fs::write(&kh_file, sshd.hashed_known_hosts_line()).unwrap();
    let policy = HostKeyPolicy::known_hosts_file(&kh_file).unwrap();
    let src = SftpSource::new(config(&sshd, key_auth(&sshd), policy)).unwrap();
    assert_eq!(src.stat(&remote).await.unwrap().size, 10);
}

fn assert_names(err: &Error, words: &[&str]) {
    let text = chain(err).to_lowercase();
    for w in words {
        assert!(
            text.contains(&w.to_lowercase()),
            "{w:?} missing from: {text}"
        );
    }
}

#[tokio::test]
async fn wrong_pinned_host_key_is_rejected() {
    let sshd = Sshd::start();
    let other = sshd.new_client_key(KeyKind::Ed25519, None, false);
    let pub_path = other.private_key_path.with_extension("pub");
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&pub_path)
        .output()
        .unwrap();
    let wrong = String::from_utf8(out.stdout).unwrap();
    let wrong = wrong.split_whitespace().nth(1).unwrap();
    let src = SftpSource::new(config(
        &sshd,
        key_auth(&sshd),
        HostKeyPolicy::fingerprint(wrong).unwrap(),
    ))
    .unwrap();
    let err = src.stat("/etc/hostname").await.unwrap_err();
    match &err {
        Error::HostKey {
            addr, presented, ..
        } => {
            assert_eq!(addr, &format!("127.0.0.1:{}", sshd.port()));
            assert_eq!(presented, sshd.host_key_fingerprint());
        }
        e => panic!("expected HostKey, got {}", chain(e)),
    }
    assert_names(
        &err,
        &["host key of 127.0.0.1", sshd.host_key_fingerprint(), wrong],
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn host_missing_from_known_hosts_is_rejected() {
    let sshd = Sshd::start();
    // The right key, but for port 22 and for another host: neither is this server.
    let key = sshd.host_public_key();
    let policy = HostKeyPolicy::known_hosts(&format!("127.0.0.1 {key}\nexample.com {key}\n"));
    let src = SftpSource::new(config(&sshd, key_auth(&sshd), policy)).unwrap();
    let err = src.stat("/etc/hostname").await.unwrap_err();
    assert!(matches!(err, Error::HostKey { .. }), "{}", chain(&err));
    assert_names(
        &err,
        &[
            "not trusted",
            "no entry",
            &format!("[127.0.0.1]:{}", sshd.port()),
        ],
    );

    // Listed with another key: a changed key.
    let other = sshd.new_client_key(KeyKind::Ed25519, None, false);
    let policy = HostKeyPolicy::known_hosts(&format!(
        "[127.0.0.1]:{} {}\n",
        sshd.port(),
        other.public_key
    ));
    let src = SftpSource::new(config(&sshd, key_auth(&sshd), policy)).unwrap();
    let err = src.stat("/etc/hostname").await.unwrap_err();
    assert!(matches!(err, Error::HostKey { .. }), "{}", chain(&err));
    assert_names(&err, &["other keys", "line"]);
}

#[tokio::test]
async fn wrong_private_key_and_wrong_password_are_refused() {
    let sshd = Sshd::start();
    let stranger = sshd.new_client_key(KeyKind::Ed25519, None, false);
    let auth = SshAuth::private_key(stranger.private_key_pem.clone(), None);
    let src = SftpSource::new(config(&sshd, auth, pinned(&sshd))).unwrap();
    let err = src.stat("/etc/hostname").await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::SshAuth {
                method: "private key",
                ..
            }
        ),
        "{}",
        chain(&err)
    );
    assert_names(
        &err,
        &["authenticate as", sshd.user(), "private key", "refused"],
    );
    assert!(!err.is_retryable());

    let mut cfg = config(&sshd, SshAuth::password("not the password"), pinned(&sshd));
    cfg.user = sshd::PASSWORD_USER.into();
    let err = SftpSource::new(cfg)
        .unwrap()
        .stat("/etc/hostname")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::SshAuth {
                method: "password",
                ..
            }
        ),
        "{}",
        chain(&err)
    );
    assert_names(
        &err,
        &[
            "authenticate as",
            sshd::PASSWORD_USER,
            "password",
            "refused",
        ],
    );

    // A wrong passphrase is caught before any connection.
    let locked = sshd.new_client_key(KeyKind::Ed25519, Some("right"), true);
    let auth = SshAuth::private_key(locked.private_key_pem.clone(), Some("wrong"));
    let err = SftpSource::new(config(&sshd, auth, pinned(&sshd))).unwrap_err();
    assert!(matches!(&err, Error::Invalid { .. }), "{}", chain(&err));
    assert_names(&err, &["private key", "passphrase"]);
}

#[tokio::test]
async fn missing_file_and_directory_get_their_own_errors() {
    let sshd = Sshd::start();
    let src = source(&sshd, fast_tuning());
    let missing = sshd.data_dir().join("nope.log");
    let missing = missing.to_str().unwrap();
    let err = src.stat(missing).await.unwrap_err();
    assert!(matches!(&err, Error::SftpStat { .. }), "{}", chain(&err));
    assert_names(&err, &[&format!("stat {missing}"), "no such file"]);

    let dir = sshd.data_dir();
    let dir = dir.to_str().unwrap();
    let stat = src.stat(dir).await.unwrap();
    assert!(!stat.is_file);
    let err = src.read_range(dir, range(0, 0), stat).await.err().unwrap();
    assert!(matches!(&err, Error::NotAFile { .. }), "{}", chain(&err));
    assert_names(&err, &[dir, "not a regular file"]);
    // Even when the caller believes it is a file.
    let err = src
        .read_range(
            dir,
            range(0, 0),
            SourceStat {
                is_file: true,
                ..stat
            },
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(&err, Error::NotAFile { .. }), "{}", chain(&err));
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    let sshd = Sshd::start();
    // A port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(&sshd, key_auth(&sshd), pinned(&sshd));
    cfg.port = port;
    cfg.tuning.handshake_attempts = 3;
    let err = SftpSource::new(cfg).unwrap().stat("/x").await.unwrap_err();
    assert!(matches!(&err, Error::SshConnect { .. }), "{}", chain(&err));
    assert_names(
        &err,
        &[
            &format!("connect to ssh server 127.0.0.1:{port}"),
            "after 3 attempts",
            "refused",
        ],
    );
    assert!(err.is_retryable());
}

/// A TCP proxy in front of sshd that drops its first `drops` connections at once, as OpenSSH
/// does past `MaxStartups`.
async fn dropping_proxy(target_port: u16, drops: usize) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            n += 1;
            if n <= drops {
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(("127.0.0.1", target_port))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn dropped_handshakes_are_retried() {
    let sshd = Sshd::start();
    let (_, remote) = put(&sshd, "f", DataKind::Logs, 5000, 3);
    let port = dropping_proxy(sshd.port(), 2).await;
    let mut cfg = config(&sshd, key_auth(&sshd), pinned(&sshd));
    cfg.port = port;
    cfg.tuning.handshake_attempts = 3;
    let src = SftpSource::new(cfg).unwrap();
    assert_eq!(src.stat(&remote).await.unwrap().size, 5000);

    // One retry too few fails, naming the attempts.
    let port = dropping_proxy(sshd.port(), 3).await;
    let mut cfg = config(&sshd, key_auth(&sshd), pinned(&sshd));
    cfg.port = port;
    cfg.tuning.handshake_attempts = 3;
    let err = SftpSource::new(cfg)
        .unwrap()
        .stat(&remote)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::SshConnect { .. }), "{}", chain(&err));
    assert_names(&err, &["after 3 attempts", "handshake"]);
}

#[tokio::test]
async fn killed_sessions_are_resumed_without_gaps_or_duplicates() {
    let sshd = Sshd::start();
    let len = 2 * 1024 * 1024 + 333;
    let (local, remote) = put(&sshd, "access.log", DataKind::Logs, len, 4);
    let want = std::fs::read(&local).unwrap();
    for connections in [1, 2] {
        let src = source(
            &sshd,
            SftpTuning {
                request_size: 16 * 1024,
                requests_in_flight: 2,
                connections,
                ..fast_tuning()
            },
        );
        let expect = src.stat(&remote).await.unwrap();
        let r = range(1000, len - 1000);
        let mut stream = src.read_range(&remote, r, expect).await.unwrap();
        let mut got = Vec::new();
        // Read a first part, kill the sessions while the reader waits, twice; then the rest.
        for round in 1..=2 {
            while got.len() < round * 300 * 1024 {
                got.extend_from_slice(&stream.next().await.unwrap().unwrap());
            }
            assert!(sshd.kill_sessions() >= connections);
            got.extend_from_slice(&stream.next().await.unwrap().unwrap());
            got.extend_from_slice(&stream.next().await.unwrap().unwrap());
        }
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got.len() as u64, r.len());
        assert!(
            got == want[1000..len as usize - 1000],
            "resumed bytes differ"
        );
    }
    let logins = sshd.log().matches("Accepted publickey").count();
    // stat + (1 + 2 reconnects) for one connection, stat + 2 * 3 for two.
    assert!(
        logins >= 2 + 3 + 6,
        "expected reconnects, sshd log shows {logins} logins"
    );
}

#[tokio::test]
async fn a_file_that_changed_before_the_read_fails_before_any_byte() {
    let sshd = Sshd::start();
    let (_, remote) = put(&sshd, "f", DataKind::Logs, 100_000, 5);
    let src = source(&sshd, fast_tuning());
    let now = src.stat(&remote).await.unwrap();
    let cases = [
        (
            SourceStat {
                size: 99_999,
                ..now
            },
            range(0, 10),
            "size is 100000 bytes, expected 99999",
        ),
        (
            SourceStat {
                mtime: now.mtime - 10,
                ..now
            },
            range(0, 10),
            "mtime is",
        ),
        (now, range(0, 100_001), "fewer than the end of range"),
    ];
    for (expect, r, words) in cases {
        let err = src.read_range(&remote, r, expect).await.err().unwrap();
        assert!(
            matches!(&err, Error::SourceChanged { .. }),
            "{}",
            chain(&err)
        );
        assert_names(&err, &[&remote, "changed", words]);
        assert!(!err.is_retryable());
    }
    // A file deleted since the stat.
    std::fs::remove_file(sshd.data_dir().join("f")).unwrap();
    let err = src
        .read_range(&remote, range(0, 10), now)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::SourceChanged { .. }),
        "{}",
        chain(&err)
    );
    assert_names(&err, &["no longer exists"]);
}

/// Reads the first chunk, runs `change` on the local file, then reads on: the stream must end
/// with SourceChanged, and whatever it delivered must be a prefix of the original bytes.
async fn change_during_read(name: &str, change: impl FnOnce(&Path)) -> Error {
    let sshd = Sshd::start();
    let len = 2 * 1024 * 1024;
    let (local, remote) = put(&sshd, name, DataKind::Logs, len, 6);
    let want = std::fs::read(&local).unwrap();
    let src = source(
        &sshd,
        SftpTuning {
            request_size: 16 * 1024,
            requests_in_flight: 1,
            ..fast_tuning()
        },
    );
    let expect = src.stat(&remote).await.unwrap();
    let mut stream = src
        .read_range(&remote, range(0, len), expect)
        .await
        .unwrap();
    let mut got = stream.next().await.unwrap().unwrap().to_vec();
    change(&local);
    let (rest, err) = collect(stream).await;
    got.extend_from_slice(&rest);
    assert!(
        got.len() < len as usize,
        "a changed file was delivered whole"
    );
    assert!(
        got == want[..got.len()],
        "delivered bytes are not the original ones"
    );
    let err = err.expect("the read must fail");
    assert!(
        matches!(&err, Error::SourceChanged { .. }),
        "{}",
        chain(&err)
    );
    err
}

#[tokio::test]
async fn a_file_truncated_during_the_read_fails() {
    let err = change_during_read("t.log", |p| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(1024 * 1024)
            .unwrap();
    })
    .await;
    assert_names(&err, &["ends at byte 1048576"]);
}

#[tokio::test]
async fn a_file_appended_to_during_the_read_fails() {
    let err = change_during_read("a.log", |p| {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(b"one more line\n").unwrap();
    })
    .await;
    assert_names(&err, &["size is 2097166 bytes, expected 2097152"]);
}

#[tokio::test]
async fn a_file_touched_during_the_read_fails() {
    let err = change_during_read("m.log", |p| {
        let status = std::process::Command::new("touch")
            .arg("-d")
            .arg("@1000000000")
            .arg(p)
            .status()
            .unwrap();
        assert!(status.success());
    })
    .await;
    assert_names(&err, &["mtime is 1000000000"]);
}

#[test]
fn config_from_url_and_validation() {
    let url: SourceUrl = "sftp://alice@example.com:2222/var/log/app.log"
        .parse()
        .unwrap();
    let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let cfg = SftpConfig::from_url(
        &url,
        None,
        SshAuth::password("hunter2"),
        HostKeyPolicy::fingerprint(fp).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (cfg.user.as_str(), cfg.addr().as_str()),
        ("alice", "example.com:2222")
    );
    assert!(!format!("{cfg:?}").contains("hunter2"));

    let url: SourceUrl = "sftp://[::1]/x".parse().unwrap();
    let auth = || SshAuth::password("p");
    let cfg = SftpConfig::from_url(&url, Some("bob"), auth(), HostKeyPolicy::AcceptAny).unwrap();
    assert_eq!(
        (cfg.user.as_str(), cfg.addr().as_str()),
        ("bob", "[::1]:22")
    );
    assert!(SftpConfig::from_url(&url, None, auth(), HostKeyPolicy::AcceptAny).is_err());

    for bad in [
        "",
        "MD5:aa:bb",
        "SHA256:short",
        "sha256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
    ] {
        assert!(HostKeyPolicy::fingerprint(bad).is_err(), "{bad:?}");
    }
    let bad_tunings = [
        SftpTuning {
            request_size: 10,
            ..SftpTuning::default()
        },
        SftpTuning {
            requests_in_flight: 0,
            ..SftpTuning::default()
        },
        SftpTuning {
            connections: 0,
            ..SftpTuning::default()
        },
        SftpTuning {
            handshake_attempts: 0,
            ..SftpTuning::default()
        },
        SftpTuning {
            ciphers: vec![],
            ..SftpTuning::default()
        },
        SftpTuning {
            max_packet_size: 100_000,
            ..SftpTuning::default()
        },
    ];
    for t in bad_tunings {
        let err = cfg.clone().with_tuning(t).validate().unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }));
    }
}
