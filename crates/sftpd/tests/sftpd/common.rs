//! A real SSH + SFTP client (russh, russh-sftp) that pins the test server's host key.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gzship_sftpd::{Password, SftpServer, SftpServerConfig};
use rand::{Rng, SeedableRng};
use russh::client::{self, AuthResult};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::{RawSftpSession, SftpSession};

pub const USER: &str = "demo";
pub const PASSWORD: &str = "correct horse battery staple";

/// Verifies the server's host key against the fingerprint the test got from the server.
pub struct PinnedHostKey {
    fingerprint: String,
}

impl client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.fingerprint(HashAlg::Sha256).to_string() == self.fingerprint
            }
            PublicKeyOrCertificate::Certificate(_) => false,
        })
    }
}

impl PinnedHostKey {
    pub fn for_fingerprint(fingerprint: &str) -> Self {
        PinnedHostKey {
            fingerprint: fingerprint.to_owned(),
        }
    }
}

pub type Connection = client::Handle<PinnedHostKey>;

/// A served directory and a server started on it with a password and `client_key` authorized.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub server: SftpServer,
    pub client_key: Arc<PrivateKey>,
}

pub async fn start() -> Result<Fixture> {
    start_with(|config| config).await
}

pub async fn start_with(
    adjust: impl FnOnce(SftpServerConfig) -> SftpServerConfig,
) -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let client_key = Arc::new(PrivateKey::from(
        russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[7; 32]),
    ));
    let config = SftpServerConfig::new(dir.path(), USER)
        .with_password(Password::new(PASSWORD))
        .with_authorized_key(client_key.public_key().clone())
        .with_auth_rejection_time(Duration::ZERO);
    let server = SftpServer::start(adjust(config)).await?;
    Ok(Fixture {
        dir,
        server,
        client_key,
    })
}

/// Seeded pseudo-random bytes (incompressible, so nothing in the path can cheat).
pub fn seeded_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill(&mut data[..]);
    data
}

pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    std::fs::write(dir.join(name), data).with_context(|| format!("write {name}"))
}

/// Connects and completes the key exchange, verifying the host key; no login yet.
pub async fn connect(server: &SftpServer) -> Result<Connection> {
    connect_with(server, client::Config::default()).await
}

pub async fn connect_with(server: &SftpServer, config: client::Config) -> Result<Connection> {
    let verifier = PinnedHostKey::for_fingerprint(server.host_key_fingerprint());
    client::connect(Arc::new(config), server.addr(), verifier)
        .await
        .context("connect to the test sftp server")
}

/// A client configuration that negotiates `cipher` (to compare cipher throughput). `nodelay`
/// turns Nagle's algorithm off on the client socket: with it on, each small READ request may
/// wait for the ACK of the previous segment and pipelined reads crawl.
pub fn config_with_cipher(cipher: russh::cipher::Name, nodelay: bool) -> client::Config {
    let names: &'static [russh::cipher::Name] = Box::leak(Box::new([cipher]));
    client::Config {
        preferred: russh::Preferred {
            cipher: Cow::Borrowed(names),
            ..Default::default()
        },
        nodelay,
        ..Default::default()
    }
}

pub async fn login_password(connection: &mut Connection, password: &str) -> Result<AuthResult> {
    Ok(connection.authenticate_password(USER, password).await?)
}

pub async fn login_key(connection: &mut Connection, key: Arc<PrivateKey>) -> Result<AuthResult> {
    Ok(connection
        .authenticate_publickey(USER, PrivateKeyWithHashAlg::new(key, None))
        .await?)
}

/// Opens the `sftp` subsystem and returns its stream.
pub async fn sftp_channel(
    connection: &Connection,
) -> Result<russh::ChannelStream<russh::client::Msg>> {
    let channel = connection.channel_open_session().await?;
    channel.request_subsystem(true, "sftp").await?;
    Ok(channel.into_stream())
}

/// Logs in with the password and starts a high-level SFTP session.
pub async fn sftp_session(fixture: &Fixture) -> Result<(Connection, SftpSession)> {
    let mut connection = connect(&fixture.server).await?;
    if !login_password(&mut connection, PASSWORD).await?.success() {
        bail!("password login refused");
    }
    let sftp = SftpSession::new(sftp_channel(&connection).await?).await?;
    Ok((connection, sftp))
}

/// Logs in with the password and starts a raw SFTP session (explicit READ requests).
pub async fn raw_session(fixture: &Fixture) -> Result<(Connection, RawSftpSession)> {
    let mut connection = connect(&fixture.server).await?;
    if !login_password(&mut connection, PASSWORD).await?.success() {
        bail!("password login refused");
    }
    let raw = RawSftpSession::new(sftp_channel(&connection).await?);
    raw.init().await?;
    Ok((connection, raw))
}
