//! Scans from the command line (`gzship run 'sftp://.../exports/*.csv' s3://bucket/in/`): every
//! new, complete file ships once, to its own object; a file that may still be written waits;
//! two scans at once ship each file once; bad globs, directories and destinations fail clearly.
//! Mtimes are set explicitly, so no test depends on how long anything takes.

use std::io::Write;
use std::path::PathBuf;
use std::process::Output;
use std::time::SystemTime;

use gzship_core::job::DEFAULT_JOBS_PREFIX;
use gzship_testkit::set_mtime;

use super::*;

/// An hour ago: older than any `--stable-for` the tests give but `1d`.
fn an_hour_ago() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3600)
}

/// The lines of a scan's `--json` output: one object per file, then the summary.
fn lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The destinations of the files a scan shipped, sorted.
fn shipped(o: &Output) -> Vec<String> {
    let mut keys: Vec<String> = lines(o)
        .iter()
        .filter(|l| l.get("source_bytes").is_some())
        .map(|l| l["destination"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

/// The scan's summary line.
fn summary(o: &Output) -> serde_json::Value {
    let all = lines(o);
    let last = all.last().expect("a summary line");
    last["scan"].clone()
}

impl Env {
    fn exports(&self) -> PathBuf {
        let dir = self.sshd.data_dir().join("exports");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes `exports/NAME` (64 KiB to 1 MiB of logs) with an mtime an hour ago; its SHA-256.
    fn export(&self, name: &str, seed: u64) -> String {
        self.exports();
        let sha = self.write(
            &format!("exports/{name}"),
            DataKind::Logs,
            (64 << 10) * seed,
            seed,
        );
        set_mtime(&self.exports().join(name), an_hour_ago());
        sha
    }

    /// `gzship run 'sftp://.../GLOB' DEST --json EXTRA...`, GLOB in the data directory.
    fn scan(&self, glob: &str, dest: &str, extra: &[&str]) -> Output {
        self.scan_cmd(glob, dest, extra).output().unwrap()
    }

    fn scan_cmd(&self, glob: &str, dest: &str, extra: &[&str]) -> Command {
        let source = self.sshd.url(glob);
        let mut args = vec!["run", source.as_str(), dest, "--json"];
        args.extend_from_slice(extra);
        self.gzship(&args)
    }
}

fn ok(o: &Output) -> &Output {
    assert!(o.status.success(), "gzship failed: {}", stderr(o));
    o
}

#[tokio::test]
async fn scan_ships_each_new_complete_file_once() {
    let env = env().await;
    let files = [
        ("a.csv", 1),
        ("b with spaces.csv", 3),
        ("données été.csv", 16),
    ];
    let shas: Vec<String> = files.iter().map(|(n, s)| env.export(n, *s)).collect();
    env.export("notes.txt", 2);
    std::fs::create_dir(env.exports().join("archive.csv")).unwrap();
    std::os::unix::fs::symlink(
        env.exports().join("archive.csv"),
        env.exports().join("l.csv"),
    )
    .unwrap();
    let dest = format!("s3://{BUCKET}/in/");

    let first = env.scan("exports/*.csv", &dest, &[]);
    let keys: Vec<String> = files.iter().map(|(n, _)| format!("in/{n}.gz")).collect();
    let mut want: Vec<String> = keys.iter().map(|k| format!("s3://{BUCKET}/{k}")).collect();
    want.sort();
    assert_eq!(shipped(ok(&first)), want);
    for (key, sha) in keys.iter().zip(&shas) {
        env.assert_object_decodes(key, sha).await;
    }
    let s = summary(&first);
    assert_eq!(
        (s["matched"].as_u64(), s["skipped"].as_u64()),
        (Some(5), Some(2))
    );
    // The directory and the symlink to it are passed over with a warning.
    let err = stderr(&first);
    assert!(
        err.contains("warning: skipped") && err.contains("archive.csv: a directory"),
        "{err}"
    );
    assert!(err.contains("l.csv: a directory"), "{err}");

    let second = env.scan("exports/*.csv", &dest, &[]);
    assert_eq!(shipped(ok(&second)), Vec::<String>::new());
    let already = lines(&second)
        .iter()
        .filter(|l| {
            l["skipped"]
                .as_str()
                .is_some_and(|r| r.contains("already shipped"))
        })
        .count();
    assert_eq!(already, 3, "{}", String::from_utf8_lossy(&second.stdout));

    let sha = env.export("d.csv", 2);
    let third = env.scan("exports/*.csv", &dest, &[]);
    assert_eq!(shipped(ok(&third)), [format!("s3://{BUCKET}/in/d.csv.gz")]);
    env.assert_object_decodes("in/d.csv.gz", &sha).await;
    env.assert_no_open_uploads().await;
}

#[tokio::test]
async fn scan_waits_until_a_file_being_written_is_stable_then_ships_it_whole() {
    let env = env().await;
    let path = env.exports().join("growing.csv");
    write_file(&path, DataKind::Logs, 300 << 10, 1).unwrap();
    set_mtime(&path, SystemTime::now() - Duration::from_secs(10));
    let dest = format!("s3://{BUCKET}/in/");

    // Modified 10 s ago: under a minute, so it may still be written.
    let early = env.scan("exports/*.csv", &dest, &["--stable-for", "1m"]);
    assert_eq!(shipped(ok(&early)), Vec::<String>::new());
    let reason = lines(&early)[0]["skipped"].as_str().unwrap().to_owned();
    assert!(reason.contains("may still be written"), "{reason}");

    // The writer appends more, then stops: an hour later the file is stable.
    let more = generate(DataKind::Logs, 200 << 10, 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&more)
        .unwrap();
    set_mtime(&path, an_hour_ago());
    let late = env.scan("exports/*.csv", &dest, &["--stable-for", "1m"]);
    assert_eq!(
        shipped(ok(&late)),
        [format!("s3://{BUCKET}/in/growing.csv.gz")]
    );
    env.assert_object_decodes("in/growing.csv.gz", &sha256_file(&path).unwrap())
        .await;
}

#[tokio::test]
async fn two_scans_started_together_ship_each_file_once() {
    let env = env().await;
    let names = ["1.csv", "2.csv", "3.csv", "4.csv"];
    let shas: Vec<String> = names.iter().map(|n| env.export(n, 4)).collect();
    let dest = format!("s3://{BUCKET}/in/");
    let start = || {
        env.scan_cmd("exports/*.csv", &dest, &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut all = [shipped(ok(&a)), shipped(ok(&b))].concat();
    all.sort();
    let want: Vec<String> = names
        .iter()
        .map(|n| format!("s3://{BUCKET}/in/{n}.gz"))
        .collect();
    assert_eq!(all, want, "each file shipped by exactly one of the scans");
    for (n, sha) in names.iter().zip(&shas) {
        env.assert_object_decodes(&format!("in/{n}.gz"), sha).await;
    }
    env.assert_no_open_uploads().await;
    // No job record or claim is left behind.
    let left = env
        .s3
        .store()
        .list_objects(BUCKET, DEFAULT_JOBS_PREFIX)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn scan_errors_say_what_was_wrong() {
    let env = env().await;
    env.export("a.csv", 1);
    let dest = format!("s3://{BUCKET}/in/");
    for (glob, dest, says) in [
        ("exports/*.parquet", dest.as_str(), "matches \"*.parquet\""),
        ("missing/*.csv", dest.as_str(), "list the directory"),
        ("exports/*.csv", "s3://e2e/in/all.gz", "end it with '/'"),
    ] {
        let out = env.scan(glob, dest, &[]);
        assert!(!out.status.success(), "{glob} {dest}: succeeded");
        let err = stderr(&out);
        assert!(err.contains(says), "{glob} {dest}: {err}");
    }
    let out = env.scan("exports/*.csv", &dest, &["--stable-for", "1d"]);
    assert_eq!(shipped(ok(&out)), Vec::<String>::new());
}
