//! [`SftpServerConfig`]: what the server serves, to whom, and its limits.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use russh::keys::PublicKey;

/// The largest READ reply payload, the same as OpenSSH's `sftp-server` (256 KiB minus 1 KiB of
/// headroom for the packet header). Larger requests are answered with this many bytes.
pub const MAX_READ_LEN: u32 = 261_120;

/// A password whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Password(value.into())
    }

    /// The password itself; call only where it is handed to the protocol that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time that depends only on the lengths, so a wrong guess's timing does not
    /// reveal how many leading bytes were right.
    pub(crate) fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        diff == 0 && a.len() == b.len()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Configuration of an [`SftpServer`](crate::SftpServer).
///
/// Build it with [`SftpServerConfig::new`] and the `with_*` methods; [`SftpServer::start`]
/// validates it (the root must be a directory, at least one way to log in must be set).
///
/// [`SftpServer::start`]: crate::SftpServer::start
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SftpServerConfig {
    /// The only directory served. Client paths are resolved inside it: `/` and the login
    /// directory are this directory, and `..` or a symlink that would leave it is refused with
    /// permission denied.
    pub root: PathBuf,
    /// Address to listen on. Default `127.0.0.1:0`: loopback only, on a port the OS picks
    /// (read it back with [`SftpServer::addr`](crate::SftpServer::addr)).
    pub bind: SocketAddr,
    /// The one user name accepted; any other user is refused whatever the credentials.
    pub user: String,
    /// Password accepted for [`user`](Self::user). `None` disables password authentication.
    pub password: Option<Password>,
    /// Public keys accepted for [`user`](Self::user). Empty disables public key authentication.
    pub authorized_keys: Vec<PublicKey>,
    /// Most SSH connections served at once; a connection past this is closed right after the
    /// TCP accept (the client sees the connection reset before the SSH banner). Default `None`:
    /// no limit. Too low shows up as connection errors in a client that opens many connections.
    pub max_sessions: Option<usize>,
    /// READ requests served at once per SFTP session. Default 64, which covers a client that
    /// pipelines 64 reads. Each in-flight read holds up to [`MAX_READ_LEN`] bytes, so memory per
    /// session is at most this times 255 KiB (16 MiB at 64). Too low starves a pipelining client;
    /// requests past it wait in the SSH channel, they are not refused.
    pub max_reads_in_flight: usize,
    /// Files and directories one SFTP session may hold open. Default 256. An OPEN past it gets a
    /// failure status.
    pub max_open_handles: usize,
    /// How long a refused login takes, so timing does not tell a wrong user from a wrong
    /// password. Default 1 s (russh's default); tests set zero to stay fast.
    pub auth_rejection_time: Duration,
}

impl SftpServerConfig {
    /// Serves `root` to `user` on `127.0.0.1:0`; add a password or a key before starting.
    pub fn new(root: impl Into<PathBuf>, user: impl Into<String>) -> Self {
        SftpServerConfig {
            root: root.into(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            user: user.into(),
            password: None,
            authorized_keys: Vec::new(),
            max_sessions: None,
            max_reads_in_flight: 64,
            max_open_handles: 256,
            auth_rejection_time: Duration::from_secs(1),
        }
    }

    /// Accepts this password for the user.
    pub fn with_password(mut self, password: Password) -> Self {
        self.password = Some(password);
        self
    }

    /// Accepts this public key for the user (may be called more than once).
    pub fn with_authorized_key(mut self, key: PublicKey) -> Self {
        self.authorized_keys.push(key);
        self
    }

    /// Listens on this address instead of `127.0.0.1:0`.
    pub fn with_bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }

    /// Serves at most this many SSH connections at once.
    pub fn with_max_sessions(mut self, max_sessions: usize) -> Self {
        self.max_sessions = Some(max_sessions);
        self
    }

    /// Serves at most this many READ requests at once per SFTP session (at least 1).
    pub fn with_max_reads_in_flight(mut self, reads: usize) -> Self {
        self.max_reads_in_flight = reads;
        self
    }

    /// Takes this long to refuse a login.
    pub fn with_auth_rejection_time(mut self, time: Duration) -> Self {
        self.auth_rejection_time = time;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let p = Password::new("hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!format!("{p}").contains("hunter2"));
        let config = SftpServerConfig::new("/tmp", "demo").with_password(p.clone());
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(p.expose(), "hunter2");
    }

    #[test]
    fn password_matches_only_itself() {
        let p = Password::new("hunter2");
        assert!(p.matches("hunter2"));
        assert!(!p.matches("hunter"));
        assert!(!p.matches("hunter22"));
        assert!(!p.matches("Hunter2"));
        assert!(!p.matches(""));
        assert!(Password::new("").matches(""));
    }
}
