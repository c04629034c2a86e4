//! ProFTPD's mod_sftp (Debian's `proftpd-core` and `proftpd-mod-crypto`) for tests, set up the
//! way [`Sshd`](crate::sshd::Sshd) sets up OpenSSH: one per test, with its own temporary
//! directory, private config (no file of `/etc/proftpd` is read), ed25519 host key, authorized
//! client keys, log files and free port on 127.0.0.1. Dropping the [`Proftpd`] kills the server
//! and its sessions and removes the directory.
//!
//! ProFTPD runs as root (it must, to switch to the logged-in user) and knows one user of its own,
//! [`USER`], from a private passwd file (`AuthUserFile`): no system account is needed, and the
//! user's home is [`Proftpd::data_dir`], so the login finds it. [`USER`] logs in with
//! [`Proftpd::client_key`], any key made with [`Proftpd::new_client_key`], or [`PASSWORD`].
//! Files are asked for by their real paths, as on OpenSSH.
//!
//! mod_sftp logs to [`Proftpd::sftp_log`]; when a session ends with file handles the client
//! never closed, it logs "aborting N unclosed file handle(s)" there.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use gzship_core::backoff::Backoff;

use crate::sshd::{self, ClientKey, KeyKind};

const PROFTPD: &str = "/usr/sbin/proftpd";
const MOD_SFTP: &str = "/usr/lib/proftpd/mod_sftp.so";
const INSTALL_HINT: &str =
    "run scripts/install-test-deps.sh (apt-get install proftpd-core proftpd-mod-crypto)";

/// The one user ProFTPD lets in.
pub const USER: &str = "gzship-test";
/// [`USER`]'s password. Test-only: [`USER`] exists only in the server's private passwd file.
pub const PASSWORD: &str = "gzship-proftpd-test-password";

/// Wait between checks for something the server is about to do (answer, end a session).
const POLL: Backoff = Backoff {
    base: Duration::from_millis(5),
    max: Duration::from_millis(100),
};

/// A running ProFTPD with mod_sftp. See the module docs.
#[derive(Debug)]
pub struct Proftpd {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    host_key_fingerprint: String,
    host_public_key: String,
    client_key: ClientKey,
    key_counter: AtomicU32,
}

impl Proftpd {
    /// Starts a server on a free port of 127.0.0.1 and returns once it sends its SSH banner.
    ///
    /// Panics with the reason (and the server's logs) when it cannot; panics with the install
    /// instruction when ProFTPD or mod_sftp is missing, and when not running as root.
    pub fn start() -> Proftpd {
        if !Path::new(PROFTPD).exists() || !Path::new(MOD_SFTP).exists() {
            panic!("{PROFTPD} or {MOD_SFTP} is missing: {INSTALL_HINT}");
        }
        if sshd::run(Command::new("id").arg("-u")).trim() != "0" {
            panic!(
                "ProFTPD must run as root to switch to the logged-in user: run the tests as root"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("gzship-proftpd-")
            .tempdir()
            .expect("create a temp dir for proftpd");
        // The logged-in user (nobody's uid) reads the served files through this directory.
        sshd::set_mode(dir.path(), 0o755);
        let data_dir = dir.path().join("data");
        fs::create_dir(&data_dir).expect("create proftpd's data dir");
        sshd::set_mode(&data_dir, 0o777);
        fs::create_dir(dir.path().join("authorized")).expect("create proftpd's key dir");

        let host_key = dir.path().join("ssh_host_ed25519_key");
        sshd::keygen(&host_key, KeyKind::Ed25519, None);
        let host_public_key = sshd::read(&host_key.with_extension("pub"))
            .trim()
            .to_owned();
        let host_key_fingerprint = sshd::fingerprint(&host_key.with_extension("pub"));
        write_passwd(dir.path(), &data_dir);
        let client_key = sshd::make_client_key(dir.path(), "id_ed25519", KeyKind::Ed25519, None);
        authorize(dir.path(), &client_key);

        let mut last_log = String::new();
        // A port found free can be taken by another test before proftpd binds it: try again.
        for _ in 0..5 {
            let port = crate::net::free_port();
            write_config(dir.path(), port, &host_key);
            let stderr = fs::File::create(dir.path().join("stderr.log"))
                .expect("create proftpd's stderr.log");
            let mut child = Command::new(PROFTPD)
                .arg("--nodaemon")
                .arg("--config")
                .arg(dir.path().join("proftpd.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                // Its own process group, so that one kill ends the sessions it forks too.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {PROFTPD}: {e}; {INSTALL_HINT}"));
            match sshd::wait_ready(&mut child, port) {
                Ok(()) => {
                    return Proftpd {
                        dir,
                        child,
                        port,
                        host_key_fingerprint,
                        host_public_key,
                        client_key,
                        key_counter: AtomicU32::new(0),
                    };
                }
                Err(reason) => {
                    crate::process::kill_group(&mut child);
                    last_log = format!("{reason}; logs:\n{}", logs(dir.path()));
                }
            }
        }
        panic!("proftpd did not start: {last_log}");
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

    /// Makes a new client key pair; when `authorize`, [`USER`] may log in with it (mod_sftp
    /// reads the authorized keys at each login).
    pub fn new_client_key(
        &self,
        kind: KeyKind,
        passphrase: Option<&str>,
        authorize_it: bool,
    ) -> ClientKey {
        let n = self.key_counter.fetch_add(1, Ordering::Relaxed);
        let key = sshd::make_client_key(self.dir.path(), &format!("id_{n}"), kind, passphrase);
        if authorize_it {
            authorize(self.dir.path(), &key);
        }
        key
    }

    /// The directory to put test files in, [`USER`]'s home.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// mod_sftp's log so far (`SFTPLog`): logins, and handles a session left unclosed.
    pub fn sftp_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sftp.log")).unwrap_or_default()
    }

    /// How many sessions (per-connection proftpd processes) are open now.
    pub fn session_count(&self) -> usize {
        sshd::children_of(self.child.id())
            .into_iter()
            .filter(|pid| sshd::is_alive(*pid))
            .count()
    }

    /// Waits until every session has ended (and so written its last lines to the log).
    /// Panics after 20 s. Async, so that the client's connections, which end on the same
    /// runtime, can send their last packets meanwhile.
    pub async fn wait_until_sessions_end(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut attempt = 0;
        while self.session_count() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} sessions of proftpd {} still open after 20 s",
                self.session_count(),
                self.child.id()
            );
            attempt += 1;
            tokio::time::sleep(POLL.delay(attempt)).await;
        }
    }
}

impl Drop for Proftpd {
    fn drop(&mut self) {
        crate::process::kill_group(&mut self.child);
    }
}

/// The server's logs, for a failure message.
fn logs(dir: &Path) -> String {
    ["stderr.log", "system.log", "sftp.log"]
        .iter()
        .map(|name| {
            let text = fs::read_to_string(dir.join(name)).unwrap_or_default();
            format!("--- {name}\n{text}")
        })
        .collect()
}

fn write_config(dir: &Path, port: u16, host_key: &Path) {
    let config = format!(
        "# gzship test proftpd: see crates/testkit/src/proftpd.rs\n\
         ServerName \"gzship test\"\n\
         ServerType standalone\n\
         Port {port}\n\
         DefaultAddress 127.0.0.1\n\
         SocketBindTight on\n\
         UseIPv6 off\n\
         User nobody\n\
         Group nogroup\n\
         PidFile {dir}/proftpd.pid\n\
         ScoreboardFile {dir}/proftpd.scoreboard\n\
         DelayTable none\n\
         DelayEngine off\n\
         WtmpLog off\n\
         UseReverseDNS off\n\
         ServerIdent off\n\
         RequireValidShell off\n\
         AuthPAM off\n\
         AuthOrder mod_auth_file.c\n\
         AuthUserFile {dir}/passwd\n\
         AuthGroupFile {dir}/group\n\
         SystemLog {dir}/system.log\n\
         TransferLog none\n\
         ModulePath /usr/lib/proftpd\n\
         LoadModule mod_sftp.c\n\
         SFTPEngine on\n\
         SFTPLog {dir}/sftp.log\n\
         SFTPHostKey {host_key}\n\
         SFTPAuthorizedUserKeys file:{dir}/authorized/%u\n\
         SFTPAuthMethods publickey password\n",
        dir = dir.display(),
        host_key = host_key.display(),
    );
    fs::write(dir.join("proftpd.conf"), config).expect("write proftpd.conf");
}

/// [`USER`] with [`PASSWORD`] (SHA-512 crypt, made by `openssl passwd`), nobody's uid and
/// nogroup's gid, at home in `home`.
fn write_passwd(dir: &Path, home: &Path) {
    let hash = sshd::run(
        Command::new("openssl")
            .args(["passwd", "-6", "-salt", "gzshiptest"])
            .arg(PASSWORD),
    );
    let passwd = format!(
        "{USER}:{}:65534:65534::{}:/bin/sh\n",
        hash.trim(),
        home.display()
    );
    fs::write(dir.join("passwd"), passwd).expect("write proftpd's passwd");
    sshd::set_mode(&dir.join("passwd"), 0o600);
    fs::write(dir.join("group"), "nogroup:x:65534:\n").expect("write proftpd's group");
}

/// Adds `key` to [`USER`]'s authorized keys, in the RFC 4716 format mod_sftp reads
/// (`ssh-keygen -e`).
fn authorize(dir: &Path, key: &ClientKey) {
    let rfc4716 = sshd::run(
        Command::new("ssh-keygen")
            .arg("-e")
            .arg("-f")
            .arg(key.private_key_path.with_extension("pub")),
    );
    let path = dir.join("authorized").join(USER);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open proftpd's authorized keys");
    f.write_all(rfc4716.as_bytes())
        .expect("append to proftpd's authorized keys");
}
