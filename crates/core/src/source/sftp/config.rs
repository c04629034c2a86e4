//! Configuration of the SFTP source: where, who, which host key, and how fast.

use std::path::Path;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::Secret;
use crate::error::{Error, Result};
use crate::url::SourceUrl;

use super::known_hosts::KnownHosts;

/// How to reach and log in to the SFTP server. Built once, validated, then handed to
/// [`SftpSource::new`](super::SftpSource::new). `Debug` never shows a secret.
#[derive(Debug, Clone)]
pub struct SftpConfig {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// The credential to log in with.
    pub auth: SshAuth,
    /// How the server's host key is verified. There is no way to skip it silently.
    pub host_key: HostKeyPolicy,
    /// Speed, timeouts and retries.
    pub tuning: SftpTuning,
}

impl SftpConfig {
    /// A config for the server of `url`, logging in as the URL's user or else `default_user`,
    /// with default [`SftpTuning`].
    pub fn from_url(
        url: &SourceUrl,
        default_user: Option<&str>,
        auth: SshAuth,
        host_key: HostKeyPolicy,
    ) -> Result<Self> {
        let user = url
            .user
            .clone()
            .or_else(|| default_user.map(str::to_owned))
            .ok_or_else(|| {
                Error::invalid(
                    "sftp config",
                    format!("{url} names no user and no default user is configured"),
                )
            })?;
        let config = SftpConfig {
            host: url.host.clone(),
            port: url.port,
            user,
            auth,
            host_key,
            tuning: SftpTuning::default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Replaces the tuning.
    pub fn with_tuning(mut self, tuning: SftpTuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// `host:port` (IPv6 in brackets), as errors and logs name the server.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Checks every field; [`SftpSource::new`](super::SftpSource::new) calls it.
    pub fn validate(&self) -> Result<()> {
        if self.host.is_empty() {
            return Err(Error::invalid("sftp config", "the host is empty"));
        }
        if self.port == 0 {
            return Err(Error::invalid("sftp config", "the port is 0"));
        }
        if self.user.is_empty() {
            return Err(Error::invalid("sftp config", "the user is empty"));
        }
        if let HostKeyPolicy::Fingerprint(fp) = &self.host_key {
            validate_fingerprint(fp)?;
        }
        self.tuning.validate()
    }
}

/// The credential offered to the server.
#[derive(Debug, Clone)]
pub enum SshAuth {
    /// An OpenSSH private key (ed25519, ECDSA or RSA; RSA signs with `rsa-sha2-512` or
    /// `rsa-sha2-256`, never SHA-1), as the text of its file.
    PrivateKey {
        /// The key file's text (`-----BEGIN OPENSSH PRIVATE KEY-----...`; PEM RSA/EC keys too).
        key: Secret,
        /// The passphrase, when the key is encrypted.
        passphrase: Option<Secret>,
    },
    /// A password.
    Password(Secret),
}

impl SshAuth {
    /// A private key given as the text of its file.
    pub fn private_key(text: impl Into<String>, passphrase: Option<&str>) -> Self {
        SshAuth::PrivateKey {
            key: Secret::new(text),
            passphrase: passphrase.map(Secret::new),
        }
    }

    /// A private key read from `path`.
    pub fn private_key_file(path: &Path, passphrase: Option<&str>) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("read private key", path, e))?;
        Ok(Self::private_key(text, passphrase))
    }

    /// A password.
    pub fn password(password: impl Into<String>) -> Self {
        SshAuth::Password(Secret::new(password))
    }

    /// "private key" or "password", as [`Error::SshAuth`] names the method.
    pub fn method(&self) -> &'static str {
        match self {
            SshAuth::PrivateKey { .. } => "private key",
            SshAuth::Password(_) => "password",
        }
    }
}

/// How the server's host key is verified on every connection.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// The key's SHA-256 fingerprint exactly as `ssh-keygen -lf` prints it: `SHA256:` and 43
    /// base64 characters. Build it with [`HostKeyPolicy::fingerprint`] to have it checked.
    Fingerprint(String),
    /// OpenSSH known_hosts entries (plain, `[host]:port` and hashed `|1|salt|hash` names,
    /// wildcards, negations, `@revoked`). The server must be listed with this key.
    KnownHosts(KnownHosts),
    /// Accept whatever key the server presents. Only for local experiments: it allows a
    /// man-in-the-middle to read the data and steal a password. Every connection logs a
    /// warning.
    AcceptAny,
}

impl HostKeyPolicy {
    /// A pinned fingerprint (`SHA256:...`, as `ssh-keygen -lf` prints it).
    pub fn fingerprint(fingerprint: &str) -> Result<Self> {
        let fp = fingerprint.trim();
        validate_fingerprint(fp)?;
        Ok(HostKeyPolicy::Fingerprint(fp.to_owned()))
    }

    /// The entries of a known_hosts file's text.
    pub fn known_hosts(text: &str) -> Self {
        HostKeyPolicy::KnownHosts(KnownHosts::parse(text))
    }

    /// The entries of the known_hosts file at `path`.
    pub fn known_hosts_file(path: &Path) -> Result<Self> {
        Ok(HostKeyPolicy::KnownHosts(KnownHosts::from_file(path)?))
    }
}

fn validate_fingerprint(fp: &str) -> Result<()> {
    let b64 = fp.strip_prefix("SHA256:").ok_or_else(|| {
        Error::invalid(
            "host key fingerprint",
            format!("{fp:?} does not start with SHA256: (use `ssh-keygen -lf KEY.pub`)"),
        )
    })?;
    let valid = b64.len() == 43
        && b64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !valid {
        return Err(Error::invalid(
            "host key fingerprint",
            format!("{fp:?} is not SHA256: followed by 43 base64 characters"),
        ));
    }
    Ok(())
}

/// A symmetric cipher the client may negotiate, most preferred first in
/// [`SftpTuning::ciphers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshCipher {
    /// `aes128-gcm@openssh.com`: fastest where the CPU has AES-NI and CLMUL (any x86-64 or
    /// ARMv8 server or Lambda).
    Aes128Gcm,
    /// `aes256-gcm@openssh.com`.
    Aes256Gcm,
    /// `chacha20-poly1305@openssh.com`: OpenSSH's default; faster only without AES hardware.
    Chacha20Poly1305,
    /// `aes256-ctr` (with a MAC): for old servers.
    Aes256Ctr,
    /// `aes128-ctr` (with a MAC): for old servers.
    Aes128Ctr,
}

impl std::str::FromStr for SshCipher {
    type Err = String;

    /// OpenSSH's cipher names (`aes128-gcm@openssh.com`, `chacha20-poly1305@openssh.com`,
    /// `aes256-ctr`, ...), the `@openssh.com` suffix optional.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().trim_end_matches("@openssh.com") {
            "aes128-gcm" => Ok(SshCipher::Aes128Gcm),
            "aes256-gcm" => Ok(SshCipher::Aes256Gcm),
            "chacha20-poly1305" => Ok(SshCipher::Chacha20Poly1305),
            "aes256-ctr" => Ok(SshCipher::Aes256Ctr),
            "aes128-ctr" => Ok(SshCipher::Aes128Ctr),
            other => Err(format!(
                "unknown cipher {other:?} (known: aes128-gcm@openssh.com, aes256-gcm@openssh.com, \
                 chacha20-poly1305@openssh.com, aes256-ctr, aes128-ctr)"
            )),
        }
    }
}

impl SshCipher {
    pub(super) fn russh_name(self) -> russh::cipher::Name {
        match self {
            SshCipher::Aes128Gcm => russh::cipher::AES_128_GCM,
            SshCipher::Aes256Gcm => russh::cipher::AES_256_GCM,
            SshCipher::Chacha20Poly1305 => russh::cipher::CHACHA20_POLY1305,
            SshCipher::Aes256Ctr => russh::cipher::AES_256_CTR,
            SshCipher::Aes128Ctr => russh::cipher::AES_128_CTR,
        }
    }
}

/// OpenSSH's `sftp-server` answers at most this many bytes per READ (its `limits@openssh.com`
/// says so; 256 KiB minus room for headers).
pub const OPENSSH_MAX_READ: u32 = 261_120;

/// How the source talks to the server. Every field documents its default, its trade-off and
/// the symptom when it is wrong (in the manner of rclone's sftp backend).
#[derive(Debug, Clone)]
pub struct SftpTuning {
    /// Bytes asked for by one SFTP READ. Default 261,120 (255 KiB), OpenSSH's largest.
    /// Capped by the server's `limits@openssh.com` when it sends one. Smaller requests cost
    /// more round trips and per-packet work; larger ones than the server allows come back
    /// short (and are then completed with more requests). Too small: low throughput with
    /// little CPU use. Servers that allow more are not asked for more by default: asyncssh
    /// advertises 4 MiB, and 1 MiB READs from it were slower than 255 KiB ones (median 249 vs
    /// 366 MB/s at 16 in flight, 170 vs 176 at 4; `bench/sftp_read.sh --server asyncssh
    /// --request-kib 255,1024 --in-flight 4,16`).
    pub request_size: u32,
    /// READ requests in flight per connection. Default 16. Memory per range is
    /// `requests_in_flight * request_size * connections` (4 MiB by default). Throughput is
    /// about `requests_in_flight * request_size / round trip time`: raise it for distant
    /// servers. Too low: throughput far below the link and the cipher, worse with latency.
    /// Too high: memory grows, and on loopback throughput drops again (measured: 16 gave
    /// ~590 MB/s, 32 gave ~230-380 MB/s; buffers no longer fit in cache).
    pub requests_in_flight: usize,
    /// SSH connections a range is read over. Default 1. Each connection decrypts on its own
    /// core; requests are dealt to connections in turn and bytes still come out in order. Raise
    /// it only where one core's cipher is the limit and spare cores exist (measure with
    /// `bench/sftp_read.sh --connections 1,2`; on 2 cores shared with sshd, 2 connections were
    /// slower: ~220 vs ~350 MB/s). Each one costs a handshake and counts against the server's
    /// `MaxStartups` and `MaxSessions`.
    pub connections: usize,
    /// Time allowed for one TCP connect, SSH handshake, login and SFTP start. Default 30 s.
    /// Too short: slow or busy servers fail with "timed out"; too long: a dead server holds a
    /// worker that long before each retry.
    pub connect_timeout: Duration,
    /// Time allowed for one SFTP request's answer (READ, STAT, OPEN). Default 60 s. On expiry the
    /// connection counts as lost and is reconnected. Too short: a busy server's slow answers
    /// cause needless reconnects; too long: a hung connection stalls the range that long.
    pub request_timeout: Duration,
    /// Attempts at connecting (TCP, handshake, SFTP start) before giving up. Default 6. Refused
    /// or reset connections and handshakes dropped by OpenSSH's `MaxStartups` are retried;
    /// host key and login refusals are not. Too low: bursts of workers fail on `MaxStartups`.
    pub handshake_attempts: u32,
    /// Delays between connection attempts: the first (default 250 ms) doubles on each retry,
    /// jittered, up to the longest (default 10 s). Too short: retries hit a saturated server
    /// again in lockstep; too long: recovering from a blip costs seconds.
    pub backoff: Backoff,
    /// Reconnects allowed while reading one range, after the connection was lost or a request
    /// timed out; each resumes at the first byte not yet delivered. The count resets whenever
    /// bytes are delivered. Default 5. Too low: a flaky network fails whole tasks.
    pub reconnect_attempts: u32,
    /// SSH channel window: bytes the server may send before the client acknowledges. Default
    /// 16 MiB. It must exceed `requests_in_flight * request_size`, or the server waits for
    /// window updates and throughput drops.
    pub window_size: u32,
    /// Largest SSH data packet the client accepts. Default 65,535 (fewer packets, less
    /// per-packet work); OpenSSH sends at most 32 KiB of channel data per packet anyway.
    pub max_packet_size: u32,
    /// Ciphers offered, most preferred first. Default AES-128-GCM, AES-256-GCM,
    /// chacha20-poly1305, AES-256-CTR, AES-128-CTR. With AES hardware, GCM is the fastest;
    /// without it, put chacha20-poly1305 first. Empty: no connection can be made.
    pub ciphers: Vec<SshCipher>,
}

impl Default for SftpTuning {
    fn default() -> Self {
        SftpTuning {
            request_size: OPENSSH_MAX_READ,
            requests_in_flight: 16,
            connections: 1,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            handshake_attempts: 6,
            backoff: Backoff {
                base: Duration::from_millis(250),
                max: Duration::from_secs(10),
            },
            reconnect_attempts: 5,
            window_size: 16 * 1024 * 1024,
            max_packet_size: 65_535,
            ciphers: vec![
                SshCipher::Aes128Gcm,
                SshCipher::Aes256Gcm,
                SshCipher::Chacha20Poly1305,
                SshCipher::Aes256Ctr,
                SshCipher::Aes128Ctr,
            ],
        }
    }
}

impl SftpTuning {
    /// Checks the bounds of every field.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::invalid("sftp tuning", reason));
        if !(1024..=16 * 1024 * 1024).contains(&self.request_size) {
            return bad(format!(
                "request_size {} is outside 1 KiB..=16 MiB",
                self.request_size
            ));
        }
        if !(1..=1024).contains(&self.requests_in_flight) {
            return bad(format!(
                "requests_in_flight {} is outside 1..=1024",
                self.requests_in_flight
            ));
        }
        if !(1..=16).contains(&self.connections) {
            return bad(format!(
                "connections {} is outside 1..=16",
                self.connections
            ));
        }
        if self.handshake_attempts == 0 {
            return bad("handshake_attempts is 0: no connection would be tried".into());
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("connect_timeout and request_timeout must be above zero".into());
        }
        self.backoff.validate()?;
        if self.window_size < 32 * 1024 {
            return bad(format!("window_size {} is below 32 KiB", self.window_size));
        }
        if !(1024..=65_535).contains(&self.max_packet_size) {
            return bad(format!(
                "max_packet_size {} is outside 1024..=65535",
                self.max_packet_size
            ));
        }
        if self.ciphers.is_empty() {
            return bad("ciphers is empty: no connection could be made".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cfg =
            SftpConfig::from_url(&url, Some("bob"), auth(), HostKeyPolicy::AcceptAny).unwrap();
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
}
