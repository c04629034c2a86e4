//! Durable jobs from the command line: a job killed (SIGKILL) or interrupted (Ctrl-C) halfway
//! is listed by `gzship jobs` and finished by `gzship resume`, byte for byte the object an
//! uninterrupted run makes; a changed source is refused; `gzship abort` and
//! `--abort-older-than` leave no upload and no record. Real sshd and moto, as everywhere.

use std::process::{Child, Command};

use gzship_core::job::DEFAULT_JOBS_PREFIX;
use gzship_core::store::local::LocalStore;
use gzship_testkit::conformance::store::read_all;

use super::*;

/// The job's settings: six tasks of 16 MiB run one at a time, 5 MiB parts.
const SHAPE: &[&str] = &["--tasks", "6", "--concurrency", "1", "--part-size", "5MiB"];

impl Env {
    /// `gzship jobs LOCATION --json`.
    fn jobs(&self, location: &str) -> Vec<serde_json::Value> {
        let out = self
            .gzship_store(&["jobs", location, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "gzship jobs failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Keys of the job records left in the bucket.
    async fn records(&self) -> Vec<String> {
        let listed = self
            .s3
            .store()
            .list_objects(BUCKET, DEFAULT_JOBS_PREFIX)
            .await
            .unwrap();
        listed.into_iter().map(|o| o.key).collect()
    }

    async fn object(&self, key: &str) -> Vec<u8> {
        let dest: ObjectUrl = format!("s3://{BUCKET}/{key}").parse().unwrap();
        read_all(&self.s3.store(), &dest).await
    }
}

/// Waits until the job writing `key` has recorded `n` task reports (bounded: 60 s).
async fn wait_for_tasks(env: &Env, key: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let jobs = env.jobs(&format!("s3://{BUCKET}/{key}"));
        if jobs
            .iter()
            .any(|j| j["tasks_done"].as_u64().unwrap() as usize >= n)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the job writing {key} recorded no {n} tasks within 60 s");
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts a job, lets it record one task, and kills it without warning.
async fn killed_job(env: &Env, file: &str, key: &str) -> serde_json::Value {
    let mut child = env.start_job(file, key, &[]);
    wait_for_tasks(env, key, 1).await;
    signal(&child, "-KILL");
    child.wait().unwrap();
    let jobs = env.jobs(&format!("s3://{BUCKET}/{key}"));
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    jobs[0].clone()
}

#[tokio::test]
async fn a_killed_job_is_listed_and_resumes_to_the_same_object() {
    let env = env().await;
    let sha = env.write("big.bin", DataKind::Random, 96 * MIB, 7);
    let job = killed_job(&env, "big.bin", "killed.gz").await;
    let done = job["tasks_done"].as_u64().unwrap();
    assert!((1..6).contains(&done), "{job}");
    assert_eq!(job["tasks"], 6);
    assert_eq!(job["destination"], format!("s3://{BUCKET}/killed.gz"));
    assert_eq!(job["source"], env.sshd.url("big.bin"));
    assert!(job["bytes_done"].as_u64().unwrap() >= 16 * MIB, "{job}");
    let name = job["job"].as_str().unwrap();
    assert!(name.starts_with(&format!("s3://{BUCKET}/.gzship/jobs/killed.gz-")));

    // The human listing has the same job on one line.
    let out = env.gzship_store(&["jobs", "s3://e2e"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(name) && listing.contains("/6 tasks"),
        "{listing}"
    );

    // A second job to the same destination is refused while this one is unfinished.
    let out = env.run("big.bin", "killed.gz", SHAPE);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("already writes s3://e2e/killed.gz") && err.contains(name),
        "{err}"
    );

    let out = env.gzship(&["resume", name, "--json"]).output().unwrap();
    let r = report(&out);
    assert!(r["resumed_tasks"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["tasks"], 6);
    env.assert_object_decodes("killed.gz", &sha).await;
    env.assert_no_open_uploads().await;
    assert!(env.records().await.is_empty());
    assert!(env.jobs("s3://e2e").is_empty());

    // Byte for byte what an uninterrupted run with the same settings makes.
    report(&env.run("big.bin", "whole.gz", SHAPE));
    assert!(env.object("killed.gz").await == env.object("whole.gz").await);
}

/// Ctrl-C stops the tasks, deletes the spooled parts and keeps the job resumable (exit 130,
/// with the commands to resume or abort it); resuming by destination URL finishes it.
#[tokio::test]
async fn an_interrupted_job_stays_resumable() {
    let env = env().await;
    let sha = env.write("big.bin", DataKind::Random, 96 * MIB, 5);
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_str().unwrap();
    let child = env.start_job(
        "big.bin",
        "interrupted.gz",
        &["--part-memory", "0", "--spool-dir", spool_dir],
    );
    wait_for_tasks(&env, "interrupted.gz", 1).await;
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("gzship resume s3://e2e/.gzship/jobs/interrupted.gz-"),
        "{err}"
    );
    assert!(err.contains("gzship abort "), "{err}");
    let left: Vec<_> = std::fs::read_dir(spool.path()).unwrap().collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
    let open = env.s3.store().list_uploads(BUCKET, "").await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(env.jobs("s3://e2e").len(), 1);

    let out = env
        .gzship(&["resume", "s3://e2e/interrupted.gz", "--json"])
        .output()
        .unwrap();
    let r = report(&out);
    assert!(r["resumed_tasks"].as_u64().unwrap() >= 1, "{r}");
    env.assert_object_decodes("interrupted.gz", &sha).await;
    env.assert_no_open_uploads().await;
    assert!(env.records().await.is_empty());
}

#[tokio::test]
async fn a_resume_after_the_source_changed_is_refused_and_aborted() {
    let env = env().await;
    env.write("big.bin", DataKind::Random, 96 * MIB, 9);
    let job = killed_job(&env, "big.bin", "changed.gz").await;
    env.write("big.bin", DataKind::Random, 97 * MIB, 9);

    let out = env
        .gzship(&["resume", job["job"].as_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("changed"), "{err}");
    assert!(err.contains("aborted"), "{err}");
    env.assert_no_open_uploads().await;
    assert!(env.records().await.is_empty());
    let dest: ObjectUrl = format!("s3://{BUCKET}/changed.gz").parse().unwrap();
    assert!(env.s3.store().head_object(&dest).await.unwrap().is_none());
}

#[tokio::test]
async fn abort_and_abort_older_than_leave_no_upload() {
    let env = env().await;
    env.write("big.bin", DataKind::Random, 96 * MIB, 11);
    let first = killed_job(&env, "big.bin", "first.gz").await;
    killed_job(&env, "big.bin", "second.gz").await;
    assert_eq!(env.jobs("s3://e2e").len(), 2);

    let name = first["job"].as_str().unwrap();
    let out = env.gzship_store(&["abort", name]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("aborted"));
    let open = env.s3.store().list_uploads(BUCKET, "").await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].key, "second.gz");
    let out = env.gzship_store(&["abort", name]).output().unwrap();
    assert!(
        !out.status.success(),
        "aborting twice must say the job is gone"
    );
    assert!(stderr(&out).contains("no job record"), "{}", stderr(&out));

    // Not old enough: kept.
    let out = env
        .gzship_store(&["jobs", "s3://e2e", "--abort-older-than", "1h"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.jobs("s3://e2e").len(), 1);
    let out = env
        .gzship_store(&["jobs", "s3://e2e", "--abort-older-than", "0s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("aborted s3://e2e/.gzship/jobs/second.gz-"));
    env.assert_no_open_uploads().await;
    assert!(env.records().await.is_empty());
}

/// A local destination keeps its records in its directory; the job is resumed by the record's
/// path that `gzship jobs DIR` prints.
#[tokio::test]
async fn a_killed_job_to_a_local_file_resumes() {
    let env = env().await;
    let sha = env.write("big.bin", DataKind::Random, 96 * MIB, 13);
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.gz");
    let dir_str = dir.path().to_str().unwrap();
    let source = env.sshd.url("big.bin");
    let mut args = vec!["run", source.as_str(), out_path.to_str().unwrap()];
    args.extend_from_slice(SHAPE);
    let mut child = env
        .gzship(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let jobs = env.jobs(dir_str);
        if let Some(j) = jobs.iter().find(|j| j["tasks_done"].as_u64() >= Some(1)) {
            break j.clone();
        }
        assert!(Instant::now() < deadline, "no task recorded within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    signal(&child, "-KILL");
    child.wait().unwrap();
    let name = job["job"].as_str().unwrap();
    assert!(
        name.starts_with(&format!("{dir_str}/.gzship/jobs/out.gz-")),
        "{name}"
    );
    assert_eq!(job["destination"], out_path.to_str().unwrap());

    let out = env.gzship(&["resume", name, "--json"]).output().unwrap();
    let r = report(&out);
    assert!(r["resumed_tasks"].as_u64().unwrap() >= 1, "{r}");
    assert_decodes(&out_path, &sha);
    assert!(env.jobs(dir_str).is_empty());
    let local = LocalStore::directory(dir.path());
    assert!(local.list_uploads("local", "").await.unwrap().is_empty());
    // Nothing but the object is left in the directory.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".gzship-uploads" && n != ".gzship-meta")
        .collect();
    assert_eq!(left, ["out.gz"]);
}
