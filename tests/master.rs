//! The master and the worker pipeline over the local store (a real directory that keeps S3's
//! rules) and an in-memory source, so the master's logic is checked without network servers:
//! fan-out, retries, report checks, abort on failure. The same jobs run against real sshd and
//! S3 servers in `e2e_*` tests.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gzship_core::error::{Error, Result};
use gzship_core::invoke::Invoker;
use gzship_core::invoke::local::LocalInvoker;
use gzship_core::master::{self, MasterConfig};
use gzship_core::plan::Tuning;
use gzship_core::source::{ByteStream, DirEntry, EntryKind, Source, SourceStat};
use gzship_core::store::ObjectStore;
use gzship_core::store::local::LocalStore;
use gzship_core::types::{KIB, MIB};
use gzship_core::wire::{JobReport, JobRequest, Task, TaskReport};
use gzship_core::worker::WorkerTuning;
use gzship_core::{ByteRange, ObjectUrl};
use gzship_testkit::data::{DataKind, generate, sha256};

/// A source file held in memory; `fail_reads` makes the first N reads fail (retryably) after
/// yielding half their range, like a dropped connection; `panic_reads` makes them panic there
/// instead, like a bug in the reader.
struct MemorySource {
    data: Bytes,
    mtime: u64,
    fail_reads: AtomicU32,
    panic_reads: AtomicU32,
}

impl MemorySource {
    fn new(data: Vec<u8>) -> Self {
        MemorySource {
            data: data.into(),
            mtime: 1_700_000_000,
            fail_reads: AtomicU32::new(0),
            panic_reads: AtomicU32::new(0),
        }
    }
}

/// Takes one from `n` if it is not zero.
fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Source for MemorySource {
    async fn stat(&self, _path: &str) -> Result<SourceStat> {
        Ok(SourceStat {
            size: self.data.len() as u64,
            mtime: Some(self.mtime),
            is_file: true,
        })
    }

    /// Every directory holds one file, `data`: this source.
    async fn list(&self, _dir: &str) -> Result<Vec<DirEntry>> {
        Ok(vec![DirEntry {
            name: "data".into(),
            kind: EntryKind::File(self.stat("data").await?),
        }])
    }

    async fn probe(&self, path: &str) -> Result<SourceStat> {
        self.stat(path).await
    }

    async fn read_range(
        &self,
        path: &str,
        range: ByteRange,
        expect: SourceStat,
    ) -> Result<ByteStream> {
        assert_eq!(expect.size, self.data.len() as u64);
        let slice = self
            .data
            .slice(range.start() as usize..range.end() as usize);
        if take_one(&self.panic_reads) {
            let half = slice.slice(..slice.len() / 2);
            let panics = futures::stream::poll_fn(|_| -> Poll<Option<Result<Bytes>>> {
                panic!("the reader's stream panicked")
            });
            return Ok(Box::pin(futures::stream::iter([Ok(half)]).chain(panics)));
        }
        let fail = take_one(&self.fail_reads);
        let chunks: Vec<Result<Bytes>> = if fail {
            let half = slice.slice(..slice.len() / 2);
            vec![
                Ok(half),
                Err(Error::SftpRead {
                    path: path.into(),
                    range,
                    source: "connection reset by peer".into(),
                }),
            ]
        } else {
            slice
                .chunks(100_000)
                .map(|c| Ok(slice.slice_ref(c)))
                .collect()
        };
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: LocalStore,
    dest: ObjectUrl,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (store, dest) = LocalStore::for_file(&dir.path().join("out.gz")).unwrap();
    Fixture {
        _dir: dir,
        store,
        dest,
    }
}

fn request(dest: &ObjectUrl, tasks: u32) -> JobRequest {
    JobRequest {
        source: "sftp://test@127.0.0.1/data/file".parse().unwrap(),
        destination: dest.clone(),
        level: Default::default(),
        tuning: Tuning {
            tasks: Some(tasks),
            block_size: 256 * KIB,
            part_size: 5 * MIB,
            ..Tuning::default()
        },
    }
}

fn fast_config() -> MasterConfig {
    MasterConfig {
        concurrency: 3,
        start_interval: Duration::from_millis(1),
        retry: gzship_core::backoff::Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(1),
        },
        ..MasterConfig::default()
    }
}

/// Runs a job of `tasks` tasks over `source` into the fixture's store with in-process workers.
async fn ship(
    f: &Fixture,
    source: &Arc<MemorySource>,
    tasks: u32,
    config: &MasterConfig,
) -> Result<JobReport> {
    let invoker = LocalInvoker::new(source.clone(), f.store.clone(), WorkerTuning::default());
    ship_with(f, source, tasks, config, &invoker).await
}

async fn ship_with<I: Invoker>(
    f: &Fixture,
    source: &Arc<MemorySource>,
    tasks: u32,
    config: &MasterConfig,
    invoker: &I,
) -> Result<JobReport> {
    let req = request(&f.dest, tasks);
    master::run(
        &req,
        "job",
        source.as_ref(),
        &f.store,
        invoker,
        config,
        None,
    )
    .await
}

async fn object_sha(f: &Fixture) -> String {
    let path = f.store.object_path(&f.dest).unwrap();
    let gz = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    sha256(&out)
}

async fn no_open_uploads(f: &Fixture) {
    let open = f.store.list_uploads(&f.dest.bucket, "").await.unwrap();
    assert!(open.is_empty(), "open uploads left behind: {open:?}");
}

#[tokio::test]
async fn multi_task_job_completes_and_decodes() {
    let f = fixture();
    let mut data = generate(DataKind::Logs, 9 * MIB as usize, 1);
    data.extend(generate(DataKind::Zeros, 7 * MIB as usize, 0));
    data.extend(generate(DataKind::Random, 6 * MIB as usize + 5, 2));
    let source = Arc::new(MemorySource::new(data.clone()));
    let report = ship(&f, &source, 5, &fast_config()).await.unwrap();
    assert_eq!(report.source_bytes, data.len() as u64);
    assert_eq!(report.tasks, 5);
    assert_eq!(report.crc32, crc32fast::hash(&data));
    assert_eq!(object_sha(&f).await, sha256(&data));
    let (size, meta) = f.store.head_object(&f.dest).await.unwrap().unwrap();
    assert_eq!(size, report.object_bytes);
    assert_eq!(meta.content_type, "application/gzip");
    assert_eq!(meta.metadata["gzship-source-size"], data.len().to_string());
    let tags = f.store.get_tags(&f.dest).await.unwrap();
    assert_eq!(
        tags[master::CRC32_TAG],
        format!("{:08x}", crc32fast::hash(&data))
    );
    no_open_uploads(&f).await;
}

/// Lambda's log format: every line a job logs, the master's and its workers', retries
/// included, is one JSON object whose spans name the job, so CloudWatch Logs Insights can
/// follow one job through the master's and the workers' log streams.
#[tokio::test]
async fn every_log_line_of_a_job_names_it() {
    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = gzship_lambda::runtime::json_logs(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    // A current-thread runtime: the job's tasks run on this thread, under this subscriber.
    let guard = tracing::subscriber::set_default(subscriber);
    let f = fixture();
    let source = MemorySource::new(generate(DataKind::Logs, 3 * MIB as usize, 7));
    source.fail_reads.store(1, Ordering::SeqCst);
    ship(&f, &Arc::new(source), 3, &fast_config())
        .await
        .unwrap();
    drop(guard);

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"),
        "the retried read is logged: {text}"
    );
    assert!(
        lines.iter().any(|l| l["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["name"] == "task"))),
        "workers log in their task span: {text}"
    );
    for line in &lines {
        assert_eq!(
            line["spans"][0]["job"], "job",
            "a line without its job: {line}"
        );
    }
}

#[tokio::test]
async fn empty_source_gives_a_valid_empty_gzip() {
    let f = fixture();
    let source = Arc::new(MemorySource::new(Vec::new()));
    let report = ship(&f, &source, 1, &fast_config()).await.unwrap();
    assert_eq!(report.object_bytes, 20);
    assert_eq!(object_sha(&f).await, sha256(b""));
}

#[tokio::test]
async fn retryable_failures_are_retried() {
    let f = fixture();
    let data = generate(DataKind::Logs, 12 * MIB as usize, 3);
    let source = Arc::new(MemorySource::new(data.clone()));
    source.fail_reads.store(2, Ordering::SeqCst);
    let report = ship(&f, &source, 3, &fast_config()).await.unwrap();
    assert_eq!(report.retries, 2);
    assert_eq!(object_sha(&f).await, sha256(&data));
}

#[tokio::test]
async fn persistent_failure_aborts_and_leaves_nothing() {
    let f = fixture();
    let data = generate(DataKind::Logs, 12 * MIB as usize, 4);
    let source = Arc::new(MemorySource::new(data));
    source.fail_reads.store(1000, Ordering::SeqCst);
    let err = ship(&f, &source, 3, &fast_config()).await.unwrap_err();
    let msg = gzship_core::error::chain(&err);
    assert!(msg.contains("connection reset"), "{msg}");
    assert!(msg.contains("task"), "{msg}");
    assert!(f.store.head_object(&f.dest).await.unwrap().is_none());
    no_open_uploads(&f).await;
}

/// Holds every task until `release` has permits; `started` counts the tasks that arrived.
struct Gated<I> {
    inner: I,
    started: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl<I: Invoker + Sync> Invoker for Gated<I> {
    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        self.started.notify_one();
        let _permit = self.release.acquire().await.expect("the gate stays open");
        self.inner.invoke(task).await
    }
}

/// Issue 12, item 6: a second job for a destination while one runs there (a duplicate
/// delivery of the same event) is refused before it creates anything, naming the running job,
/// and not as a retryable error; the first job completes alone.
#[tokio::test]
async fn a_second_job_for_a_destination_in_use_is_refused() {
    let f = fixture();
    let data = generate(DataKind::Logs, 12 * MIB as usize, 9);
    let source = Arc::new(MemorySource::new(data.clone()));
    let gated = Gated {
        inner: LocalInvoker::new(source.clone(), f.store.clone(), WorkerTuning::default()),
        started: tokio::sync::Notify::new(),
        release: tokio::sync::Semaphore::new(0),
    };
    let config = fast_config();
    let req = request(&f.dest, 3);
    let first = master::run(
        &req,
        "first-1-aaaa",
        source.as_ref(),
        &f.store,
        &gated,
        &config,
        None,
    );
    let second = async {
        // Once the first job's tasks run, its upload and record exist.
        gated.started.notified().await;
        let uploads = f.store.list_uploads(&f.dest.bucket, "").await.unwrap();
        assert_eq!(uploads.len(), 1, "{uploads:?}");
        let err = master::run(
            &req,
            "second-1-bbbb",
            source.as_ref(),
            &f.store,
            &LocalInvoker::new(source.clone(), f.store.clone(), WorkerTuning::default()),
            &config,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::JobExists { .. }), "{err}");
        assert!(err.to_string().contains("first-1-aaaa"), "{err}");
        assert!(!err.is_retryable(), "{err}");
        // Nothing of its own was created.
        let after = f.store.list_uploads(&f.dest.bucket, "").await.unwrap();
        assert_eq!(after, uploads);
        gated.release.add_permits(1_000);
    };
    let (report, ()) = tokio::join!(first, second);
    report.unwrap();
    assert_eq!(object_sha(&f).await, sha256(&data));
    no_open_uploads(&f).await;
}

/// A panic in a worker is a bug: the job fails at once, naming what panicked, instead of
/// passing for a cancellation (as it did) or being retried.
#[tokio::test]
async fn a_panicking_worker_fails_the_job_as_a_panic() {
    let f = fixture();
    let data = generate(DataKind::Logs, 12 * MIB as usize, 6);
    let source = Arc::new(MemorySource::new(data));
    source.panic_reads.store(1000, Ordering::SeqCst);
    let err = ship(&f, &source, 3, &fast_config()).await.unwrap_err();
    let msg = gzship_core::error::chain(&err);
    let Error::Task { source: cause, .. } = &err else {
        panic!("not a task's failure: {msg}");
    };
    assert!(
        matches!(
            cause.as_ref(),
            Error::Panicked { what, message }
                if what.starts_with("the source reader of task")
                    && message == "the reader's stream panicked"
        ),
        "{msg}"
    );
    assert_eq!(err.error_type(), "Panicked");
    assert!(!err.is_retryable(), "{msg}");
    assert!(f.store.head_object(&f.dest).await.unwrap().is_none());
    no_open_uploads(&f).await;
}

/// An invoker whose worker claims a part outside its window: the master must refuse the
/// report and abort.
struct LyingInvoker<I>(I);

impl<I: Invoker> Invoker for LyingInvoker<I> {
    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        let mut report = self.0.invoke(task).await?;
        if report.index == 1 {
            report.bytes_read -= 1;
        }
        Ok(report)
    }
}

#[tokio::test]
async fn inconsistent_reports_abort_the_job() {
    let f = fixture();
    let data = generate(DataKind::Logs, 12 * MIB as usize, 5);
    let source = Arc::new(MemorySource::new(data));
    let invoker = LyingInvoker(LocalInvoker::new(
        source.clone(),
        f.store.clone(),
        WorkerTuning::default(),
    ));
    let err = ship_with(&f, &source, 3, &fast_config(), &invoker)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::BadReport { index: Some(1), .. }),
        "{err}"
    );
    assert!(f.store.head_object(&f.dest).await.unwrap().is_none());
    no_open_uploads(&f).await;
}

#[tokio::test]
async fn disallowed_paths_fail_before_anything_is_created() {
    let f = fixture();
    let source = Arc::new(MemorySource::new(vec![1, 2, 3]));
    let config = MasterConfig {
        policy: gzship_core::config::AccessPolicy {
            source_paths: Some(vec!["/var/log".into()]),
            destinations: None,
        },
        ..fast_config()
    };
    let err = ship(&f, &source, 1, &config).await.unwrap_err();
    assert!(matches!(err, Error::NotAllowed { .. }), "{err}");
    no_open_uploads(&f).await;
}
