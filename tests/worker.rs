//! The worker against a real OpenSSH sshd and a real S3 server (moto): tasks over logs, random
//! data and zeros become objects that GNU gzip, pigz and Python decompress to the source's
//! SHA-256; tasks split at awkward offsets combine into one object; a rejected part is named and
//! the caller's abort leaves nothing behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use gzship_core::assemble::parts_needed;
use gzship_core::error::{Error, Result, chain};
use gzship_core::gzip::Level;
use gzship_core::plan::worst_case_compressed;
use gzship_core::source::sftp::{HostKeyPolicy, SftpConfig, SftpSource, SftpTuning, SshAuth};
use gzship_core::source::{Source, SourceStat};
use gzship_core::store::s3::S3Store;
use gzship_core::store::{
    ListedPart, MultipartStore, ObjectMeta, ObjectStore, PartBody, UploadedPart,
};
use gzship_core::types::{MIB, MIN_PART_SIZE};
use gzship_core::wire::{Task, TaskReport};
use gzship_core::worker::{self, WorkerTuning};
use gzship_core::{ByteRange, ObjectUrl, PartNumber, PartWindow, SourceUrl, UploadId};
use gzship_testkit::data::{DataKind, sha256_file, write_file};
use gzship_testkit::decode::assert_decodes;
use gzship_testkit::s3::S3Server;
use gzship_testkit::sshd::Sshd;

const BUCKET: &str = "worker";
const BLOCK: u64 = 4 * MIB;
const PART: u64 = 16 * MIB;

struct Env {
    sshd: Sshd,
    s3: S3Server,
    source: SftpSource,
}

async fn env() -> Env {
    let sshd = Sshd::start();
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let config = SftpConfig {
        host: sshd.host().into(),
        port: sshd.port(),
        user: sshd.user().into(),
        auth: SshAuth::private_key(sshd.client_key().private_key_pem.clone(), None),
        host_key: HostKeyPolicy::fingerprint(sshd.host_key_fingerprint()).unwrap(),
        tuning: SftpTuning {
            backoff: gzship_core::backoff::Backoff {
                base: Duration::from_millis(5),
                max: Duration::from_secs(10),
            },
            ..SftpTuning::default()
        },
    };
    let source = SftpSource::new(config).unwrap();
    Env { sshd, s3, source }
}

impl Env {
    /// Writes a source file; returns its URL, stat and SHA-256.
    async fn put(&self, name: &str, kind: DataKind, len: u64) -> (SourceUrl, SourceStat, String) {
        let path = self.sshd.data_dir().join(name);
        write_file(&path, kind, len, 11).unwrap();
        let url: SourceUrl = self.sshd.url(name).parse().unwrap();
        let stat = self.source.stat(&url.path).await.unwrap();
        (url, stat, sha256_file(&path).unwrap())
    }

    async fn create(&self, key: &str) -> (ObjectUrl, UploadId) {
        let dest: ObjectUrl = format!("s3://{BUCKET}/{key}").parse().unwrap();
        let meta = ObjectMeta {
            content_type: "application/gzip".into(),
            metadata: Default::default(),
        };
        let id = self.s3.store().create_upload(&dest, &meta).await.unwrap();
        (dest, id)
    }

    /// Runs `task` alone, with a spool budget of its own.
    async fn run<M: MultipartStore + Clone + 'static>(
        &self,
        task: &Task,
        store: &M,
        tuning: &WorkerTuning,
    ) -> Result<TaskReport> {
        worker::run(
            task,
            &self.source,
            store,
            tuning,
            &tuning.spool_budget(),
            None,
        )
        .await
    }

    /// Completes the upload and checks the object with the real decoders.
    async fn complete_and_check(
        &self,
        dest: &ObjectUrl,
        id: &UploadId,
        parts: &[UploadedPart],
        sha: &str,
    ) {
        let store = self.s3.store();
        store.complete_upload(dest, id, parts).await.unwrap();
        let mut stream = store.get_object(dest).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object.gz");
        let mut gz = Vec::new();
        while let Some(chunk) = stream.next().await {
            gz.extend_from_slice(&chunk.unwrap());
        }
        std::fs::write(&path, gz).unwrap();
        assert_decodes(&path, sha);
    }
}

/// Tasks for `ranges` of a source, with windows sized for the worst case, as the planner does.
fn tasks(
    url: &SourceUrl,
    stat: SourceStat,
    dest: &ObjectUrl,
    id: &UploadId,
    ranges: &[(u64, u64)],
) -> Vec<Task> {
    let mut next = 1;
    ranges
        .iter()
        .enumerate()
        .map(|(i, &(start, end))| {
            let range = ByteRange::new(start, end).unwrap();
            let count = parts_needed(worst_case_compressed(range.len(), BLOCK), PART) as u32;
            let window = PartWindow::new(PartNumber::new(next).unwrap(), count).unwrap();
            next += count;
            Task {
                job_id: "worker-e2e".into(),
                index: i as u32,
                source: url.clone(),
                source_stat: stat,
                range,
                destination: dest.clone(),
                upload_id: id.clone(),
                window,
                part_size: PART,
                block_size: BLOCK,
                level: Level::default(),
                is_last: end == stat.size,
            }
        })
        .collect()
}

fn check_report(report: &TaskReport, task: &Task) {
    assert_eq!(report.bytes_read, task.range.len());
    let n = report.parts.len();
    for (i, p) in report.parts.iter().enumerate() {
        assert!(task.window.contains(p.number));
        if i + 1 < n || !task.is_last {
            assert!(
                p.size >= MIN_PART_SIZE,
                "part {} is {} bytes",
                p.number,
                p.size
            );
        }
    }
}

async fn one_task(kind: DataKind) {
    one_task_with(kind, 256 * MIB, &WorkerTuning::default()).await;
}

/// A tuning that spools every part to a fresh directory (no part fits `part_memory`).
fn spooling() -> (tempfile::TempDir, WorkerTuning) {
    let dir = tempfile::tempdir().unwrap();
    let tuning = WorkerTuning {
        part_memory: 0,
        spool_dir: dir.path().to_path_buf(),
        ..WorkerTuning::default()
    };
    (dir, tuning)
}

fn assert_spool_empty(dir: &tempfile::TempDir) {
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
}

async fn one_task_with(kind: DataKind, len: u64, tuning: &WorkerTuning) {
    let env = env().await;
    let (url, stat, sha) = env.put("source", kind, len).await;
    let (dest, id) = env.create("one-task.gz").await;
    let task = &tasks(&url, stat, &dest, &id, &[(0, stat.size)])[0];
    let store = env.s3.store();
    let report = env
        .run(task, &store, tuning)
        .await
        .unwrap_or_else(|e| panic!("worker failed: {}", chain(&e)));
    check_report(&report, task);
    let path = env.sshd.data_dir().join("source");
    let data = std::fs::read(path).unwrap();
    assert_eq!(
        report.crc32,
        crc32fast::hash(&data),
        "reported CRC-32 differs from the source"
    );
    env.complete_and_check(&dest, &id, &report.parts, &sha)
        .await;
}

#[tokio::test]
async fn one_task_over_logs() {
    one_task(DataKind::Logs).await;
}

#[tokio::test]
async fn one_task_over_random_data() {
    one_task(DataKind::Random).await;
}

#[tokio::test]
async fn one_task_over_zeros() {
    one_task(DataKind::Zeros).await;
}

/// Parts too big for the worker's part memory go through spool files: same object, and no file
/// is left once the task is done.
#[tokio::test]
async fn one_task_with_parts_spooled_to_disk() {
    let (spool, tuning) = spooling();
    one_task_with(DataKind::Random, 96 * MIB, &tuning).await;
    assert_spool_empty(&spool);
}

/// A spool with room for one part only: each part is uploaded before the next is cut.
#[tokio::test]
async fn a_spool_for_one_part_uploads_one_at_a_time() {
    let (spool, mut tuning) = spooling();
    tuning.spool_limit = Some(40 * MIB);
    let storage = tuning.spool_budget().part_storage(&tuning, PART).unwrap();
    assert!(storage.sequential);
    one_task_with(DataKind::Random, 64 * MIB, &tuning).await;
    assert_spool_empty(&spool);
}

/// A spool without room for one part fails the task before it reads or uploads anything.
#[tokio::test]
async fn a_spool_without_room_fails_before_any_upload() {
    let env = env().await;
    let (url, stat, _) = env.put("random", DataKind::Random, 32 * MIB).await;
    let (dest, id) = env.create("no-room.gz").await;
    let task = &tasks(&url, stat, &dest, &id, &[(0, stat.size)])[0];
    let (spool, mut tuning) = spooling();
    tuning.spool_limit = Some(10 * MIB);
    let store = env.s3.store();
    let err = env.run(task, &store, &tuning).await.unwrap_err();
    let msg = chain(&err);
    assert!(matches!(err, Error::SpoolSpace { .. }), "{msg}");
    assert!(msg.contains(&spool.path().display().to_string()), "{msg}");
    assert!(store.list_parts(&dest, &id).await.unwrap().is_empty());
    store.abort_upload(&dest, &id).await.unwrap();
    assert_spool_empty(&spool);
}

#[tokio::test]
async fn tasks_at_awkward_offsets_with_an_all_zero_middle() {
    let env = env().await;
    let name = "mixed";
    let path = env.sshd.data_dir().join(name);
    // logs | zeros | random, with task boundaries that align to nothing.
    let mut data = gzship_testkit::data::generate(DataKind::Logs, 20 * MIB as usize + 3, 1);
    let zeros_start = data.len() as u64;
    data.extend(std::iter::repeat_n(0u8, 30 * MIB as usize));
    let zeros_end = data.len() as u64;
    data.extend(gzship_testkit::data::generate(
        DataKind::Random,
        9 * MIB as usize + 17,
        2,
    ));
    std::fs::write(&path, &data).unwrap();
    let url: SourceUrl = env.sshd.url(name).parse().unwrap();
    let stat = env.source.stat(&url.path).await.unwrap();
    let (dest, id) = env.create("mixed.gz").await;
    let ranges = [
        (0, zeros_start + 1),
        (zeros_start + 1, zeros_end - 7),
        (zeros_end - 7, zeros_end + 1_000_001),
        (zeros_end + 1_000_001, stat.size),
    ];
    let tasks = tasks(&url, stat, &dest, &id, &ranges);
    let store = env.s3.store();
    let tuning = WorkerTuning::default();
    let spool = tuning.spool_budget();
    let runs = tasks
        .iter()
        .map(|t| worker::run(t, &env.source, &store, &tuning, &spool, None));
    let reports = futures::future::try_join_all(runs).await.unwrap();
    let mut parts = Vec::new();
    for (r, t) in reports.iter().zip(&tasks) {
        check_report(r, t);
        parts.extend(r.parts.iter().cloned());
    }
    // The all-zero middle task compresses to a few KiB: it was padded to one 5 MiB part.
    assert_eq!(reports[1].parts.len(), 1);
    assert_eq!(reports[1].parts[0].size, MIN_PART_SIZE);
    assert!(reports[1].members > (30 * MIB).div_ceil(BLOCK));
    env.complete_and_check(&dest, &id, &parts, &gzship_testkit::data::sha256(&data))
        .await;
}

/// A store whose uploads of one part go to an upload id the server does not know, so the real
/// server rejects that part (`NoSuchUpload` on S3, a bare 404 on moto). It also counts the
/// uploads in flight and keeps their peak.
#[derive(Clone)]
struct RejectPart {
    inner: S3Store,
    reject: Option<PartNumber>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl RejectPart {
    fn new(inner: S3Store, reject: Option<PartNumber>) -> Self {
        RejectPart {
            inner,
            reject,
            in_flight: Arc::default(),
            peak: Arc::default(),
        }
    }
}

impl MultipartStore for RejectPart {
    async fn create_upload(&self, dest: &ObjectUrl, meta: &ObjectMeta) -> Result<UploadId> {
        self.inner.create_upload(dest, meta).await
    }
    async fn upload_part(
        &self,
        dest: &ObjectUrl,
        id: &UploadId,
        n: PartNumber,
        body: PartBody,
    ) -> Result<UploadedPart> {
        let id = if Some(n) == self.reject {
            UploadId::new("no-such-upload").unwrap()
        } else {
            id.clone()
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let uploaded = self.inner.upload_part(dest, &id, n, body).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        uploaded
    }
    async fn complete_upload(
        &self,
        dest: &ObjectUrl,
        id: &UploadId,
        parts: &[UploadedPart],
    ) -> Result<()> {
        self.inner.complete_upload(dest, id, parts).await
    }
    async fn abort_upload(&self, dest: &ObjectUrl, id: &UploadId) -> Result<()> {
        self.inner.abort_upload(dest, id).await
    }
    async fn list_parts(&self, dest: &ObjectUrl, id: &UploadId) -> Result<Vec<ListedPart>> {
        self.inner.list_parts(dest, id).await
    }
}

#[tokio::test]
async fn rejected_part_is_named_and_abort_leaves_nothing() {
    rejected_part(&WorkerTuning::default()).await;
}

#[tokio::test]
async fn rejected_spooled_part_leaves_no_spool_file() {
    let (spool, tuning) = spooling();
    rejected_part(&tuning).await;
    assert_spool_empty(&spool);
}

async fn rejected_part(tuning: &WorkerTuning) {
    let env = env().await;
    let (url, stat, _) = env.put("random", DataKind::Random, 64 * MIB).await;
    let (dest, id) = env.create("rejected.gz").await;
    let task = &tasks(&url, stat, &dest, &id, &[(0, stat.size)])[0];
    let store = RejectPart::new(env.s3.store(), Some(PartNumber::new(2).unwrap()));
    let err = env.run(task, &store, tuning).await.unwrap_err();
    let msg = chain(&err);
    assert!(matches!(err, Error::S3 { .. }), "{msg}");
    assert!(
        msg.contains("upload part 2 of s3://worker/rejected.gz"),
        "{msg}"
    );
    // S3 answers NoSuchUpload; moto answers 404 without a body, so the code is not checked.
    store.abort_upload(&dest, &id).await.unwrap();
    let open = store.inner.list_uploads(BUCKET, "").await.unwrap();
    assert!(open.is_empty(), "uploads left open: {open:?}");
    assert!(store.inner.head_object(&dest).await.unwrap().is_none());
}

/// Uploads in flight never exceed `uploads_in_flight`, and a spool with room for one part
/// uploads one part at a time.
#[tokio::test]
async fn uploads_in_flight_are_bounded() {
    let env = env().await;
    let (url, stat, sha) = env.put("random", DataKind::Random, 96 * MIB).await;
    let (spool, spooled) = spooling();
    let cases = [
        (
            "two.gz",
            WorkerTuning {
                uploads_in_flight: 2,
                ..WorkerTuning::default()
            },
            2,
        ),
        (
            "one.gz",
            WorkerTuning {
                spool_limit: Some(40 * MIB),
                ..spooled
            },
            1,
        ),
    ];
    for (key, tuning, most) in cases {
        let (dest, id) = env.create(key).await;
        let task = &tasks(&url, stat, &dest, &id, &[(0, stat.size)])[0];
        let store = RejectPart::new(env.s3.store(), None);
        let report = env
            .run(task, &store, &tuning)
            .await
            .unwrap_or_else(|e| panic!("worker failed: {}", chain(&e)));
        assert!(report.parts.len() >= 5, "{key}: {report:?}");
        let peak = store.peak.load(Ordering::SeqCst);
        assert!((1..=most).contains(&peak), "{key}: {peak} uploads at once");
        env.complete_and_check(&dest, &id, &report.parts, &sha)
            .await;
    }
    assert_spool_empty(&spool);
}
