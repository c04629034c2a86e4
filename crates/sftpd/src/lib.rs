//! A small read-only SFTP server for `gzship demo` and for tests: russh on the SSH side, an
//! SFTP v3 engine built on russh-sftp's protocol types, one directory served.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gzship_sftpd::Error> {
//! use gzship_sftpd::{Password, SftpServer, SftpServerConfig};
//!
//! let config = SftpServerConfig::new("/tmp/demo-data", "demo")
//!     .with_password(Password::new("demo-password"));
//! let server = SftpServer::start(config).await?;
//! println!("sftp://demo@{}/app.log", server.addr());
//! println!("host key {}", server.host_key_fingerprint());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Modules:
//! - [`config`]: [`SftpServerConfig`] (root, bind address, user, credentials, limits) and
//!   [`Password`].
//! - [`error`]: [`Error`], why a server could not start.
//! - `ssh` (private): accept loop, authentication, `sftp` subsystem channels.
//! - `sftp` (private): the SFTP engine; READs are served concurrently with positioned reads.
//! - `root` (private): client paths resolved inside the served directory.
//!
//! What the server does:
//! - SSH: an ed25519 host key generated in memory at start; password and/or public key login
//!   for one user; only session channels and the `sftp` subsystem (no shell, exec, forwarding).
//! - SFTP: INIT (advertising `limits@openssh.com`), REALPATH, STAT, LSTAT, FSTAT, OPEN for
//!   reading, READ (at most [`MAX_READ_LEN`] bytes, EOF status at the end), CLOSE, OPENDIR,
//!   READDIR. Anything that would write gets permission denied; other requests get
//!   "operation unsupported".

pub mod config;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod root;
mod sftp;
mod ssh;

use std::net::SocketAddr;
use std::sync::Arc;

use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PublicKey};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{MAX_READ_LEN, Password, SftpServerConfig};
pub use error::Error;

/// A running SFTP server. Dropping it stops accepting and disconnects every client in the
/// background; [`shutdown`](Self::shutdown) does the same and waits until they are gone.
#[derive(Debug)]
pub struct SftpServer {
    addr: SocketAddr,
    host_key: PublicKey,
    fingerprint: String,
    cancel: CancellationToken,
    accept_loop: Option<JoinHandle<()>>,
}

impl SftpServer {
    /// Validates `config`, binds its address, generates a host key and starts accepting
    /// connections on the current tokio runtime. Returns as soon as the socket is listening.
    pub async fn start(config: SftpServerConfig) -> Result<SftpServer, Error> {
        let root = root::Root::new(&config.root).map_err(|source| Error::Root {
            path: config.root.clone(),
            source,
        })?;
        if !config.root.is_dir() {
            return Err(Error::RootNotDirectory { path: config.root });
        }
        if config.password.is_none() && config.authorized_keys.is_empty() {
            return Err(Error::NoCredentials { user: config.user });
        }

        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;

        let host_key = generate_host_key();
        let host_public = host_key.public_key().clone();
        let fingerprint = host_public.fingerprint(HashAlg::Sha256).to_string();

        let shared = Arc::new(ssh::Shared {
            root: Arc::new(root),
            user: config.user,
            password: config.password,
            authorized_keys: config.authorized_keys,
            limits: sftp::Limits {
                max_reads_in_flight: config.max_reads_in_flight,
                max_open_handles: config.max_open_handles,
            },
            max_sessions: config.max_sessions,
        });
        let ssh_config = Arc::new(russh::server::Config {
            methods: shared.methods(),
            auth_rejection_time: config.auth_rejection_time,
            // OpenSSH clients probe with "none" first; answering it at once costs nothing.
            auth_rejection_time_initial: Some(std::time::Duration::ZERO),
            keys: vec![host_key],
            nodelay: true,
            ..Default::default()
        });

        let cancel = CancellationToken::new();
        let accept_loop = tokio::spawn(ssh::accept_loop(
            listener,
            ssh_config,
            shared,
            cancel.clone(),
        ));
        info!(%addr, root = %config.root.display(), %fingerprint, "sftp server listening");
        Ok(SftpServer {
            addr,
            host_key: host_public,
            fingerprint,
            cancel,
            accept_loop: Some(accept_loop),
        })
    }

    /// The address the server listens on (with the port the OS picked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host key's fingerprint as `ssh-keygen -lf` prints it: `SHA256:` and the unpadded
    /// base64 of the SHA-256 of the public key blob. Clients pin this.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The host's public key.
    pub fn host_public_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// A `known_hosts` line for this server, e.g. `[127.0.0.1]:41234 ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        let key = self
            .host_key
            .to_openssh()
            .unwrap_or_else(|e| format!("<unencodable key: {e}>"));
        let host = match self.addr {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => v6.ip().to_string(),
        };
        if self.addr.port() == 22 {
            format!("{host} {key}")
        } else {
            format!("[{host}]:{} {key}", self.addr.port())
        }
    }

    /// Stops accepting, disconnects every client and waits until their sessions have ended.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(accept_loop) = self.accept_loop.take()
            && let Err(e) = accept_loop.await
        {
            tracing::warn!("sftp server accept loop failed: {e}");
        }
        info!(addr = %self.addr, "sftp server stopped");
    }
}

impl Drop for SftpServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A fresh ed25519 host key. The seed comes from the thread-local CSPRNG (ChaCha seeded by
/// the OS), which is all a throwaway demo key needs.
fn generate_host_key() -> PrivateKey {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}
