//! Throughput of `SftpSource::read_range` against `ssh HOST cat FILE`, over loopback to a real
//! OpenSSH sshd, in one run; or of `read_range` alone against asyncssh's SFTP server
//! (`--server asyncssh`, `bench/asyncssh_sftpd.py`), whose `limits@openssh.com` allows 4 MiB
//! READs. Not a test: it measures and prints. Run it with `bench/sftp_read.sh` (which see for
//! the options).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use gzship_core::source::Source;
use gzship_core::source::sftp::{
    HostKeyPolicy, SftpConfig, SftpSource, SftpTuning, SshAuth, SshCipher,
};
use gzship_core::types::ByteRange;
use gzship_testkit::data::{self, DataKind};
use gzship_testkit::sshd::Sshd;

struct Args {
    size_mib: u64,
    dir: String,
    in_flight: Vec<usize>,
    request_kib: Vec<u32>,
    connections: Vec<usize>,
    ciphers: Vec<String>,
    repeat: usize,
    window_mib: Vec<u32>,
    max_packet: Vec<u32>,
    /// `CLIENT:SERVER` CPU lists for taskset: the client (ssh, or this process) and sshd with
    /// everything it forks, kept apart as on two machines.
    pin: Option<(String, String)>,
    /// `openssh` (the default) or `asyncssh`.
    server: String,
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    s.split(',').map(|x| x.trim().parse().unwrap()).collect()
}

fn parse_args() -> Args {
    let mut a = Args {
        size_mib: 1024,
        dir: "/dev/shm".into(),
        in_flight: vec![16],
        request_kib: vec![255],
        connections: vec![1],
        ciphers: vec!["aes128-gcm".into()],
        repeat: 1,
        window_mib: vec![16],
        max_packet: vec![65_535],
        pin: None,
        server: "openssh".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // `cargo bench` passes --bench; ignore it.
        if flag == "--bench" {
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--size-mib" => a.size_mib = value.parse().unwrap(),
            "--dir" => a.dir = value,
            "--in-flight" => a.in_flight = list(&value),
            "--request-kib" => a.request_kib = list(&value),
            "--connections" => a.connections = list(&value),
            "--ciphers" => a.ciphers = list(&value),
            "--repeat" => a.repeat = value.parse().unwrap(),
            "--server" => a.server = value,
            "--window-mib" => a.window_mib = list(&value),
            "--max-packet" => a.max_packet = list(&value),
            "--pin" => {
                let (c, s) = value
                    .split_once(':')
                    .expect("--pin CLIENT_CPUS:SERVER_CPUS");
                a.pin = Some((c.to_owned(), s.to_owned()));
            }
            _ => panic!("unknown option {flag}"),
        }
    }
    a
}

/// gzship's cipher list and OpenSSH's `-c` for a cipher name; `default` is each side's own
/// default (gzship: AES-GCM first; OpenSSH 9: chacha20-poly1305 first).
fn cipher(name: &str) -> (Vec<SshCipher>, Option<&'static str>) {
    let one = |c, o| (vec![c], Some(o));
    match name {
        "default" => (SftpTuning::default().ciphers, None),
        "aes128-gcm" => one(SshCipher::Aes128Gcm, "aes128-gcm@openssh.com"),
        "aes256-gcm" => one(SshCipher::Aes256Gcm, "aes256-gcm@openssh.com"),
        "chacha20" => one(SshCipher::Chacha20Poly1305, "chacha20-poly1305@openssh.com"),
        "aes128-ctr" => one(SshCipher::Aes128Ctr, "aes128-ctr"),
        _ => panic!("unknown cipher {name}: default, aes128-gcm, aes256-gcm, chacha20, aes128-ctr"),
    }
}

/// Pins `pid` (all its threads; processes it forks later inherit it) to `cpus`.
fn pin(pid: u32, cpus: &str) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("run taskset (util-linux)");
    assert!(status.success(), "taskset -c {cpus} {pid} failed");
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn ssh_cat(sshd: &Sshd, file: &Path, openssh_cipher: Option<&str>, dir: &Path) -> Duration {
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, format!("{}\n", sshd.known_hosts_line())).unwrap();
    let start = Instant::now();
    let mut ssh = Command::new("ssh");
    ssh.args(["-o", "BatchMode=yes"]);
    if let Some(c) = openssh_cipher {
        ssh.args(["-c", c]);
    }
    let status = ssh
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .arg("-i")
        .arg(&sshd.client_key().private_key_path)
        .arg("-p")
        .arg(sshd.port().to_string())
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .arg(format!("cat {}", file.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ssh cat failed");
    start.elapsed()
}

/// Where `read_range` reads from: a port, a user and its key, the host key's fingerprint.
struct Target {
    port: u16,
    user: String,
    key_pem: String,
    fingerprint: String,
}

impl Target {
    fn sshd(sshd: &Sshd) -> Target {
        Target {
            port: sshd.port(),
            user: sshd.user().into(),
            key_pem: sshd.client_key().private_key_pem.clone(),
            fingerprint: sshd.host_key_fingerprint().into(),
        }
    }
}

/// asyncssh's SFTP server (`bench/asyncssh_sftpd.py`) with the host and client keys of `sshd`,
/// on a free port; killed on drop.
struct Asyncssh(std::process::Child);

impl Drop for Asyncssh {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_asyncssh(sshd: &Sshd, dir: &Path) -> (Asyncssh, Target) {
    let keys = dir.join("asyncssh_authorized_keys");
    std::fs::write(&keys, format!("{}\n", sshd.client_key().public_key)).unwrap();
    let host_key = dir.join("asyncssh_host_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(host_key.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8(out.stdout).unwrap();
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_owned();
    let port = gzship_testkit::net::free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/asyncssh_sftpd.py");
    let child = Command::new("python3")
        .arg(script)
        .arg("--port")
        .arg(port.to_string())
        .arg("--host-key")
        .arg(&host_key)
        .arg("--authorized-keys")
        .arg(&keys)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let server = Asyncssh(child);
    // Ready when it sends its banner; bounded.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for attempt in 0.. {
        assert!(attempt < 200, "asyncssh did not start on {addr}");
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let mut banner = [0u8; 8];
            use std::io::Read as _;
            if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = Target {
        port,
        user: sshd.user().into(),
        key_pem: sshd.client_key().private_key_pem.clone(),
        fingerprint,
    };
    (server, target)
}

async fn sftp_read(target: &Target, file: &Path, tuning: SftpTuning) -> (u64, Duration) {
    let config = SftpConfig {
        host: "127.0.0.1".into(),
        port: target.port,
        user: target.user.clone(),
        auth: SshAuth::private_key(target.key_pem.clone(), None),
        host_key: HostKeyPolicy::fingerprint(&target.fingerprint).unwrap(),
        tuning,
    };
    let src = SftpSource::new(config).unwrap();
    let path = file.to_str().unwrap();
    let start = Instant::now();
    let expect = src.stat(path).await.unwrap();
    let range = ByteRange::new(0, expect.size).unwrap();
    let mut stream = src.read_range(path, range, expect).await.unwrap();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        n += chunk.unwrap().len() as u64;
    }
    assert_eq!(n, expect.size);
    (n, start.elapsed())
}

fn main() {
    let args = parse_args();
    let dir = tempfile::Builder::new()
        .prefix("gzship-bench-")
        .tempdir_in(&args.dir)
        .unwrap();
    let file = dir.path().join("access.log");
    let size = args.size_mib * 1024 * 1024;
    let t = Instant::now();
    data::write_file(&file, DataKind::Logs, size, 42).unwrap();
    eprintln!(
        "wrote {} MiB of logs to {} in {:.1?}",
        args.size_mib,
        file.display(),
        t.elapsed()
    );
    let sshd = Sshd::start();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some((client, server)) = &args.pin {
        pin(std::process::id(), client);
        pin(sshd.pid(), server);
    }
    println!(
        "machine: {cores} cores; file: {} MiB of access logs on {}; sshd: OpenSSH on 127.0.0.1:{}{}",
        args.size_mib,
        args.dir,
        sshd.port(),
        match &args.pin {
            Some((c, s)) => format!("; client pinned to CPU {c}, sshd to CPU {s}"),
            None => String::new(),
        }
    );
    let asyncssh = args.server == "asyncssh";
    let (_asyncssh, target) = if asyncssh {
        let (server, target) = start_asyncssh(&sshd, dir.path());
        println!("server: asyncssh on 127.0.0.1:{} (no ssh cat)", target.port);
        (Some(server), target)
    } else {
        (None, Target::sshd(&sshd))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut summary = Vec::new();
    for c in &args.ciphers {
        let (ours, openssh) = cipher(c);
        let mut cat = Vec::new();
        for &connections in &args.connections {
            for &in_flight in &args.in_flight {
                for (&kib, &window_mib, &max_packet) in args
                    .request_kib
                    .iter()
                    .flat_map(|k| args.window_mib.iter().map(move |w| (k, w)))
                    .flat_map(|(k, w)| args.max_packet.iter().map(move |p| (k, w, p)))
                {
                    let tuning = SftpTuning {
                        window_size: window_mib * 1024 * 1024,
                        max_packet_size: max_packet,
                        // OpenSSH answers at most 261,120 bytes; asyncssh up to 4 MiB.
                        request_size: if asyncssh {
                            kib * 1024
                        } else {
                            (kib * 1024).min(261_120)
                        },
                        requests_in_flight: in_flight,
                        connections,
                        ciphers: ours.clone(),
                        ..SftpTuning::default()
                    };
                    let label = format!(
                        "SftpSource::read_range cipher={c} request_size={} in_flight={in_flight} connections={connections} window={window_mib}MiB max_packet={max_packet} (incl. connect+stat)",
                        tuning.request_size
                    );
                    let mut ours_runs = Vec::new();
                    // Interleaved, so that drifting load hits both alike.
                    for _ in 0..args.repeat {
                        if !asyncssh {
                            let d = ssh_cat(&sshd, &file, openssh, dir.path());
                            cat.push(mbps(size, d));
                            println!("{:>8.0} MB/s  ssh cat cipher={c}", mbps(size, d));
                        }
                        let (n, d) = rt.block_on(sftp_read(&target, &file, tuning.clone()));
                        ours_runs.push(mbps(n, d));
                        println!("{:>8.0} MB/s  {label}", mbps(n, d));
                    }
                    summary.push((label, median(ours_runs)));
                }
            }
        }
        if !cat.is_empty() {
            summary.push((format!("ssh cat cipher={c}"), median(cat)));
        }
    }
    println!("\nmedians of {} runs:", args.repeat);
    for (label, mb) in summary {
        println!("{mb:>8.0} MB/s  {label}");
    }
}
