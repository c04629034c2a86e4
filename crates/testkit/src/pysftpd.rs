//! An SFTP server on paramiko (`pysftpd.py` beside this file, pip package `paramiko`, pinned
//! in `scripts/install-test-deps.sh`) for tests, set up like [`Sshd`](crate::sshd::Sshd): its
//! own temporary directory, ed25519 host key, authorized client keys and free port on
//! 127.0.0.1. Dropping the [`PySftpd`] kills it.
//!
//! It stands for the servers OpenSSH and ProFTPD are not:
//! - it does not implement FSTAT on an open handle (paramiko's stock `SFTPHandle.stat` answers
//!   "operation unsupported", as some appliance servers do);
//! - with [`Stat::NoMtime`], no attributes carry a modification time;
//! - with [`Stat::Unsupported`], it does not implement STAT either.
//!
//! One user, [`USER`], logs in with [`PySftpd::client_key`], the keys given to
//! [`PySftpd::start_with_keys`] (read once, at start), or [`PASSWORD`]. Files are asked for by
//! their real paths, as on OpenSSH.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sshd::{self, ClientKey, KeyKind};

const SCRIPT: &str = include_str!("pysftpd.py");
const INSTALL_HINT: &str = "run scripts/install-test-deps.sh (pip install paramiko)";

/// The one user the server lets in.
pub const USER: &str = "gzship-test";
/// [`USER`]'s password.
pub const PASSWORD: &str = "gzship-pysftpd-test-password";

/// What the server answers STAT with. FSTAT it never implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Size, owner, permissions and times, as every common server does.
    Full,
    /// Size, owner and permissions; no times.
    NoMtime,
    /// "operation unsupported".
    Unsupported,
}

impl Stat {
    fn arg(self) -> &'static str {
        match self {
            Stat::Full => "full",
            Stat::NoMtime => "no-mtime",
            Stat::Unsupported => "unsupported",
        }
    }
}

/// A running paramiko SFTP server. See the module docs.
#[derive(Debug)]
pub struct PySftpd {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    host_key_fingerprint: String,
    host_public_key: String,
    client_key: ClientKey,
    key_counter: AtomicU32,
}

impl PySftpd {
    /// Starts a server that also accepts one new key per `(kind, passphrase)` of `keys`, and
    /// returns those keys. Panics with the reason (and the server's log) when it cannot start,
    /// and with the install instruction when paramiko is missing.
    pub fn start_with_keys(
        keys: &[(KeyKind, Option<&str>)],
        stat: Stat,
    ) -> (PySftpd, Vec<ClientKey>) {
        let dir = tempfile::Builder::new()
            .prefix("gzship-pysftpd-")
            .tempdir()
            .expect("create a temp dir for pysftpd");
        fs::create_dir(dir.path().join("data")).expect("create pysftpd's data dir");
        let script = dir.path().join("pysftpd.py");
        fs::write(&script, SCRIPT).expect("write pysftpd.py");
        let host_key = dir.path().join("ssh_host_ed25519_key");
        sshd::keygen(&host_key, KeyKind::Ed25519, None);
        let host_public_key = sshd::read(&host_key.with_extension("pub"))
            .trim()
            .to_owned();
        let host_key_fingerprint = sshd::fingerprint(&host_key.with_extension("pub"));
        let client_key = sshd::make_client_key(dir.path(), "id_ed25519", KeyKind::Ed25519, None);
        let extra: Vec<ClientKey> = keys
            .iter()
            .enumerate()
            .map(|(i, (kind, passphrase))| {
                sshd::make_client_key(dir.path(), &format!("id_extra_{i}"), *kind, *passphrase)
            })
            .collect();
        let authorized: String = std::iter::once(&client_key)
            .chain(&extra)
            .map(|k| format!("{}\n", k.public_key))
            .collect();
        let authorized_keys = dir.path().join("authorized_keys");
        fs::write(&authorized_keys, authorized).expect("write pysftpd's authorized_keys");

        let log_path = dir.path().join("pysftpd.log");
        let mut last_log = String::new();
        // A port found free can be taken by another test before the server binds it: try again.
        for _ in 0..5 {
            let port = crate::net::free_port();
            let log = fs::File::create(&log_path).expect("create pysftpd.log");
            let mut cmd = Command::new("python3");
            cmd.arg(&script)
                .arg("--port")
                .arg(port.to_string())
                .arg("--host-key")
                .arg(&host_key)
                .arg("--authorized-keys")
                .arg(&authorized_keys)
                .args(["--user", USER, "--password", PASSWORD])
                .args(["--stat", stat.arg()]);
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn python3 to run pysftpd.py: {e}; {INSTALL_HINT}"));
            match sshd::wait_ready(&mut child, port) {
                Ok(()) => {
                    let server = PySftpd {
                        dir,
                        child,
                        port,
                        host_key_fingerprint,
                        host_public_key,
                        client_key,
                        key_counter: AtomicU32::new(0),
                    };
                    return (server, extra);
                }
                Err(reason) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    if log.contains("No module named 'paramiko'") {
                        panic!("paramiko is missing: {INSTALL_HINT}\n{log}");
                    }
                    last_log = format!("{reason}; log:\n{log}");
                }
            }
        }
        panic!("pysftpd did not start: {last_log}");
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host key's fingerprint as `ssh-keygen -lf` prints it: `SHA256:...`.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    /// The host public key line (`ssh-ed25519 AAAA... comment`).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// A known_hosts line for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        sshd::known_hosts_line(self.port, &self.host_public_key)
    }

    /// An authorized ed25519 key of [`USER`], without passphrase.
    pub fn client_key(&self) -> &ClientKey {
        &self.client_key
    }

    /// Makes a new client key pair that this server does not accept (see
    /// [`PySftpd::start_with_keys`] for keys it does).
    pub fn new_unauthorized_key(&self, kind: KeyKind, passphrase: Option<&str>) -> ClientKey {
        let n = self.key_counter.fetch_add(1, Ordering::Relaxed);
        sshd::make_client_key(self.dir.path(), &format!("id_{n}"), kind, passphrase)
    }

    /// The directory to put test files in.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log so far (its stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pysftpd.log")).unwrap_or_default()
    }
}

impl Drop for PySftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
