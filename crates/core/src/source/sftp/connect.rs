//! One SSH connection with an SFTP session: TCP connect, handshake with host key verification,
//! login, SFTP start; retried with jittered exponential backoff where a retry can help. A
//! source's connections in good order wait idle for its next request ([`Shared::first`],
//! [`Shared::done`]).

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, StatusCode};
use tracing::{debug, info, warn};

use crate::error::{BoxError, Error, Result};

use super::config::{HostKeyPolicy, SftpConfig, SshAuth};
use super::known_hosts::Verdict;
use super::session::Session;
use super::socket::{ReadBatching, SshSocket};

/// What a source's connections share: the config, the private key decoded once (what
/// [`connect`] needs) and the connections kept idle for the next request ([`Idle`]).
pub(super) struct Shared {
    pub config: SftpConfig,
    pub addr: String,
    pub credential: Credential,
    pub ssh_config: Arc<client::Config>,
    /// Set once the server answered FSTAT with "operation unsupported": later checks of an
    /// open file STAT its path instead, without asking again.
    pub no_fstat: AtomicBool,
    idle: Idle,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(config: SftpConfig) -> Result<Shared> {
        config.validate()?;
        let credential = match &config.auth {
            SshAuth::PrivateKey { key, passphrase } => Credential::Key(Arc::new(
                russh::keys::decode_secret_key(
                    key.expose(),
                    passphrase.as_ref().map(|p| p.expose()),
                )
                .map_err(|e| {
                    // The decode error names no secret, only what is wrong with the key.
                    Error::invalid(
                        "ssh private key",
                        format!("decode it (OpenSSH or PEM format; wrong passphrase?): {e}"),
                    )
                })?,
            )),
            SshAuth::Password(p) => Credential::Password(p.clone()),
        };
        let t = &config.tuning;
        let preferred = russh::Preferred {
            cipher: Cow::Owned(t.ciphers.iter().map(|c| c.russh_name()).collect()),
            ..Default::default()
        };
        let ssh_config = Arc::new(client::Config {
            window_size: t.window_size,
            maximum_packet_size: t.max_packet_size,
            preferred,
            // Not `nodelay`: russh applies it only in `client::connect`, and gzship connects
            // its own socket (`connect_once` sets it there).
            ..Default::default()
        });
        Ok(Shared {
            addr: config.addr(),
            config,
            credential,
            ssh_config,
            no_fstat: AtomicBool::new(false),
            idle: Idle::default(),
        })
    }

    /// Runs `work`, a source's first request or requests, on an idle connection (see [`Idle`])
    /// or a new one, and hands the connection back with what `work` got. An idle connection
    /// the server dropped meanwhile fails with something other than an answer (`answered`
    /// false): then the other idle connections are let go too (the server may have restarted)
    /// and `work` runs again on a new connection. The caller ends the connection with
    /// [`Shared::done`].
    pub async fn first<'a, R>(
        &self,
        work: impl Fn(Connection) -> BoxFuture<'a, (Connection, R)>,
        answered: impl Fn(&R) -> bool,
    ) -> Result<(Connection, R)> {
        if let Some(conn) = self.idle.take() {
            let (conn, got) = work(conn).await;
            if answered(&got) {
                return Ok((conn, got));
            }
            drop(conn);
            let others = self.idle.take_all();
            debug!(
                addr = %self.addr,
                dropped = others.len(),
                "an idle ssh connection failed; connecting anew"
            );
        }
        Ok(work(connect(self).await?).await)
    }

    /// Ends a connection's work: one in good order (`in_order`: no request outstanding, no
    /// handle open) waits for the next request of this source (see [`Idle`]), any other is
    /// closed.
    pub async fn done(self: &Arc<Self>, conn: Connection, in_order: bool) {
        if !in_order {
            conn.close().await;
            return;
        }
        match self.idle.put(conn) {
            Put::Full(conn) => conn.close().await,
            Put::Kept => {}
            Put::KeptFirst => {
                tokio::spawn(reap(Arc::downgrade(self)));
            }
        }
    }

    /// Closes every idle connection, politely, and waits for that.
    pub async fn close_idle(&self) {
        close_all(self.idle.take_all()).await;
    }
}

/// Closes `conns` politely, together.
async fn close_all(conns: Vec<Connection>) {
    futures::future::join_all(conns.iter().map(Connection::close)).await;
}

/// Closes the idle connections of `shared` as they expire, until none is left (the next
/// [`Shared::done`] starts another); holds `shared` only while closing, so that it can be
/// dropped meanwhile.
async fn reap(shared: Weak<Shared>) {
    let mut wait = IDLE_FOR;
    loop {
        tokio::time::sleep(wait).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (expired, next) = shared.idle.expire();
        close_all(expired).await;
        match next {
            Some(next) => wait = next,
            None => return,
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let idle = self.idle.take_all();
        if let (false, Ok(rt)) = (idle.is_empty(), tokio::runtime::Handle::try_current()) {
            rt.spawn(close_all(idle));
        }
    }
}

/// How long a connection in good order waits for the next request of its source.
const IDLE_FOR: Duration = Duration::from_secs(5);

/// At most this many connections wait at once; more are closed.
const MAX_IDLE: usize = 16;

/// Connections that ended their work in good order, each kept [`IDLE_FOR`] for the next
/// request of the same source: the local runner's master stats the file and its first task
/// reads on that connection, and each task after the first reads on connections the tasks
/// before it are done with. A connection costs a handshake of several round trips and a new
/// session on the server (OpenSSH: a process and the user's shell for `sftp-server`, 0.2 s
/// and 0.15 CPU-s on the bench machine). One reaper task per source closes them as they
/// expire.
#[derive(Default)]
struct Idle(Mutex<IdleState>);

#[derive(Default)]
struct IdleState {
    /// Oldest first.
    conns: Vec<(Instant, Connection)>,
    /// Whether a [`reap`] task is running.
    reaping: bool,
}

/// What [`Idle::put`] did.
enum Put {
    /// Kept; the reaper runs already.
    Kept,
    /// Kept; start the reaper.
    KeptFirst,
    /// Not kept: [`MAX_IDLE`] wait already.
    Full(Connection),
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdleState> {
        // The state is consistent after every statement: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection that waited least, if it is still open and within [`IDLE_FOR`]; newer
    /// ones that are not are dropped on the way (older ones are the reaper's).
    fn take(&self) -> Option<Connection> {
        let mut idle = self.lock();
        while let Some((since, conn)) = idle.conns.pop() {
            if since.elapsed() < IDLE_FOR && !conn.ssh.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, conn: Connection) -> Put {
        let mut idle = self.lock();
        if idle.conns.len() >= MAX_IDLE {
            return Put::Full(conn);
        }
        idle.conns.push((Instant::now(), conn));
        if std::mem::replace(&mut idle.reaping, true) {
            Put::Kept
        } else {
            Put::KeptFirst
        }
    }

    /// Takes out the connections that waited [`IDLE_FOR`], and says when the next one will
    /// have; `None` (and the reaper stops) when none is left.
    fn expire(&self) -> (Vec<Connection>, Option<Duration>) {
        let mut idle = self.lock();
        let fresh = idle
            .conns
            .iter()
            .position(|(since, _)| since.elapsed() < IDLE_FOR)
            .unwrap_or(idle.conns.len());
        let expired = idle.conns.drain(..fresh).map(|(_, conn)| conn).collect();
        let next = idle
            .conns
            .first()
            .map(|(since, _)| IDLE_FOR.saturating_sub(since.elapsed()));
        idle.reaping = next.is_some();
        (expired, next)
    }

    /// Takes out every connection.
    fn take_all(&self) -> Vec<Connection> {
        std::mem::take(&mut self.lock().conns)
            .into_iter()
            .map(|(_, conn)| conn)
            .collect()
    }
}

/// The credential, ready to use: a private key is decoded once, not per connection (an
/// encrypted key's KDF takes a good part of a second).
pub(super) enum Credential {
    Key(Arc<PrivateKey>),
    Password(crate::config::Secret),
}

/// A logged-in SSH connection with a started SFTP session.
pub(super) struct Connection {
    pub sftp: Session,
    /// Largest READ to send: the tuning's request size capped by the server's limit.
    pub read_size: u32,
    /// How many bytes the socket gathers before waking the session (see `socket`).
    pub batching: ReadBatching,
    // Kept so the connection lives as long as the SFTP session.
    ssh: client::Handle<Client>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("read_size", &self.read_size)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Ends the connection politely (channel CLOSE, then DISCONNECT); errors are irrelevant at
    /// this point. Both wait for room in russh's queue to the connection, which a hung
    /// connection never makes: after [`POLITE_CLOSE`] the connection is dropped instead.
    pub async fn close(&self) {
        let polite = async {
            self.sftp.close_session().await;
            let _ = self
                .ssh
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        };
        if tokio::time::timeout(POLITE_CLOSE, polite).await.is_err() {
            debug!(
                ?POLITE_CLOSE,
                "ssh connection not closed politely in time; dropped"
            );
        }
    }
}

/// How long [`Connection::close`] waits to end a connection politely.
const POLITE_CLOSE: Duration = Duration::from_secs(5);

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum AttemptError {
    #[error("tcp connect")]
    Tcp(#[source] std::io::Error),
    #[error("ssh handshake")]
    Handshake(#[source] russh::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("start the sftp subsystem")]
    Subsystem(#[source] BoxError),
    // Final: the error is complete already.
    #[error("{0}")]
    Final(Box<Error>),
}

impl AttemptError {
    fn retryable(&self) -> bool {
        match self {
            AttemptError::Final(_) => false,
            AttemptError::Handshake(e) => {
                !matches!(e, russh::Error::NoCommonAlgo { .. } | russh::Error::Version)
            }
            _ => true,
        }
    }
}

/// Connection attempts all failed.
#[derive(Debug, thiserror::Error)]
#[error("gave up after {attempts} attempts")]
pub(super) struct GaveUp {
    attempts: u32,
    #[source]
    last: AttemptError,
}

/// A handshake failure, or a host key the policy rejects.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    #[error("host key rejected")]
    HostKey { presented: String, expected: String },
}

pub(super) struct Client {
    host: String,
    port: u16,
    addr: String,
    policy: HostKeyPolicy,
}

impl client::Handler for Client {
    type Error = HandshakeError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, HandshakeError> {
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => {
                return Err(HandshakeError::HostKey {
                    presented: format!(
                        "a certificate for {}",
                        cert.public_key().fingerprint(HashAlg::Sha256)
                    ),
                    expected: "host certificates are not accepted".into(),
                });
            }
        };
        let presented = key.fingerprint(HashAlg::Sha256).to_string();
        let reject = |expected: String| {
            Err(HandshakeError::HostKey {
                presented: presented.clone(),
                expected,
            })
        };
        match &self.policy {
            HostKeyPolicy::AcceptAny => {
                warn!(
                    addr = %self.addr,
                    host_key = %presented,
                    "HOST KEY NOT VERIFIED: accepting any host key as configured; \
                     anyone on the path can read this data and the credentials"
                );
                Ok(true)
            }
            HostKeyPolicy::Fingerprint(expected) if *expected == presented => Ok(true),
            HostKeyPolicy::Fingerprint(expected) => {
                reject(format!("the pinned fingerprint is {expected}"))
            }
            HostKeyPolicy::KnownHosts(known) => match known.check(&self.host, self.port, key) {
                Verdict::Trusted => Ok(true),
                Verdict::Revoked { line } => reject(format!(
                    "that key is marked @revoked on line {line} of known_hosts"
                )),
                Verdict::Mismatch { lines } => reject(format!(
                    "known_hosts lists other keys for {} (lines {lines:?}); \
                     the host key changed or someone is intercepting the connection",
                    self.addr
                )),
                Verdict::Unknown => reject(format!(
                    "known_hosts has no entry for {} ({} entries checked)",
                    if self.port == 22 {
                        self.host.clone()
                    } else {
                        format!("[{}]:{}", self.host, self.port)
                    },
                    known.len()
                )),
            },
        }
    }
}

/// Connects, retrying refused, reset, dropped and timed-out attempts with jittered
/// exponential backoff. Host key and login refusals fail at once.
pub(super) async fn connect(shared: &Shared) -> Result<Connection> {
    let t = &shared.config.tuning;
    let mut attempt = 1;
    loop {
        let result = tokio::time::timeout(t.connect_timeout, connect_once(shared))
            .await
            .unwrap_or(Err(AttemptError::Timeout(t.connect_timeout)));
        let err = match result {
            Ok(conn) => {
                if attempt > 1 {
                    info!(addr = %shared.addr, attempt, "ssh connected after retrying");
                }
                return Ok(conn);
            }
            Err(AttemptError::Final(e)) => return Err(*e),
            Err(e) => e,
        };
        if !err.retryable() || attempt >= t.handshake_attempts {
            warn!(
                addr = %shared.addr,
                attempt,
                error = %crate::error::chain(&err),
                "ssh connect failed; giving up"
            );
            return Err(Error::SshConnect {
                addr: shared.addr.clone(),
                source: Box::new(GaveUp {
                    attempts: attempt,
                    last: err,
                }),
            });
        }
        let delay = t.backoff.delay(attempt);
        warn!(
            addr = %shared.addr,
            attempt,
            of = t.handshake_attempts,
            retry_in = ?delay,
            error = %crate::error::chain(&err),
            "ssh connect failed; retrying"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

async fn connect_once(shared: &Shared) -> std::result::Result<Connection, AttemptError> {
    let cfg = &shared.config;
    let socket = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .map_err(AttemptError::Tcp)?;
    // No Nagle delay for the small READ requests sent while earlier answers are still
    // unacknowledged.
    if let Err(e) = socket.set_nodelay(true) {
        warn!(addr = %shared.addr, error = %e, "could not set TCP_NODELAY on the ssh socket");
    }
    let client = Client {
        host: cfg.host.clone(),
        port: cfg.port,
        addr: shared.addr.clone(),
        policy: cfg.host_key.clone(),
    };
    let batching = ReadBatching::default();
    let socket = SshSocket::new(socket, batching.clone());
    let mut ssh = client::connect_stream(shared.ssh_config.clone(), socket, client)
        .await
        .map_err(|e| match e {
            HandshakeError::Ssh(e) => AttemptError::Handshake(e),
            HandshakeError::HostKey {
                presented,
                expected,
            } => AttemptError::Final(Box::new(Error::HostKey {
                addr: shared.addr.clone(),
                presented,
                expected,
            })),
        })?;

    let auth = match &shared.credential {
        Credential::Key(key) => {
            // RSA signs with SHA-2: the best the server announces, SHA-256 when it announces
            // nothing. Never SHA-1.
            let hash = if key.algorithm().is_rsa() {
                match ssh.best_supported_rsa_hash().await {
                    Ok(Some(Some(h))) => Some(h),
                    _ => Some(HashAlg::Sha256),
                }
            } else {
                None
            };
            ssh.authenticate_publickey(&cfg.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                .await
        }
        Credential::Password(p) => ssh.authenticate_password(&cfg.user, p.expose()).await,
    }
    .map_err(AttemptError::Handshake)?;
    if !auth.success() {
        return Err(AttemptError::Final(Box::new(Error::SshAuth {
            addr: shared.addr.clone(),
            user: cfg.user.clone(),
            method: cfg.auth.method(),
        })));
    }

    let mut channel = ssh
        .channel_open_session()
        .await
        .map_err(AttemptError::Handshake)?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(AttemptError::Handshake)?;
    // The server's answer. OpenSSH refuses a subsystem its sshd_config does not name and keeps
    // the channel open: without the answer, INIT would wait out the connect timeout, and every
    // attempt after it would too.
    loop {
        match channel.wait().await {
            Some(russh::ChannelMsg::Success) => break,
            Some(russh::ChannelMsg::Failure) => {
                return Err(AttemptError::Final(Box::new(Error::SshConnect {
                    addr: shared.addr.clone(),
                    source: format!(
                        "logged in as {:?}, but the server refused to start the sftp subsystem: \
                         SFTP is not enabled for this login (OpenSSH: a `Subsystem sftp` line in \
                         sshd_config; no ForceCommand in the way)",
                        cfg.user
                    )
                    .into(),
                })));
            }
            Some(russh::ChannelMsg::Eof | russh::ChannelMsg::Close) | None => {
                return Err(AttemptError::Subsystem(
                    "the server closed the channel instead of answering the request".into(),
                ));
            }
            Some(_) => {}
        }
    }
    let t = &cfg.tuning;
    // Room for a READ answer of request_size plus its header.
    let max_packet_len = (t.request_size + 1024).max(256 * 1024);
    let (sftp, version) = Session::start(channel, max_packet_len)
        .await
        .map_err(|e| AttemptError::Subsystem(Box::new(e)))?;
    let mut read_size = t.request_size;
    if version
        .extensions
        .get("limits@openssh.com")
        .is_some_and(|v| v == "1")
    {
        match sftp.limits().await {
            Ok(limits) if limits.max_read_len > 0 => {
                read_size = read_size.min(u32::try_from(limits.max_read_len).unwrap_or(u32::MAX));
            }
            Ok(_) => {}
            Err(e) => debug!(addr = %shared.addr, error = %e, "limits@openssh.com failed"),
        }
    }
    debug!(addr = %shared.addr, read_size, "sftp session started");
    Ok(Connection {
        sftp,
        read_size,
        batching,
        ssh,
    })
}

/// Whether a request run with a timeout got the server's answer (a status included): the
/// connection is alive.
pub(super) fn answered_in_time<T>(
    got: &std::result::Result<std::result::Result<T, SftpError>, tokio::time::error::Elapsed>,
) -> bool {
    matches!(got, Ok(Ok(_)) | Ok(Err(SftpError::Status(_))))
}

/// Whether an SFTP error is the server saying the file ended.
pub(super) fn is_eof(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == StatusCode::Eof)
}

/// Whether an SFTP error is the server saying it does not implement the request
/// (SSH_FX_OP_UNSUPPORTED): asking again, on this connection or a new one, cannot help.
pub(super) fn is_unsupported(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == StatusCode::OpUnsupported)
}

/// Whether an SFTP error is an answer asking again cannot change: the server does not
/// implement the request, or the path does not exist. (Permission denied is retried: an
/// operator may be fixing the file's mode while the job waits.)
fn is_final(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(s) if matches!(
        s.status_code,
        StatusCode::OpUnsupported | StatusCode::NoSuchFile
    ))
}

/// Whether `err` or any of its causes is such a final SFTP answer (unsupported, no such file):
/// for [`Error::is_retryable`], which must not retry what the server will answer the same way.
pub(crate) fn caused_by_final_answer(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<SftpError>().is_some_and(is_final) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Size, mtime (when the server sends one) and type from SFTP attributes; `None` without a
/// size, which gzship cannot do without.
pub(super) fn stat_of(attrs: &FileAttributes) -> Option<crate::source::SourceStat> {
    Some(crate::source::SourceStat {
        size: attrs.size?,
        mtime: attrs.mtime.map(u64::from),
        is_file: attrs.permissions.is_some() && attrs.file_type().is_file(),
    })
}
