//! A real OpenSSH `sshd` (Debian's `openssh-server`) for tests, one per test: its own temporary
//! directory, config, ed25519 host key, authorized client keys, log file and free port on
//! 127.0.0.1. Dropping the [`Sshd`] kills the server and its sessions and removes the directory.
//!
//! Logins:
//! - public key: as the user running the tests ([`Sshd::user`]), with [`Sshd::client_key`] or
//!   any key made with [`Sshd::new_client_key`];
//! - password: as the dedicated user [`PASSWORD_USER`] with [`PASSWORD`]. sshd runs without PAM,
//!   so it checks `/etc/shadow`: that user is created (by `scripts/install-test-deps.sh`, or here
//!   when missing and running as root) with that known password. It is never root's password.
//!
//! The SFTP subsystem is Debian's `/usr/lib/openssh/sftp-server`, as on a stock server.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gzship_core::backoff::Backoff;

const SSHD: &str = "/usr/sbin/sshd";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
const INSTALL_HINT: &str = "run scripts/install-test-deps.sh (apt-get install openssh-server)";

/// Wait between checks for something sshd or the system is about to do (accept connections,
/// end killed sessions, release /etc/shadow's lock): short at first, since it usually takes
/// milliseconds, and bounded by each loop's deadline or attempt count.
const POLL: Backoff = Backoff {
    base: Duration::from_millis(5),
    max: Duration::from_millis(100),
};

/// The user that logs in with a password (see the module docs).
pub const PASSWORD_USER: &str = "gzship-test";
/// [`PASSWORD_USER`]'s password. Test-only; that user has no other use.
pub const PASSWORD: &str = "gzship-test-password";

/// Key types for client keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `ssh-ed25519`.
    Ed25519,
    /// `ecdsa-sha2-nistp256`.
    Ecdsa,
    /// RSA 3072 (signs with `rsa-sha2-256/512`).
    Rsa,
}

impl KeyKind {
    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            KeyKind::Ed25519 => &["-t", "ed25519"],
            KeyKind::Ecdsa => &["-t", "ecdsa", "-b", "256"],
            KeyKind::Rsa => &["-t", "rsa", "-b", "3072"],
        }
    }
}

/// A client key pair made by `ssh-keygen`.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// Key type.
    pub kind: KeyKind,
    /// The private key file (OpenSSH format).
    pub private_key_path: PathBuf,
    /// The private key file's text (`-----BEGIN OPENSSH PRIVATE KEY-----...`).
    pub private_key_pem: String,
    /// The passphrase the private key is encrypted with, if any.
    pub passphrase: Option<String>,
    /// The public key line (`ssh-ed25519 AAAA... comment`).
    pub public_key: String,
}

/// A running OpenSSH server. See the module docs.
#[derive(Debug)]
pub struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    host_key_fingerprint: String,
    host_public_key: String,
    client_key: ClientKey,
    user: String,
    key_counter: std::sync::atomic::AtomicU32,
}

impl Sshd {
    /// Starts a server on a free port of 127.0.0.1 and returns once it accepts SSH connections.
    ///
    /// Panics with the reason (and sshd's log) when it cannot; panics with the install
    /// instruction when `/usr/sbin/sshd` is missing.
    pub fn start() -> Sshd {
        Sshd::start_with(true)
    }

    /// A server like [`Sshd::start`]'s whose configuration names no sftp subsystem, as on hosts
    /// that allow shell logins but not SFTP: it refuses the subsystem request.
    pub fn start_without_sftp() -> Sshd {
        Sshd::start_with(false)
    }

    fn start_with(sftp: bool) -> Sshd {
        if !Path::new(SSHD).exists() || !Path::new(SFTP_SERVER).exists() {
            panic!("{SSHD} or {SFTP_SERVER} is missing: {INSTALL_HINT}");
        }
        // sshd refuses to start without its privilege separation directory.
        if let Err(e) = fs::create_dir_all("/run/sshd") {
            panic!("create /run/sshd for sshd's privilege separation: {e}");
        }
        ensure_password_user();

        let dir = tempfile::Builder::new()
            .prefix("gzship-sshd-")
            .tempdir()
            .expect("create a temp dir for sshd");
        // The password user reads test files and authorized_keys through this directory.
        set_mode(dir.path(), 0o755);
        let data_dir = dir.path().join("data");
        fs::create_dir(&data_dir).expect("create sshd's data dir");
        set_mode(&data_dir, 0o777);

        let host_key = dir.path().join("ssh_host_ed25519_key");
        keygen(&host_key, KeyKind::Ed25519, None);
        let host_public_key = read(&host_key.with_extension("pub")).trim().to_owned();
        let host_key_fingerprint = fingerprint(&host_key.with_extension("pub"));

        let user = current_user();
        let client_key = make_client_key(dir.path(), "id_ed25519", KeyKind::Ed25519, None);
        authorize(dir.path(), &client_key.public_key);

        let mut last_log = String::new();
        // A port found free can be taken by another test before sshd binds it: try again.
        for _ in 0..5 {
            let port = crate::net::free_port();
            write_config(dir.path(), port, &host_key, sftp);
            let log_path = dir.path().join("sshd.log");
            let log = fs::File::create(&log_path).expect("create sshd.log");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {SSHD}: {e}; {INSTALL_HINT}"));
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    return Sshd {
                        dir,
                        child,
                        port,
                        host_key_fingerprint,
                        host_public_key,
                        client_key,
                        user,
                        key_counter: Default::default(),
                    };
                }
                Err(reason) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    last_log = format!("{reason}; sshd log:\n{log}");
                }
            }
        }
        panic!("sshd did not start: {last_log}");
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// `sftp://USER@127.0.0.1:PORT/PATH` for a file in [`Sshd::data_dir`] named `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            self.data_dir().join(name).display()
        )
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
        known_hosts_line(self.port, &self.host_public_key)
    }

    /// A hashed known_hosts line (`|1|salt|hash ...`), as `ssh-keygen -H` writes it.
    pub fn hashed_known_hosts_line(&self) -> String {
        hash_known_hosts_line(&self.known_hosts_line())
    }

    /// The user that logs in with [`Sshd::client_key`]: the user running the tests.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// An authorized ed25519 key of [`Sshd::user`], without passphrase.
    pub fn client_key(&self) -> &ClientKey {
        &self.client_key
    }

    /// Makes a new client key pair; when `authorize`, [`Sshd::user`] may log in with it.
    pub fn new_client_key(
        &self,
        kind: KeyKind,
        passphrase: Option<&str>,
        authorize_it: bool,
    ) -> ClientKey {
        let n = self
            .key_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = make_client_key(self.dir.path(), &format!("id_{n}"), kind, passphrase);
        if authorize_it {
            authorize(self.dir.path(), &key.public_key);
        }
        key
    }

    /// The directory to put test files in; readable by both login users.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// sshd's log so far (`-e` output, LogLevel VERBOSE).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The pid of the listening sshd.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills every open session (the per-connection sshd processes and their children, such as
    /// sftp-server) with SIGKILL and waits until they are gone, so clients see their
    /// connections drop. The listener keeps running: new connections work. Returns how many
    /// sessions were killed.
    pub fn kill_sessions(&self) -> usize {
        let sessions = children_of(self.pid());
        let mut all = Vec::new();
        for &s in &sessions {
            all.push(s);
            descendants(s, &mut all);
        }
        self.kill_and_wait(&all);
        sessions.len()
    }

    /// Kills every `sftp-server` of every session with SIGKILL and waits until they are gone,
    /// leaving the SSH connections open: clients see their SFTP channels close. Returns how
    /// many were killed.
    pub fn kill_sftp_servers(&self) -> usize {
        let mut all = Vec::new();
        descendants(self.pid(), &mut all);
        all.retain(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sftp-server")
        });
        self.kill_and_wait(&all);
        all.len()
    }

    fn kill_and_wait(&self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        let mut cmd = Command::new("kill");
        cmd.arg("-KILL");
        for pid in pids {
            cmd.arg(pid.to_string());
        }
        // Some may already have exited: ignore kill's status, then check /proc.
        let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut attempt = 0;
        while pids.iter().any(|p| is_alive(*p)) {
            assert!(
                Instant::now() < deadline,
                "processes {pids:?} of sshd {} did not die",
                self.pid()
            );
            attempt += 1;
            std::thread::sleep(POLL.delay(attempt));
        }
    }

    /// How many sessions (per-connection sshd processes) are open now.
    pub fn session_count(&self) -> usize {
        children_of(self.pid()).len()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_sessions();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, port: u16, host_key: &Path, sftp: bool) {
    let mut config = format!(
        "# gzship test sshd: see crates/testkit/src/sshd.rs\n\
         ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {host_key}\n\
         PidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         StrictModes no\n\
         UsePAM no\n\
         PermitRootLogin yes\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication yes\n\
         PermitEmptyPasswords no\n\
         KbdInteractiveAuthentication no\n\
         AllowTcpForwarding no\n\
         X11Forwarding no\n\
         PrintMotd no\n\
         UseDNS no\n\
         LogLevel VERBOSE\n",
        host_key = host_key.display(),
        dir = dir.display(),
    );
    if sftp {
        config.push_str(&format!("Subsystem sftp {SFTP_SERVER}\n"));
    }
    fs::write(dir.join("sshd_config"), config).expect("write sshd_config");
}

/// Makes the key pair `dir/name` (and `dir/name.pub`) with `ssh-keygen`.
pub(crate) fn make_client_key(
    dir: &Path,
    name: &str,
    kind: KeyKind,
    passphrase: Option<&str>,
) -> ClientKey {
    let path = dir.join(name);
    keygen(&path, kind, passphrase);
    ClientKey {
        kind,
        private_key_pem: read(&path),
        public_key: read(&path.with_extension("pub")).trim().to_owned(),
        private_key_path: path,
        passphrase: passphrase.map(str::to_owned),
    }
}

fn authorize(dir: &Path, public_key: &str) {
    let path = dir.join("authorized_keys");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open authorized_keys");
    writeln!(f, "{public_key}").expect("append to authorized_keys");
    drop(f);
    set_mode(&path, 0o644);
}

/// The known_hosts line of a server on 127.0.0.1:`port` with `host_public_key` (`ssh-ed25519
/// AAAA... comment`): `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
pub fn known_hosts_line(port: u16, host_public_key: &str) -> String {
    let mut parts = host_public_key.split_whitespace();
    let (alg, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    format!("[127.0.0.1]:{port} {alg} {key}")
}

/// `line` (`[127.0.0.1]:PORT ssh-ed25519 AAAA...`) hashed as `ssh-keygen -H` hashes
/// known_hosts files: `|1|salt|hash ssh-ed25519 AAAA...`.
pub fn hash_known_hosts_line(line: &str) -> String {
    let dir = tempfile::tempdir().expect("create a temp dir for ssh-keygen -H");
    let path = dir.path().join("known_hosts");
    fs::write(&path, format!("{line}\n")).expect("write known_hosts");
    run(Command::new("ssh-keygen")
        .arg("-q")
        .arg("-H")
        .arg("-f")
        .arg(&path));
    read(&path).trim().to_owned()
}

pub(crate) fn keygen(path: &Path, kind: KeyKind, passphrase: Option<&str>) {
    run(Command::new("ssh-keygen")
        .arg("-q")
        .args(kind.keygen_args())
        .arg("-N")
        .arg(passphrase.unwrap_or(""))
        .arg("-C")
        .arg("gzship-test")
        .arg("-f")
        .arg(path));
    // A key named "id_0" gets "id_0.pub"; with_extension("pub") must find it.
    debug_assert!(path.with_extension("pub").exists());
}

pub(crate) fn fingerprint(public_key: &Path) -> String {
    // "256 SHA256:abc... comment (ED25519)"
    let out = run(Command::new("ssh-keygen")
        .arg("-l")
        .arg("-E")
        .arg("sha256")
        .arg("-f")
        .arg(public_key));
    out.split_whitespace()
        .nth(1)
        .filter(|f| f.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("unexpected ssh-keygen -lf output: {out}"))
        .to_owned()
}

pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}; {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {} {mode:o}: {e}", path.display()));
}

/// Polls the port until the SSH server `child` sends its banner: bounded, with short timeouts,
/// no fixed sleep.
pub(crate) fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut attempt = 0;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited with {status}"));
        }
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut banner = [0u8; 8];
            if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err("the server sent no SSH banner within 20 s".into());
        }
        attempt += 1;
        std::thread::sleep(POLL.delay(attempt));
    }
}

fn current_user() -> String {
    run(Command::new("id").arg("-un")).trim().to_owned()
}

/// Creates [`PASSWORD_USER`] with [`PASSWORD`] when missing (only possible as root). Safe to run
/// from parallel tests: a lost `useradd` race is fine, and setting the same password twice is too.
fn ensure_password_user() {
    let shadow_hash = || {
        fs::read_to_string("/etc/shadow").ok().and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("{PASSWORD_USER}:"))
                        .map(str::to_owned)
                })
                .map(|rest| rest.split(':').next().unwrap_or("").to_owned())
        })
    };
    let has_password = |h: &Option<String>| h.as_deref().is_some_and(|h| h.starts_with('$'));
    if has_password(&shadow_hash()) {
        return;
    }
    if current_user() != "root" {
        panic!(
            "user {PASSWORD_USER} with a password is missing and only root can create it: \
             run scripts/install-test-deps.sh as root"
        );
    }
    if shadow_hash().is_none() {
        // Exit code 9 means another test created it meanwhile.
        let status = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", PASSWORD_USER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("run useradd: {e}"));
        assert!(
            status.success() || status.code() == Some(9),
            "useradd {PASSWORD_USER} failed with {status}"
        );
    }
    // chpasswd fails while another process holds /etc/shadow's lock: retry a bounded number
    // of times (50 waits of at most 100 ms).
    for attempt in 1..=50 {
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run chpasswd: {e}"));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        writeln!(stdin, "{PASSWORD_USER}:{PASSWORD}").expect("write to chpasswd");
        drop(stdin);
        if child.wait().is_ok_and(|s| s.success()) && has_password(&shadow_hash()) {
            return;
        }
        std::thread::sleep(POLL.delay(attempt));
    }
    panic!("could not set the password of {PASSWORD_USER} with chpasswd");
}

fn proc_stat_ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat_ppid(pid) == Some(parent))
        .collect()
}

fn descendants(pid: u32, out: &mut Vec<u32>) {
    for child in children_of(pid) {
        out.push(child);
        descendants(child, out);
    }
}

pub(crate) fn is_alive(pid: u32) -> bool {
    // A killed child of sshd stays a zombie until sshd reaps it; zombies count as gone.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(sshd: &Sshd, key: &ClientKey, known_hosts: &str, command: &str) -> std::process::Output {
        let kh = sshd.dir.path().join("client_known_hosts");
        fs::write(&kh, format!("{known_hosts}\n")).unwrap();
        Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", kh.display()))
            .arg("-i")
            .arg(&key.private_key_path)
            .arg("-p")
            .arg(sshd.port().to_string())
            .arg(format!("{}@127.0.0.1", sshd.user()))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    #[test]
    fn openssh_client_logs_in_with_the_pinned_host_key() {
        let sshd = Sshd::start();
        assert!(sshd.host_key_fingerprint().starts_with("SHA256:"));
        for line in [sshd.known_hosts_line(), sshd.hashed_known_hosts_line()] {
            let out = ssh(&sshd, sshd.client_key(), &line, "echo ok");
            assert!(out.status.success(), "{out:?}\n{}", sshd.log());
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
        }
        let stranger = sshd.new_client_key(KeyKind::Ed25519, None, false);
        assert!(
            !ssh(&sshd, &stranger, &sshd.known_hosts_line(), "true")
                .status
                .success()
        );
    }

    #[test]
    fn kill_sessions_drops_open_connections_only() {
        let sshd = Sshd::start();
        let key = sshd.client_key().clone();
        let kh = sshd.known_hosts_line();
        let port = sshd.port();
        let dir = sshd.dir.path().to_owned();
        // A session that would last a minute unless killed.
        let long = std::thread::spawn(move || {
            let kh_path = dir.join("kh_long");
            fs::write(&kh_path, format!("{kh}\n")).unwrap();
            Command::new("ssh")
                .args(["-o", "BatchMode=yes"])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", kh_path.display()))
                .arg("-i")
                .arg(&key.private_key_path)
                .arg("-p")
                .arg(port.to_string())
                .arg("127.0.0.1")
                .arg("echo started; sleep 60")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        });
        let mut child = long.join().unwrap();
        let mut first = [0u8; 8];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        assert_eq!(&first, b"started\n");
        assert_eq!(sshd.kill_sessions(), 1);
        let status = child.wait().unwrap();
        assert!(!status.success());
        let out = ssh(
            &sshd,
            sshd.client_key(),
            &sshd.known_hosts_line(),
            "echo again",
        );
        assert!(out.status.success(), "{out:?}");
    }
}
