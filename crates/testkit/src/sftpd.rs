//! gzship-sftpd (the read-only SFTP server of `crates/sftpd`) set up for tests the way
//! [`Sshd`](crate::sshd::Sshd) sets up OpenSSH: its own temporary directory of files to serve,
//! an in-memory host key the client pins, an authorized ed25519 client key made by
//! `ssh-keygen`, and a password. It runs in this process, on the current tokio runtime, on a
//! port of 127.0.0.1 it binds itself; dropping the [`Sftpd`] stops it.
//!
//! gzship-sftpd serves one directory as `/` to one user: [`Sftpd::remote_path`] names a file
//! of [`Sftpd::data_dir`] as a client asks for it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gzship_sftpd::{Password, SftpServer, SftpServerConfig};
use russh::keys::PublicKey;

use crate::sshd::{ClientKey, KeyKind, make_client_key};

/// The one user gzship-sftpd lets in.
pub const USER: &str = "gzship-test";
/// [`USER`]'s password.
pub const PASSWORD: &str = "gzship-sftpd-test-password";

/// A running gzship-sftpd. See the module docs.
#[derive(Debug)]
pub struct Sftpd {
    server: SftpServer,
    /// `data/` is served; keys live beside it.
    dir: tempfile::TempDir,
    client_key: ClientKey,
    key_counter: AtomicU32,
}

impl Sftpd {
    /// Starts a server that accepts [`PASSWORD`] and [`Sftpd::client_key`].
    pub async fn start() -> Sftpd {
        Self::start_with_keys(&[]).await.0
    }

    /// Starts a server that also accepts one new key per `(kind, passphrase)` of `keys`, and
    /// returns those keys. gzship-sftpd reads its authorized keys once, at start.
    pub async fn start_with_keys(keys: &[(KeyKind, Option<&str>)]) -> (Sftpd, Vec<ClientKey>) {
        let dir = tempfile::Builder::new()
            .prefix("gzship-sftpd-")
            .tempdir()
            .expect("create a temp dir for gzship-sftpd");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("create gzship-sftpd's data dir");
        let client_key = make_client_key(dir.path(), "id_ed25519", KeyKind::Ed25519, None);
        let extra: Vec<ClientKey> = keys
            .iter()
            .enumerate()
            .map(|(i, (kind, passphrase))| {
                make_client_key(dir.path(), &format!("id_extra_{i}"), *kind, *passphrase)
            })
            .collect();
        let mut config = SftpServerConfig::new(&data, USER)
            .with_password(Password::new(PASSWORD))
            .with_auth_rejection_time(Duration::ZERO);
        for key in std::iter::once(&client_key).chain(&extra) {
            let public = PublicKey::from_openssh(&key.public_key)
                .unwrap_or_else(|e| panic!("parse {}: {e}", key.public_key));
            config = config.with_authorized_key(public);
        }
        let server = SftpServer::start(config)
            .await
            .unwrap_or_else(|e| panic!("start gzship-sftpd: {e}"));
        let sftpd = Sftpd {
            server,
            dir,
            client_key,
            key_counter: AtomicU32::new(0),
        };
        (sftpd, extra)
    }

    /// The server itself (address, host key).
    pub fn server(&self) -> &SftpServer {
        &self.server
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The host key's fingerprint, `SHA256:...`.
    pub fn host_key_fingerprint(&self) -> &str {
        self.server.host_key_fingerprint()
    }

    /// The host public key line (`ssh-ed25519 AAAA...`).
    pub fn host_public_key(&self) -> String {
        self.server
            .host_public_key()
            .to_openssh()
            .expect("an ed25519 key encodes")
    }

    /// A known_hosts line for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        self.server.known_hosts_line()
    }

    /// An authorized ed25519 key of [`USER`], without passphrase.
    pub fn client_key(&self) -> &ClientKey {
        &self.client_key
    }

    /// Makes a new client key pair that this server does not accept (see
    /// [`Sftpd::start_with_keys`] for keys it does).
    pub fn new_unauthorized_key(&self, kind: KeyKind, passphrase: Option<&str>) -> ClientKey {
        let n = self.key_counter.fetch_add(1, Ordering::Relaxed);
        make_client_key(self.dir.path(), &format!("id_{n}"), kind, passphrase)
    }

    /// The directory served as `/`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The path a client asks for to read `name` of [`Sftpd::data_dir`]: `/name`.
    pub fn remote_path(&self, name: &str) -> String {
        format!("/{name}")
    }
}
