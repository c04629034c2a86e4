//! End-to-end tests of the `gzship` binary against a real OpenSSH sshd and a real S3 server
//! (moto), checked the way a user would: the object decompresses with gzip, pigz and Python to
//! the source's SHA-256, `gzship verify` agrees, and a failed job leaves no multipart upload.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gzship_core::ObjectUrl;
use gzship_core::store::{MultipartStore, ObjectStore};
use gzship_core::types::MIB;
use gzship_testkit::bins;
use gzship_testkit::data::{DataKind, generate, sha256, sha256_file, write_file};
use gzship_testkit::decode::assert_decodes;
use gzship_testkit::s3::{ACCESS_KEY_ID, REGION, S3Server, SECRET_ACCESS_KEY};
use gzship_testkit::sshd::Sshd;

mod resume;
mod scan;

const BUCKET: &str = "e2e";

struct Env {
    sshd: Sshd,
    s3: S3Server,
}

async fn env() -> Env {
    let sshd = Sshd::start();
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    Env { sshd, s3 }
}

impl Env {
    /// `gzship ARGS` with the test's credentials, host key and S3 endpoint.
    fn gzship(&self, args: &[&str]) -> Command {
        let mut cmd = self.gzship_store(args);
        cmd.arg("--identity")
            .arg(&self.sshd.client_key().private_key_path)
            .arg("--host-key")
            .arg(self.sshd.host_key_fingerprint());
        cmd
    }

    /// `gzship ARGS` with the test's S3 endpoint and credentials only, for the commands that
    /// touch only the store (`jobs`, `abort`).
    fn gzship_store(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bins::gzship());
        cmd.args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("GZSHIP_S3_ENDPOINT", self.s3.endpoint_url())
            .env("GZSHIP_LOG", "info");
        cmd
    }

    fn run(&self, file: &str, key: &str, extra: &[&str]) -> Output {
        let source = self.sshd.url(file);
        let dest = format!("s3://{BUCKET}/{key}");
        let mut args = vec!["run", source.as_str(), dest.as_str(), "--json"];
        args.extend_from_slice(extra);
        self.gzship(&args).output().expect("run gzship")
    }

    /// Starts `gzship run FILE s3://BUCKET/KEY EXTRA...` as six tasks of 5 MiB parts run one at a
    /// time (slow enough to act on mid-job), with its output captured.
    fn start_job(&self, file: &str, key: &str, extra: &[&str]) -> std::process::Child {
        let source = self.sshd.url(file);
        let dest = format!("s3://{BUCKET}/{key}");
        let mut args = vec![
            "run",
            source.as_str(),
            dest.as_str(),
            "--tasks",
            "6",
            "--concurrency",
            "1",
            "--part-size",
            "5MiB",
        ];
        args.extend_from_slice(extra);
        self.gzship(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start gzship")
    }

    fn write(&self, name: &str, kind: DataKind, len: u64, seed: u64) -> String {
        let path = self.sshd.data_dir().join(name);
        write_file(&path, kind, len, seed).unwrap();
        sha256_file(&path).unwrap()
    }

    /// Downloads the object and checks it with the real decoders.
    async fn assert_object_decodes(&self, key: &str, want_sha: &str) {
        let dest: ObjectUrl = format!("s3://{BUCKET}/{key}").parse().unwrap();
        let store = self.s3.store();
        let (_, meta) = store
            .head_object(&dest)
            .await
            .unwrap()
            .expect("object exists");
        assert_eq!(meta.content_type, "application/gzip");
        let mut stream = store.get_object(&dest).await.unwrap();
        let mut gz = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            gz.extend_from_slice(&chunk.unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object.gz");
        std::fs::write(&path, gz).unwrap();
        assert_decodes(&path, want_sha);
    }

    async fn assert_no_open_uploads(&self) {
        let open = self.s3.store().list_uploads(BUCKET, "").await.unwrap();
        assert!(open.is_empty(), "multipart uploads left open: {open:?}");
    }

    fn verify(&self, file: &str, key: &str) -> Output {
        let source = self.sshd.url(file);
        let dest = format!("s3://{BUCKET}/{key}");
        self.gzship(&["verify", &source, &dest, "--sha256"])
            .output()
            .unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn report(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "gzship failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON report ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

async fn ship_and_check(kind: DataKind, len: u64, extra: &[&str]) -> serde_json::Value {
    let env = env().await;
    let sha = env.write("source.bin", kind, len, 7);
    let mut args = vec!["--block-size", "1MiB", "--part-size", "5MiB"];
    args.extend_from_slice(extra);
    let out = env.run("source.bin", "out/source.bin.gz", &args);
    let r = report(&out);
    for field in ["source_bytes", "object_bytes", "parts", "tasks", "seconds"] {
        assert!(r.get(field).is_some(), "report lacks {field}: {r}");
    }
    assert_eq!(r["source_bytes"], len);
    assert_eq!(r["destination"], "s3://e2e/out/source.bin.gz");
    env.assert_object_decodes("out/source.bin.gz", &sha).await;
    let v = env.verify("source.bin", "out/source.bin.gz");
    assert!(v.status.success(), "gzship verify failed: {}", stderr(&v));
    env.assert_no_open_uploads().await;
    r
}

#[tokio::test]
async fn multi_task_job_on_logs() {
    let r = ship_and_check(DataKind::Logs, 48 * MIB + 12_345, &["--tasks", "3"]).await;
    assert_eq!(r["tasks"], 3);
}

/// A local job's tasks read on the connections the master and the earlier tasks are done
/// with: four tasks, two at a time, log in at most twice (the master's stat connection serves
/// the first task, the first two tasks' serve the last two; once if each task is done before
/// the next starts), where a connection each would make five.
#[tokio::test]
async fn a_local_job_reuses_its_ssh_connections() {
    let env = env().await;
    let sha = env.write("source.bin", DataKind::Random, 24 * MIB, 9);
    let args = [
        "--tasks",
        "4",
        "--concurrency",
        "2",
        "--block-size",
        "1MiB",
        "--part-size",
        "5MiB",
    ];
    let r = report(&env.run("source.bin", "reuse.gz", &args));
    assert_eq!(r["tasks"], 4);
    env.assert_object_decodes("reuse.gz", &sha).await;
    let log = env.sshd.log();
    let logins = log.matches("Accepted publickey").count();
    assert!(
        (1..=2).contains(&logins),
        "{logins} logins in sshd's log:\n{log}"
    );
}

#[tokio::test]
async fn multi_task_job_on_random_data() {
    let r = ship_and_check(DataKind::Random, 24 * MIB + 1, &["--tasks", "3"]).await;
    // Incompressible: three tasks of 8 MiB make at least one 5+ MiB part each.
    assert!(r["parts"].as_u64().unwrap() >= 3);
}

/// `--part-memory 0` sends every part through `--spool-dir`: same object, no file left there.
#[tokio::test]
async fn parts_spooled_to_a_directory() {
    let spool = tempfile::tempdir().unwrap();
    let dir = spool.path().to_str().unwrap();
    let r = ship_and_check(
        DataKind::Random,
        24 * MIB + 1,
        &["--tasks", "2", "--part-memory", "0", "--spool-dir", dir],
    )
    .await;
    assert!(r["parts"].as_u64().unwrap() >= 4);
    let left: Vec<_> = std::fs::read_dir(spool.path()).unwrap().collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
}

#[tokio::test]
async fn file_with_an_all_zero_middle() {
    let env = env().await;
    let mut data = generate(DataKind::Logs, 12 * MIB as usize, 1);
    data.extend(generate(DataKind::Zeros, 24 * MIB as usize, 0));
    data.extend(generate(DataKind::Random, 7 * MIB as usize + 3, 2));
    std::fs::write(env.sshd.data_dir().join("mixed.bin"), &data).unwrap();
    let out = env.run(
        "mixed.bin",
        "mixed.gz",
        &[
            "--tasks",
            "4",
            "--block-size",
            "1MiB",
            "--part-size",
            "5MiB",
        ],
    );
    let r = report(&out);
    assert_eq!(r["tasks"], 4);
    env.assert_object_decodes("mixed.gz", &sha256(&data)).await;
    assert!(env.verify("mixed.bin", "mixed.gz").status.success());
    env.assert_no_open_uploads().await;
}

#[tokio::test]
async fn empty_file_gives_a_valid_empty_gzip() {
    let env = env().await;
    let sha = env.write("empty", DataKind::Zeros, 0, 0);
    let r = report(&env.run("empty", "empty.gz", &[]));
    assert_eq!(r["source_bytes"], 0);
    assert_eq!(r["object_bytes"], 20);
    env.assert_object_decodes("empty.gz", &sha).await;
    assert!(env.verify("empty", "empty.gz").status.success());
}

#[tokio::test]
async fn verify_detects_a_different_source() {
    let env = env().await;
    env.write("a", DataKind::Logs, 3 * MIB, 1);
    env.write("b", DataKind::Logs, 3 * MIB, 2);
    report(&env.run("a", "a.gz", &[]));
    let v = env.verify("b", "a.gz");
    assert!(!v.status.success(), "verify passed for another file");
    assert!(String::from_utf8_lossy(&v.stdout).contains("MISMATCH"));
}

#[tokio::test]
async fn wrong_host_key_fails_before_any_upload() {
    let env = env().await;
    env.write("f", DataKind::Logs, MIB, 1);
    let source = env.sshd.url("f");
    let out = Command::new(bins::gzship())
        .args(["run", &source, &format!("s3://{BUCKET}/f.gz")])
        .arg("--identity")
        .arg(&env.sshd.client_key().private_key_path)
        .args([
            "--host-key",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ])
        .env("GZSHIP_S3_ENDPOINT", env.s3.endpoint_url())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_REGION", REGION)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("host key"), "{err}");
    assert!(err.contains(env.sshd.host_key_fingerprint()), "{err}");
    env.assert_no_open_uploads().await;
    let dest: ObjectUrl = format!("s3://{BUCKET}/f.gz").parse().unwrap();
    assert!(env.s3.store().head_object(&dest).await.unwrap().is_none());
}

#[tokio::test]
async fn source_truncated_mid_job_fails_and_aborts() {
    let env = env().await;
    let name = "growing.log";
    env.write(name, DataKind::Random, 96 * MIB, 3);
    let path = env.sshd.data_dir().join(name);
    // One task at a time, so the later tasks start after the file was cut.
    let child = env.start_job(name, "t.gz", &[]);
    wait_for_first_part(&env, "t.gz").await;
    truncate(&path, 10 * MIB);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "a truncated source was shipped");
    let err = stderr(&out);
    assert!(err.contains("changed"), "{err}");
    env.assert_no_open_uploads().await;
    let dest: ObjectUrl = format!("s3://{BUCKET}/t.gz").parse().unwrap();
    assert!(env.s3.store().head_object(&dest).await.unwrap().is_none());
}

/// Polls the server until the upload to `key` has a part (bounded: 60 s).
async fn wait_for_first_part(env: &Env, key: &str) {
    let store = env.s3.store();
    let dest: ObjectUrl = format!("s3://{BUCKET}/{key}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        for upload in store.list_uploads(BUCKET, key).await.unwrap() {
            if !store
                .list_parts(&dest, &upload.upload_id)
                .await
                .unwrap()
                .is_empty()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no part of {key} was uploaded within 60 s");
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn demo_runs_and_verifies() {
    let out = Command::new(bins::gzship())
        .args(["demo", "--size", "24MiB"])
        .output()
        .unwrap();
    assert!(out.status.success(), "gzship demo failed: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK:"), "{stdout}");
    assert!(stdout.contains("shipped"), "{stdout}");
}

/// tokio's own `TOKIO_WORKER_THREADS` overrides gzship's I/O threads; a value that is no
/// number of threads is an error that names it, not a panic inside tokio.
#[test]
fn a_bad_tokio_worker_threads_is_named() {
    for bad in ["", "many", "0"] {
        let out = Command::new(bins::gzship())
            .args(["demo", "--size", "1MiB"])
            .env("TOKIO_WORKER_THREADS", bad)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{bad:?} was taken: {err}");
        assert!(
            err.contains(&format!("TOKIO_WORKER_THREADS is {bad:?}")) && !err.contains("panicked"),
            "{bad:?}: {err}"
        );
    }
    let out = Command::new(bins::gzship())
        .args(["demo", "--size", "1MiB"])
        .env("TOKIO_WORKER_THREADS", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "3 threads: {}", stderr(&out));
}

/// `gzship plan ... | head -1` is how people skim a plan of thousands of tasks: a closed stdout
/// must end the program quietly, not with a panic.
#[test]
fn plan_into_a_closed_pipe_exits_quietly() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bins::gzship())
        .args(["plan", "--size", "1TiB"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("source 1.0 TiB"), "{first}");
    // The reader is dropped here: the rest of the plan goes into a closed pipe.
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
}

/// A source path of over 3,000 bytes, with a space and non-ASCII characters, ships; its
/// `gzship-source` metadata stays inside S3's 2 KB of user metadata (shortened, with a hash).
#[tokio::test]
async fn a_3000_byte_source_path_ships() {
    let env = env().await;
    let dir = vec!["d".repeat(200); 15].join("/");
    std::fs::create_dir_all(env.sshd.data_dir().join(&dir)).unwrap();
    let name = format!("{dir}/données du jour.log");
    let sha = env.write(&name, DataKind::Logs, 3 * MIB, 21);
    let url = env.sshd.url(&name);
    assert!(url.len() > 3000, "{}", url.len());
    report(&env.run(&name, "long-path.gz", &[]));
    env.assert_object_decodes("long-path.gz", &sha).await;
    let dest: ObjectUrl = format!("s3://{BUCKET}/long-path.gz").parse().unwrap();
    let (_, meta) = env.s3.store().head_object(&dest).await.unwrap().unwrap();
    let total: usize = meta.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(total <= 2048, "{total} bytes: {:?}", meta.metadata);
    assert!(meta.metadata["gzship-source"].contains("...sha256:"));
}

/// `--known-hosts` (`GZSHIP_KNOWN_HOSTS`) is a file and `--known-hosts-text`
/// (`GZSHIP_KNOWN_HOSTS_TEXT`) its lines, in the CLI as on Lambda; lines given where a path
/// belongs are refused with a pointer to the text setting.
#[tokio::test]
async fn known_hosts_as_a_file_or_as_its_text() {
    let env = env().await;
    env.write("kh.bin", DataKind::Logs, 1 << 20, 3);
    let source = env.sshd.url("kh.bin");
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("known_hosts");
    let line = env.sshd.known_hosts_line();
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let file = file.to_str().unwrap();
    let plan = |flags: &[&str], vars: &[(&str, &str)]| {
        let mut cmd = Command::new(bins::gzship());
        cmd.args(["plan", &source, "--identity"])
            .arg(&env.sshd.client_key().private_key_path)
            .args(flags)
            // No ~/.ssh/known_hosts to fall back on.
            .env("HOME", home.path())
            .env_remove("GZSHIP_HOST_KEY")
            .env_remove("GZSHIP_KNOWN_HOSTS")
            .env_remove("GZSHIP_KNOWN_HOSTS_TEXT");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    for out in [
        plan(&["--known-hosts", file], &[]),
        plan(&[], &[("GZSHIP_KNOWN_HOSTS", file)]),
        plan(&["--known-hosts-text", &line], &[]),
        plan(&[], &[("GZSHIP_KNOWN_HOSTS_TEXT", &line)]),
    ] {
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 tasks"));
    }
    let other_host = line.replacen(&format!("]:{} ", env.sshd.port()), "]:1 ", 1);
    assert_ne!(other_host, line);
    let out = plan(&["--known-hosts-text", &other_host], &[]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
    let out = plan(&[], &[("GZSHIP_KNOWN_HOSTS", &line)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("GZSHIP_KNOWN_HOSTS_TEXT"),
        "{}",
        stderr(&out)
    );
    let out = plan(&[], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--known-hosts"), "{}", stderr(&out));
}

/// A server whose attributes carry no modification time (paramiko's, serving sizes only)
/// ships: the job runs with change detection on the size alone, and says so on stderr.
#[tokio::test]
async fn a_server_without_mtimes_ships_with_a_warning() {
    use gzship_testkit::pysftpd::{self, PySftpd};
    let env = env().await;
    let (server, _) = PySftpd::start_with_keys(&[], pysftpd::Stat::NoMtime);
    let path = server.data_dir().join("no mtime.log");
    write_file(&path, DataKind::Logs, 3 * MIB, 12).unwrap();
    let want = sha256_file(&path).unwrap();
    let source = format!(
        "sftp://{}@127.0.0.1:{}{}",
        pysftpd::USER,
        server.port(),
        path.display()
    );
    let out = env
        .gzship_store(&[
            "run",
            &source,
            "s3://e2e/no-mtime.gz",
            "--json",
            "--tasks",
            "2",
        ])
        .arg("--identity")
        .arg(&server.client_key().private_key_path)
        .arg("--host-key")
        .arg(server.host_key_fingerprint())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("detected by its size alone"),
        "the missing mtime is warned about: {}",
        stderr(&out)
    );
    assert_eq!(report(&out)["source_bytes"], 3 * MIB);
    env.assert_object_decodes("no-mtime.gz", &want).await;
    env.assert_no_open_uploads().await;
}

/// A server that allows the login but not SFTP (no `Subsystem sftp` in its sshd_config)
/// refuses the subsystem request: gzship says so, once, instead of waiting out its connect
/// timeout at each of its handshake attempts and reporting a time-out.
#[test]
fn a_server_without_sftp_is_named_as_such() {
    let sshd = Sshd::start_without_sftp();
    let out = Command::new(bins::gzship())
        .args(["plan", &sshd.url("any.log"), "--identity"])
        .arg(&sshd.client_key().private_key_path)
        .args(["--host-key", sshd.host_key_fingerprint()])
        .env("GZSHIP_LOG", "info")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refused to start the sftp subsystem") && err.contains("Subsystem sftp"),
        "{err}"
    );
    assert!(
        !err.contains("timed out") && !err.contains("retrying"),
        "{err}"
    );
}
