//! The conformance suite of the SFTP source ([`SftpSource`]), run against every SFTP server
//! gzship is tested with: OpenSSH's sshd ([`Backend::OpenSsh`], Debian's `sftp-server`, as on a
//! stock server), ProFTPD's mod_sftp ([`Backend::Proftpd`]), gzship-sftpd
//! ([`Backend::GzshipSftpd`], the server of `gzship demo`) and a paramiko server without FSTAT
//! ([`Backend::NoFstat`]). Byte-identical ranges over one and several connections, every
//! credential kind, every kind of refusal with its own error, retried handshakes, and files
//! that change around a read.
//!
//! Each check is a public async fn that takes the backend and starts its own server (a check
//! may need extra authorized keys, which gzship-sftpd and paramiko take only at start).
//! [`for_each_sftp_check!`] names the checks every backend runs;
//! [`killed_sessions_are_resumed_without_gaps_or_duplicates`] needs OpenSSH, whose sessions
//! are processes the test can kill; [`handles_are_closed_after_reads_and_failures`] needs
//! ProFTPD, which logs the handles a client left open; the paramiko server's variants check a
//! server without mtimes ([`a_server_without_mtimes_is_read_with_size_checks_alone`]) and one
//! without STAT ([`an_unsupported_operation_is_not_retried`]).
//!
//! [`for_each_sftp_check!`]: crate::for_each_sftp_check

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use gzship_core::Error;
use gzship_core::error::chain;
use gzship_core::source::sftp::{HostKeyPolicy, SftpConfig, SftpSource, SftpTuning, SshAuth};
use gzship_core::source::{ByteStream, Source, SourceStat};
use gzship_core::types::ByteRange;

use crate::data::{self, DataKind};
use crate::proftpd::{self, Proftpd};
use crate::pysftpd::{self, PySftpd};
use crate::sftpd::{self, Sftpd};
use crate::sshd::{self, ClientKey, KeyKind, Sshd, hash_known_hosts_line};

/// The SFTP servers the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// OpenSSH's sshd with Debian's `sftp-server` ([`Sshd`]).
    OpenSsh,
    /// gzship-sftpd, in this process ([`Sftpd`]).
    GzshipSftpd,
    /// ProFTPD's mod_sftp ([`Proftpd`]).
    Proftpd,
    /// A paramiko server whose handles do not implement FSTAT ([`PySftpd`]).
    NoFstat,
}

impl Backend {
    /// Starts a server of this kind; it also accepts one new key per `(kind, passphrase)` of
    /// `keys`, returned in that order.
    pub async fn start(self, keys: &[(KeyKind, Option<&str>)]) -> (Server, Vec<ClientKey>) {
        match self {
            Backend::OpenSsh => {
                let sshd = Sshd::start();
                let keys = keys
                    .iter()
                    .map(|(kind, passphrase)| sshd.new_client_key(*kind, *passphrase, true))
                    .collect();
                (Server::OpenSsh(sshd), keys)
            }
            Backend::GzshipSftpd => {
                let (sftpd, keys) = Sftpd::start_with_keys(keys).await;
                (Server::GzshipSftpd(sftpd), keys)
            }
            Backend::Proftpd => {
                let proftpd = Proftpd::start();
                let keys = keys
                    .iter()
                    .map(|(kind, passphrase)| proftpd.new_client_key(*kind, *passphrase, true))
                    .collect();
                (Server::Proftpd(proftpd), keys)
            }
            Backend::NoFstat => {
                let (server, keys) = PySftpd::start_with_keys(keys, pysftpd::Stat::Full);
                (Server::PySftpd(server), keys)
            }
        }
    }
}

/// A running server of either [`Backend`], with what the suite asks of it.
#[derive(Debug)]
pub enum Server {
    /// OpenSSH's sshd.
    OpenSsh(Sshd),
    /// gzship-sftpd.
    GzshipSftpd(Sftpd),
    /// ProFTPD's mod_sftp.
    Proftpd(Proftpd),
    /// The paramiko server, in any of its [`pysftpd::Stat`] variants.
    PySftpd(PySftpd),
}

impl Server {
    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match self {
            Server::OpenSsh(s) => s.port(),
            Server::GzshipSftpd(s) => s.port(),
            Server::Proftpd(s) => s.port(),
            Server::PySftpd(s) => s.port(),
        }
    }

    /// The user that logs in with [`Server::client_key`].
    pub fn user(&self) -> &str {
        match self {
            Server::OpenSsh(s) => s.user(),
            Server::GzshipSftpd(_) => sftpd::USER,
            Server::Proftpd(_) => proftpd::USER,
            Server::PySftpd(_) => pysftpd::USER,
        }
    }

    /// A user and the password it logs in with.
    pub fn password_login(&self) -> (&'static str, &'static str) {
        match self {
            Server::OpenSsh(_) => (sshd::PASSWORD_USER, sshd::PASSWORD),
            Server::GzshipSftpd(_) => (sftpd::USER, sftpd::PASSWORD),
            Server::Proftpd(_) => (proftpd::USER, proftpd::PASSWORD),
            Server::PySftpd(_) => (pysftpd::USER, pysftpd::PASSWORD),
        }
    }

    /// The host key's fingerprint, `SHA256:...`.
    pub fn host_key_fingerprint(&self) -> &str {
        match self {
            Server::OpenSsh(s) => s.host_key_fingerprint(),
            Server::GzshipSftpd(s) => s.host_key_fingerprint(),
            Server::Proftpd(s) => s.host_key_fingerprint(),
            Server::PySftpd(s) => s.host_key_fingerprint(),
        }
    }

    /// The host public key line (`ssh-ed25519 AAAA...`).
    pub fn host_public_key(&self) -> String {
        match self {
            Server::OpenSsh(s) => s.host_public_key().to_owned(),
            Server::GzshipSftpd(s) => s.host_public_key(),
            Server::Proftpd(s) => s.host_public_key().to_owned(),
            Server::PySftpd(s) => s.host_public_key().to_owned(),
        }
    }

    /// A known_hosts line for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        match self {
            Server::OpenSsh(s) => s.known_hosts_line(),
            Server::GzshipSftpd(s) => s.known_hosts_line(),
            Server::Proftpd(s) => s.known_hosts_line(),
            Server::PySftpd(s) => s.known_hosts_line(),
        }
    }

    /// An authorized ed25519 key of [`Server::user`], without passphrase.
    pub fn client_key(&self) -> &ClientKey {
        match self {
            Server::OpenSsh(s) => s.client_key(),
            Server::GzshipSftpd(s) => s.client_key(),
            Server::Proftpd(s) => s.client_key(),
            Server::PySftpd(s) => s.client_key(),
        }
    }

    /// A new key pair the server does not accept.
    pub fn new_unauthorized_key(&self, kind: KeyKind, passphrase: Option<&str>) -> ClientKey {
        match self {
            Server::OpenSsh(s) => s.new_client_key(kind, passphrase, false),
            Server::GzshipSftpd(s) => s.new_unauthorized_key(kind, passphrase),
            Server::Proftpd(s) => s.new_client_key(kind, passphrase, false),
            Server::PySftpd(s) => s.new_unauthorized_key(kind, passphrase),
        }
    }

    /// The local directory whose files the server serves.
    pub fn data_dir(&self) -> PathBuf {
        match self {
            Server::OpenSsh(s) => s.data_dir(),
            Server::GzshipSftpd(s) => s.data_dir(),
            Server::Proftpd(s) => s.data_dir(),
            Server::PySftpd(s) => s.data_dir(),
        }
    }

    /// The path a client asks for to read `name` of [`Server::data_dir`].
    pub fn remote_path(&self, name: &str) -> String {
        match self {
            Server::GzshipSftpd(s) => s.remote_path(name),
            _ => self.data_dir().join(name).display().to_string(),
        }
    }

    /// The path a client asks for to name [`Server::data_dir`] itself.
    pub fn remote_dir(&self) -> String {
        match self {
            Server::GzshipSftpd(_) => "/".to_owned(),
            _ => self.data_dir().display().to_string(),
        }
    }

    /// The server's log of logins, where it keeps one in words the checks know (OpenSSH's).
    pub fn login_log(&self) -> Option<String> {
        match self {
            Server::OpenSsh(s) => Some(s.log()),
            _ => None,
        }
    }
}

fn fast_tuning() -> SftpTuning {
    SftpTuning {
        backoff: gzship_core::backoff::Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
        ..SftpTuning::default()
    }
}

fn config(server: &Server, auth: SshAuth, host_key: HostKeyPolicy) -> SftpConfig {
    SftpConfig {
        host: "127.0.0.1".into(),
        port: server.port(),
        user: server.user().into(),
        auth,
        host_key,
        tuning: fast_tuning(),
    }
}

fn password_config(server: &Server, password: &str) -> SftpConfig {
    let (user, _) = server.password_login();
    let mut cfg = config(server, SshAuth::password(password), pinned(server));
    cfg.user = user.into();
    cfg
}

fn key_auth(server: &Server) -> SshAuth {
    SshAuth::private_key(server.client_key().private_key_pem.clone(), None)
}

fn pinned(server: &Server) -> HostKeyPolicy {
    HostKeyPolicy::fingerprint(server.host_key_fingerprint()).unwrap()
}

fn source(server: &Server, tuning: SftpTuning) -> SftpSource {
    SftpSource::new(config(server, key_auth(server), pinned(server)).with_tuning(tuning)).unwrap()
}

/// Writes `name` into the served directory; returns its local path and the path to ask for.
fn put(server: &Server, name: &str, kind: DataKind, len: u64, seed: u64) -> (PathBuf, String) {
    let path = server.data_dir().join(name);
    data::write_file(&path, kind, len, seed).unwrap();
    (path, server.remote_path(name))
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

/// Ranges (empty, one byte, across READs, the whole file) are the file's bytes, with small and
/// default READs, over one and two connections.
pub async fn ranges_are_byte_identical_to_the_file(backend: Backend) {
    let (server, _) = backend.start(&[]).await;
    let len = 3 * 1024 * 1024 + 12_345;
    let (local, remote) = put(&server, "access.log", DataKind::Logs, len, 1);
    let want = std::fs::read(&local).unwrap();
    // Small READs so that ranges span many of them, and few in flight so that they queue.
    let small = source(
        &server,
        SftpTuning {
            request_size: 16 * 1024,
            requests_in_flight: 3,
            ..fast_tuning()
        },
    );
    let default = source(&server, fast_tuning());
    let two_conns = source(
        &server,
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

/// 40 MiB of random bytes arrive whole over one and two connections.
pub async fn multi_mib_file_over_one_and_two_connections(backend: Backend) {
    let (server, _) = backend.start(&[]).await;
    let len = 40 * 1024 * 1024 + 7;
    let (local, remote) = put(&server, "random.bin", DataKind::Random, len, 2);
    let want = data::sha256_file(&local).unwrap();
    for connections in [1, 2] {
        let src = source(
            &server,
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

/// RSA, ECDSA and passphrase-protected ed25519 keys log in, and so does a password.
pub async fn every_credential_kind_logs_in(backend: Backend) {
    let (server, keys) = backend
        .start(&[
            (KeyKind::Rsa, None),
            (KeyKind::Ecdsa, None),
            (KeyKind::Ed25519, Some("s3cret phrase")),
        ])
        .await;
    let (_, remote) = put(&server, "f", DataKind::Zeros, 1000, 0);
    for key in &keys {
        let auth =
            SshAuth::private_key_file(&key.private_key_path, key.passphrase.as_deref()).unwrap();
        let src = SftpSource::new(config(&server, auth, pinned(&server))).unwrap();
        let stat = src.stat(&remote).await;
        assert_eq!(stat.unwrap().size, 1000, "{:?} key", key.kind);
    }
    let (user, password) = server.password_login();
    let src = SftpSource::new(password_config(&server, password)).unwrap();
    assert_eq!(src.stat(&remote).await.unwrap().size, 1000);
    assert!(
        !format!("{src:?}").contains(password),
        "Debug shows the password"
    );
    // OpenSSH logs how it let each login in: the password, and the RSA key.
    if let Some(log) = server.login_log() {
        assert!(
            log.contains(&format!("Accepted password for {user}")),
            "{log}"
        );
        assert!(
            log.contains("Accepted publickey") && log.contains("RSA SHA256:"),
            "{log}"
        );
    }
}

/// The host key is accepted through a plain or hashed known_hosts line (as text or a file),
/// and with the explicit accept-any policy.
pub async fn known_hosts_plain_hashed_and_accept_any(backend: Backend) {
    let (server, _) = backend.start(&[]).await;
    let (_, remote) = put(&server, "f", DataKind::Zeros, 10, 0);
    let other = server.new_unauthorized_key(KeyKind::Ed25519, None);
    let hashed = hash_known_hosts_line(&server.known_hosts_line());
    let policies = [
        HostKeyPolicy::known_hosts(&server.known_hosts_line()),
        HostKeyPolicy::known_hosts(&format!(
            "# comment\nexample.com {}\n{hashed}\n",
            other.public_key,
        )),
        HostKeyPolicy::AcceptAny,
    ];
    for policy in policies {
        let src = SftpSource::new(config(&server, key_auth(&server), policy.clone())).unwrap();
        assert_eq!(src.stat(&remote).await.unwrap().size, 10, "{policy:?}");
    }
    let kh_file = server.data_dir().join("known_hosts");
    std::fs::write(&kh_file, hashed).unwrap();
    let policy = HostKeyPolicy::known_hosts_file(&kh_file).unwrap();
    let src = SftpSource::new(config(&server, key_auth(&server), policy)).unwrap();
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

/// A host key other than the pinned one is refused, naming both fingerprints.
pub async fn wrong_pinned_host_key_is_rejected(backend: Backend) {
    let (server, _) = backend.start(&[]).await;
    let other = server.new_unauthorized_key(KeyKind::Ed25519, None);
    let pub_path = other.private_key_path.with_extension("pub");
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&pub_path)
        .output()
        .unwrap();
    let wrong = String::from_utf8(out.stdout).unwrap();
    let wrong = wrong.split_whitespace().nth(1).unwrap();
    let src = SftpSource::new(config(
        &server,
        key_auth(&server),
        HostKeyPolicy::fingerprint(wrong).unwrap(),
    ))
    .unwrap();
    let err = src.stat("/etc/hostname").await.unwrap_err();
    match &err {
        Error::HostKey {
            addr, presented, ..
        } => {
            assert_eq!(addr, &format!("127.0.0.1:{}", server.port()));
            assert_eq!(presented, server.host_key_fingerprint());
        }
        e => panic!("expected HostKey, got {}", chain(e)),
    }
    assert_names(
        &err,
        &[
            "host key of 127.0.0.1",
            server.host_key_fingerprint(),
            wrong,
        ],
    );
    assert!(!err.is_retryable());
}

/// A host known_hosts does not list, or lists with another key, is refused.
pub async fn host_missing_from_known_hosts_is_rejected(backend: Backend) {
    let (server, _) = backend.start(&[]).await;
    // The right key, but for port 22 and for another host: neither is this server.
    let key = server.host_public_key();
    let policy = HostKeyPolicy::known_hosts(&format!("127.0.0.1 {key}\nexample.com {key}\n"));
    let src = SftpSource::new(config(&server, key_auth(&server), policy)).unwrap();
    let err = src.stat("/etc/hostname").await.unwrap_err();
    assert!(matches!(err, Error::HostKey { .. }), "{}", chain(&err));
    assert_names(
        &err,
        &[
            "not trusted",
            "no entry",
            &format!("[127.0.0.1]:{}", server.port()),
        ],
    );

    // Listed with another key: a changed key.
    let other = server.new_unauthorized_key(KeyKind::Ed25519, None);
    let policy = HostKeyPolicy::known_hosts(&format!(
        "[127.0.0.1]:{} {}\n",
        server.port(),
        other.public_key
    ));
    let src = SftpSource::new(config(&server, key_auth(&server), policy)).unwrap();
    let err = src.stat("/etc/hostname").await.unwrap_err();
    assert!(matches!(err, Error::HostKey { .. }), "{}", chain(&err));
    assert_names(&err, &["other keys", "line"]);
}

/// A key the server does not accept, a wrong password and a wrong passphrase each get their
/// own error, and are not retried.
pub async fn wrong_private_key_and_wrong_password_are_refused(backend: Backend) {
    let (server, _) = backend.start(&[]).await;
    let stranger = server.new_unauthorized_key(KeyKind::Ed25519, None);
    let auth = SshAuth::private_key(stranger.private_key_pem.clone(), None);
    let src = SftpSource::new(config(&server, auth, pinned(&server))).unwrap();
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
        &["authenticate as", server.user(), "private key", "refused"],
    );
    assert!(!err.is_retryable());

    let (password_user, _) = server.password_login();
    let err = SftpSource::new(password_config(&server, "not the password"))
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
        &["authenticate as", password_user, "password", "refused"],
    );

    // A wrong passphrase is caught before any connection.
    let locked = server.new_unauthorized_key(KeyKind::Ed25519, Some("right"));
    let auth = SshAuth::private_key(locked.private_key_pem.clone(), Some("wrong"));
    let err = SftpSource::new(config(&server, auth, pinned(&server))).unwrap_err();
    assert!(matches!(&err, Error::Invalid { .. }), "{}", chain(&err));
    assert_names(&err, &["private key", "passphrase"]);
}

/// A missing file and a directory are refused, each with its own error; the missing file is
/// not retried.
pub async fn missing_file_and_directory_get_their_own_errors(backend: Backend) {
    let (server, _) = backend.start(&[]).await;
    let src = source(&server, fast_tuning());
    let missing = server.remote_path("nope.log");
    let err = src.stat(&missing).await.unwrap_err();
    assert!(matches!(&err, Error::SftpStat { .. }), "{}", chain(&err));
    assert_names(&err, &[&format!("stat {missing}"), "no such file"]);
    // Asking again gets the same answer: a job for a missing file fails for good at once.
    assert!(!err.is_retryable(), "{}", chain(&err));

    let dir = server.remote_dir();
    let dir = dir.as_str();
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

/// A refused connection is retried, then reported with the attempts, as retryable. No server
/// is involved, so this runs once, not per backend.
pub async fn connection_refused_is_retried_then_reported() {
    // A port with nothing behind it.
    let port = crate::net::free_port();
    let cfg = SftpConfig {
        host: "127.0.0.1".into(),
        port,
        user: "nobody".into(),
        auth: SshAuth::password("unused"),
        host_key: HostKeyPolicy::AcceptAny,
        tuning: SftpTuning {
            handshake_attempts: 3,
            ..fast_tuning()
        },
    };
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

/// A TCP proxy in front of the server that drops its first `drops` connections at once, as OpenSSH
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

/// Connections dropped before the SSH handshake (as OpenSSH drops them past `MaxStartups`) are
/// retried up to `handshake_attempts`, then reported.
pub async fn dropped_handshakes_are_retried(backend: Backend) {
    let (server, _) = backend.start(&[]).await;
    let (_, remote) = put(&server, "f", DataKind::Logs, 5000, 3);
    let port = dropping_proxy(server.port(), 2).await;
    let mut cfg = config(&server, key_auth(&server), pinned(&server));
    cfg.port = port;
    cfg.tuning.handshake_attempts = 3;
    let src = SftpSource::new(cfg).unwrap();
    assert_eq!(src.stat(&remote).await.unwrap().size, 5000);

    // One retry too few fails, naming the attempts.
    let port = dropping_proxy(server.port(), 3).await;
    let mut cfg = config(&server, key_auth(&server), pinned(&server));
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

/// Sessions killed mid-read (over one and two connections) are reconnected, and the reads
/// resume where they stopped: no gap, no duplicate. OpenSSH only: its sessions are processes
/// [`Sshd::kill_sessions`] can kill, and its log counts the logins.
pub async fn killed_sessions_are_resumed_without_gaps_or_duplicates() {
    let (server, _) = Backend::OpenSsh.start(&[]).await;
    let Server::OpenSsh(sshd) = &server else {
        unreachable!("Backend::OpenSsh starts OpenSSH")
    };
    let len = 2 * 1024 * 1024 + 333;
    let (local, remote) = put(&server, "access.log", DataKind::Logs, len, 4);
    let want = std::fs::read(&local).unwrap();
    for connections in [1, 2] {
        let src = source(
            &server,
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
    // The read starts on the stat's connection: 1 + 2 reconnects for one connection, 2 * 3
    // for two.
    assert!(
        logins >= 3 + 6,
        "expected reconnects, sshd log shows {logins} logins"
    );
}

/// OpenSSH only (its sessions can be killed): a source's requests run on the connection its
/// earlier ones are done with (the local runner's first task reads on its master's stat
/// connection); one whose SFTP channel or whole connection the server dropped meanwhile is
/// replaced without an error; dropping the source closes the idle connection.
pub async fn idle_connections_are_reused_and_dropped_ones_replaced() {
    let (server, _) = Backend::OpenSsh.start(&[]).await;
    let Server::OpenSsh(sshd) = &server else {
        unreachable!("Backend::OpenSsh starts OpenSSH")
    };
    let len = 300_000;
    let (local, remote) = put(&server, "idle.log", DataKind::Logs, len, 11);
    let want = std::fs::read(&local).unwrap();
    let src = source(&server, fast_tuning());
    let expect = src.stat(&remote).await.unwrap();
    assert!(read(&src, &remote, range(0, len), expect).await == want);
    assert_eq!(src.stat(&remote).await.unwrap(), expect);
    assert_eq!(sshd.session_count(), 1, "one connection, idle now");
    // The SSH connection stays up, its SFTP channel is gone: the first request on it fails.
    assert_eq!(sshd.kill_sftp_servers(), 1);
    assert!(read(&src, &remote, range(10, 20), expect).await == want[10..20]);
    // The whole session gone: the connection is seen closed before any request.
    assert!(sshd.kill_sessions() >= 1);
    assert_eq!(src.stat(&remote).await.unwrap(), expect);
    assert_eq!(
        sshd.session_count(),
        1,
        "the dropped connections were replaced"
    );
    drop(src);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sshd.session_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped source's idle connection is still open after 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let logins = sshd.log().matches("Accepted publickey").count();
    assert_eq!(logins, 3, "a login before the kills and one after each");
}

/// A file whose size or mtime is not the stat the read expects, or that is shorter than the
/// range, or gone, fails before any byte is delivered.
pub async fn a_file_that_changed_before_the_read_fails_before_any_byte(backend: Backend) {
    let (server, _) = backend.start(&[]).await;
    let (_, remote) = put(&server, "f", DataKind::Logs, 100_000, 5);
    let src = source(&server, fast_tuning());
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
                mtime: now.mtime.map(|t| t - 10),
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
    std::fs::remove_file(server.data_dir().join("f")).unwrap();
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

/// Writes a 2 MiB file `name`, reads its first chunk, runs `change` on the local file, then
/// reads on. Returns the original bytes, the bytes delivered and the error the stream ended
/// with, if any.
async fn read_around_a_change(
    server: &Server,
    name: &str,
    change: impl FnOnce(&Path),
) -> (Vec<u8>, Vec<u8>, Option<Error>) {
    let len = 2 * 1024 * 1024;
    let (local, remote) = put(server, name, DataKind::Logs, len, 6);
    let want = std::fs::read(&local).unwrap();
    let src = source(
        server,
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
    (want, got, err)
}

/// Reads the first chunk, runs `change` on the local file, then reads on: the stream must end
/// with SourceChanged, and whatever it delivered must be a prefix of the original bytes.
async fn change_during_read(backend: Backend, name: &str, change: impl FnOnce(&Path)) -> Error {
    let (server, _) = backend.start(&[]).await;
    let (want, got, err) = read_around_a_change(&server, name, change).await;
    assert!(got.len() < want.len(), "a changed file was delivered whole");
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

/// A file truncated during the read fails where it ends.
pub async fn a_file_truncated_during_the_read_fails(backend: Backend) {
    let err = change_during_read(backend, "t.log", |p| {
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

/// A file appended to during the read fails with its new size.
pub async fn a_file_appended_to_during_the_read_fails(backend: Backend) {
    let err = change_during_read(backend, "a.log", append_a_line).await;
    assert_names(&err, &["size is 2097166 bytes, expected 2097152"]);
}

fn touch(path: &Path) {
    let status = std::process::Command::new("touch")
        .arg("-d")
        .arg("@1000000000")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn append_a_line(path: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(b"one more line\n").unwrap();
}

/// A file whose mtime changes during the read fails with its new mtime.
pub async fn a_file_touched_during_the_read_fails(backend: Backend) {
    let err = change_during_read(backend, "m.log", touch).await;
    assert_names(&err, &["mtime is 1000000000"]);
}

/// ProFTPD only, whose log names the handles a session left open ("aborting 1 unclosed file
/// handle"): whole ranges over one and two connections, a file that changed before the read
/// (its check fails after OPEN) and one truncated during the read all leave no handle open.
pub async fn handles_are_closed_after_reads_and_failures() {
    let (server, _) = Backend::Proftpd.start(&[]).await;
    let Server::Proftpd(proftpd) = &server else {
        unreachable!("Backend::Proftpd starts ProFTPD")
    };
    let len = 1024 * 1024 + 5;
    let (local, remote) = put(&server, "f.log", DataKind::Logs, len, 7);
    let want = std::fs::read(&local).unwrap();
    for connections in [1, 2] {
        let src = source(
            &server,
            SftpTuning {
                request_size: 64 * 1024,
                connections,
                ..fast_tuning()
            },
        );
        let expect = src.stat(&remote).await.unwrap();
        assert!(read(&src, &remote, range(0, len), expect).await == want);
        assert!(read(&src, &remote, range(10, 20), expect).await == want[10..20]);
    }
    let src = source(&server, fast_tuning());
    let expect = src.stat(&remote).await.unwrap();
    let planned = SourceStat {
        size: len + 1,
        ..expect
    };
    let err = src
        .read_range(&remote, range(0, 10), planned)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::SourceChanged { .. }),
        "{}",
        chain(&err)
    );
    let (_, _, err) = read_around_a_change(&server, "t.log", |p| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(1024 * 1024)
            .unwrap();
    })
    .await;
    let err = err.expect("a read of a truncated file must fail");
    assert_names(&err, &["ends at byte 1048576"]);

    // Each session writes its last lines when it ends.
    proftpd.wait_until_sessions_end().await;
    let log = proftpd.sftp_log();
    // A source's requests run on the connections its earlier requests are done with: one
    // login for the source of one connection (stat, then both reads), two for the source of two
    // (stat, then the whole range on that one and a second), one for the check that failed
    // (stat, then the read that closes the connection) and one in read_around_a_change.
    let logins = log.matches("authenticated via 'publickey'").count();
    assert_eq!(logins, 5, "logins in the log:\n{log}");
    assert!(
        !log.contains("unclosed"),
        "gzship left file handles open:\n{log}"
    );
}

/// A server whose attributes carry no mtime (the paramiko server with [`pysftpd::Stat::NoMtime`]):
/// `stat` says so, ranges read whole, and a change of size is caught; a change of mtime alone
/// cannot be, and is not made up into a failure. `stat` warns that only the size is checked.
pub async fn a_server_without_mtimes_is_read_with_size_checks_alone() {
    let (server, _) = PySftpd::start_with_keys(&[], pysftpd::Stat::NoMtime);
    let server = Server::PySftpd(server);
    let len = 1024 * 1024 + 3;
    let (local, remote) = put(&server, "f.log", DataKind::Logs, len, 8);
    let want = std::fs::read(&local).unwrap();
    let src = source(&server, fast_tuning());
    let expect = src.stat(&remote).await.unwrap();
    assert_eq!(
        expect,
        SourceStat {
            size: len,
            mtime: None,
            is_file: true
        }
    );
    for r in [range(0, len), range(1, 2), range(4096, len - 1)] {
        let got = read(&src, &remote, r, expect).await;
        assert!(
            got == want[r.start() as usize..r.end() as usize],
            "range {r} differs"
        );
    }
    // A job planned on a stat with an mtime still reads: the size is what can be compared.
    let planned = SourceStat {
        mtime: Some(1_700_000_000),
        ..expect
    };
    assert!(read(&src, &remote, range(0, 10), planned).await == want[..10]);
    let err = src
        .read_range(
            &remote,
            range(0, 10),
            SourceStat {
                size: len - 1,
                ..expect
            },
        )
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::SourceChanged { .. }),
        "{}",
        chain(&err)
    );

    let (_, got, err) = read_around_a_change(&server, "a.log", append_a_line).await;
    let err = err.expect("a file appended to during the read must fail");
    assert!(
        matches!(&err, Error::SourceChanged { .. }),
        "{}",
        chain(&err)
    );
    assert_names(&err, &["size is 2097166 bytes, expected 2097152"]);
    assert!(got.len() < 2 * 1024 * 1024);

    let (want, got, err) = read_around_a_change(&server, "m.log", touch).await;
    assert!(err.is_none(), "{}", chain(&err.unwrap()));
    assert!(got == want, "the touched file's bytes differ");
}

/// A server that does not implement STAT (nor FSTAT) answers "operation unsupported": `stat`
/// and `read_range` fail at once with errors that say so, and are not retryable.
pub async fn an_unsupported_operation_is_not_retried() {
    let (server, _) = PySftpd::start_with_keys(&[], pysftpd::Stat::Unsupported);
    let server = Server::PySftpd(server);
    let (_, remote) = put(&server, "f.log", DataKind::Logs, 1000, 9);
    let src = source(&server, fast_tuning());
    let err = src.stat(&remote).await.unwrap_err();
    assert!(matches!(&err, Error::SftpStat { .. }), "{}", chain(&err));
    assert_names(&err, &[&format!("stat {remote}"), "operation unsupported"]);
    assert!(!err.is_retryable(), "{}", chain(&err));

    let planned = SourceStat {
        size: 1000,
        mtime: None,
        is_file: true,
    };
    let err = src
        .read_range(&remote, range(0, 10), planned)
        .await
        .err()
        .unwrap();
    assert!(matches!(&err, Error::SftpRead { .. }), "{}", chain(&err));
    assert_names(
        &err,
        &[
            &format!("read [0, 10) of {remote}"),
            "does not implement fstat",
            "operation unsupported",
        ],
    );
    assert!(!err.is_retryable(), "{}", chain(&err));
}

/// Calls the macro `$runner` with the name of every check of the SFTP suite that runs against
/// every [`Backend`] (all but [`killed_sessions_are_resumed_without_gaps_or_duplicates`] and
/// [`idle_connections_are_reused_and_dropped_ones_replaced`], which need OpenSSH,
/// [`handles_are_closed_after_reads_and_failures`], which needs ProFTPD, the
/// paramiko server's variants, and [`connection_refused_is_retried_then_reported`], which needs
/// no server),
/// so that a runner makes one test per check and backend without a list of its own. See
/// [`for_each_store_check!`](crate::for_each_store_check) for an example.
#[macro_export]
macro_rules! for_each_sftp_check {
    ($runner:ident) => {
        $runner!(
            ranges_are_byte_identical_to_the_file,
            multi_mib_file_over_one_and_two_connections,
            every_credential_kind_logs_in,
            known_hosts_plain_hashed_and_accept_any,
            wrong_pinned_host_key_is_rejected,
            host_missing_from_known_hosts_is_rejected,
            wrong_private_key_and_wrong_password_are_refused,
            missing_file_and_directory_get_their_own_errors,
            dropped_handshakes_are_retried,
            a_file_that_changed_before_the_read_fails_before_any_byte,
            a_file_truncated_during_the_read_fails,
            a_file_appended_to_during_the_read_fails,
            a_file_touched_during_the_read_fails
        );
    };
}
