//! Durable jobs: a job's state lives beside its destination, in the same store, so that any
//! process (a resumed CLI, another Lambda master, a Step Functions step) can continue it.
//!
//! # Layout
//! In the destination's bucket (for a local destination: the destination's directory), under
//! the jobs prefix ([`DEFAULT_JOBS_PREFIX`], `.gzship/jobs/`, by default):
//! ```text
//! <prefix><job-id>/job.json           the job record: source and its stat, destination,
//!                                     upload id, plan (tasks, part windows, part size), level
//! <prefix><job-id>/tasks/00042.json   task 42's report, once its last part is uploaded
//! <prefix><job-id>/errors/00042.json  task 42's fatal error, when a worker run by the state
//!                                     machine failed for good (Step Functions does not carry
//!                                     an item's error out of a Distributed Map)
//! <prefix>claims/<hash>.json          which job writes a destination (hash of its URL):
//!                                     taken with a conditional write before the record, so
//!                                     no two unfinished jobs write one key
//! ```
//! A [`JobRef`] names one job's record; its [URL](JobRef::url) (`s3://bucket/.gzship/jobs/ID`)
//! is what `gzship jobs` prints and `gzship resume` takes.
//!
//! # Lifecycle
//! 1. The record is written before the upload is created and again with its upload id, so every
//!    upload gzship creates is accounted for by a record (one without an upload id is a job that
//!    stopped between the two writes).
//! 2. Each task's report is recorded when the task ends. Recording it again (a retried task)
//!    writes the same facts; a report is trusted on resume only when `ListParts` confirms every
//!    part of it.
//! 3. Completing reads the reports from the record, completes the upload and removes the record;
//!    aborting aborts the upload and removes the record. Task reports are removed before the job
//!    record, so a record is never left without its `job.json`.
//!
//! # Size
//! `job.json` holds the plan: about 120 bytes a task, 1.2 MB for 10,000 tasks (the most a
//! plan has). A task report is a few hundred bytes plus about 120 bytes a part.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gzip::Level;
use crate::plan::Plan;
use crate::source::SourceStat;
use crate::store::{ListedPart, ObjectStore, UploadedPart};
use crate::types::UploadId;
use crate::url::{ObjectUrl, SourceUrl};
use crate::wire::{Task, TaskReport};

/// Where job records live in a bucket unless configured otherwise (`GZSHIP_JOBS_PREFIX`).
pub const DEFAULT_JOBS_PREFIX: &str = ".gzship/jobs/";

/// Version of the record format; a record of another version is refused, not misread.
pub const RECORD_VERSION: u32 = 1;

/// The largest record file read back (a 10,000-task `job.json` is about 1.2 MB).
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Record files read at once when collecting task reports.
const READS_IN_FLIGHT: usize = 32;

const JOB_FILE: &str = "job.json";
const TASKS_DIR: &str = "tasks/";
const ERRORS_DIR: &str = "errors/";
/// Beside the jobs: the claims on destinations (not a job id: [`check_id`] refuses it).
const CLAIMS_DIR: &str = "claims/";

/// A task's fatal error, recorded by the worker that ran it so that whoever ends the job (the
/// state machine's failure step) knows to abort it rather than keep it for a resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskError {
    /// The task's index.
    pub index: u32,
    /// Its Lambda `errorType` (`Fatal.SourceChanged`, ...).
    pub error_type: String,
    /// Its message, the whole chain.
    pub message: String,
}

/// A job's durable state: everything needed to run its remaining tasks and complete it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    /// [`RECORD_VERSION`] of the writer.
    pub version: u32,
    /// The job's id (the last component of its record's URL).
    pub job_id: String,
    /// When the job started, seconds since the Unix epoch.
    pub created: u64,
    /// gzship version that started the job (a resume must produce the same bytes).
    pub gzship_version: String,
    /// The source file.
    pub source: SourceUrl,
    /// The source's size and mtime (absent where the server sends none) when the job was
    /// planned; a resume refuses a changed file.
    pub source_stat: SourceStat,
    /// The object being written.
    pub destination: ObjectUrl,
    /// The open multipart upload; `None` until it is created.
    pub upload_id: Option<UploadId>,
    /// Compression level.
    pub level: Level,
    /// The plan: tasks, ranges, part windows, part and block size.
    pub plan: Plan,
}

impl JobRecord {
    /// The task of the plan's task `index`, as a worker runs it.
    pub fn task(&self, index: u32) -> Result<Task> {
        let planned = self.plan.tasks.get(index as usize).ok_or_else(|| {
            Error::invalid(
                "task",
                format!(
                    "job {} has {} tasks; there is no task {index}",
                    self.job_id,
                    self.plan.tasks.len()
                ),
            )
        })?;
        let upload_id = self.upload_id.as_ref().ok_or_else(|| {
            Error::invalid(
                "task",
                format!("job {} has no multipart upload yet", self.job_id),
            )
        })?;
        Ok(Task::new(
            &self.job_id,
            planned,
            &self.source,
            self.source_stat,
            &self.destination,
            upload_id,
            self.plan.part_size,
            self.plan.block_size,
            self.level,
        ))
    }

    /// How long ago the job started.
    pub fn age(&self) -> Duration {
        Duration::from_secs(unix_now().saturating_sub(self.created))
    }

    /// Source bytes of the tasks in `done`. Saturates: a record is read from the bucket, and
    /// one whose ranges overlap must not panic `gzship jobs`.
    pub fn bytes_of(&self, done: &BTreeSet<u32>) -> u64 {
        self.plan
            .tasks
            .iter()
            .filter(|t| done.contains(&t.index))
            .fold(0u64, |sum, t| sum.saturating_add(t.range.len()))
    }
}

/// Where one job's record is: a bucket, the jobs prefix and the job id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobRef {
    /// The destination's bucket.
    pub bucket: String,
    /// The jobs prefix, ending in `/` (or empty).
    pub prefix: String,
    /// The job id.
    pub id: String,
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url())
    }
}

impl JobRef {
    /// The record of job `id` in `bucket` under `prefix`; checks both.
    pub fn new(bucket: &str, prefix: &str, id: &str) -> Result<JobRef> {
        check_prefix(prefix)?;
        check_id(id)?;
        Ok(JobRef {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            id: id.to_owned(),
        })
    }

    /// The record's URL: `s3://bucket/<prefix><id>`.
    pub fn url(&self) -> ObjectUrl {
        ObjectUrl {
            bucket: self.bucket.clone(),
            key: format!("{}{}", self.prefix, self.id),
        }
    }

    /// The job given as its record's URL: the key is `<prefix><id>` for the prefix given.
    pub fn from_url(url: &ObjectUrl, prefix: &str) -> Option<JobRef> {
        let id = url.key.trim_end_matches('/').strip_prefix(prefix)?;
        JobRef::new(&url.bucket, prefix, id).ok()
    }

    fn file(&self, name: &str) -> ObjectUrl {
        ObjectUrl {
            bucket: self.bucket.clone(),
            key: format!("{}{}/{name}", self.prefix, self.id),
        }
    }

    fn task_file(&self, index: u32) -> ObjectUrl {
        self.file(&format!("{TASKS_DIR}{index:05}.json"))
    }

    /// Writes (or rewrites) the job record.
    pub async fn write<M: ObjectStore>(&self, store: &M, record: &JobRecord) -> Result<()> {
        put_json(store, &self.file(JOB_FILE), record).await
    }

    /// Reads the job record; `None` when there is none.
    pub async fn read<M: ObjectStore>(&self, store: &M) -> Result<Option<JobRecord>> {
        let Some(record) = get_json::<M, JobRecord>(store, &self.file(JOB_FILE)).await? else {
            return Ok(None);
        };
        if record.version != RECORD_VERSION {
            return Err(Error::invalid(
                "job record",
                format!(
                    "{self} was written by gzship {} in record format {}; this gzship reads \
                     format {RECORD_VERSION}: resume or abort it with that version",
                    record.gzship_version, record.version
                ),
            ));
        }
        if record.job_id != self.id {
            return Err(Error::invalid(
                "job record",
                format!("{self} holds the record of job {}", record.job_id),
            ));
        }
        Ok(Some(record))
    }

    /// Reads the job record, which must exist.
    pub async fn read_existing<M: ObjectStore>(&self, store: &M) -> Result<JobRecord> {
        self.read(store).await?.ok_or_else(|| {
            Error::invalid(
                "job",
                format!(
                    "there is no job record at {self} (the job completed or was aborted, or \
                     the URL is wrong: `gzship jobs` lists the unfinished ones)"
                ),
            )
        })
    }

    /// Records a task's report (idempotent: a retried task records the same facts).
    pub async fn record_task<M: ObjectStore>(&self, store: &M, report: &TaskReport) -> Result<()> {
        put_json(store, &self.task_file(report.index), report).await
    }

    /// Records a task's fatal error (idempotent: a later failure of the task overwrites it).
    pub async fn record_error<M: ObjectStore>(&self, store: &M, error: &TaskError) -> Result<()> {
        put_json(
            store,
            &self.file(&format!("{ERRORS_DIR}{:05}.json", error.index)),
            error,
        )
        .await
    }

    /// The recorded task errors, by task index.
    pub async fn recorded_errors<M: ObjectStore>(&self, store: &M) -> Result<Vec<TaskError>> {
        let prefix = self.file(ERRORS_DIR).key;
        let mut errors = Vec::new();
        for o in store.list_objects(&self.bucket, &prefix).await? {
            if o.key.strip_prefix(&prefix).and_then(task_index).is_none() {
                continue;
            }
            let url = ObjectUrl {
                bucket: self.bucket.clone(),
                key: o.key,
            };
            if let Some(e) = get_json::<M, TaskError>(store, &url).await? {
                errors.push(e);
            }
        }
        errors.sort_by_key(|e| e.index);
        Ok(errors)
    }

    /// The indices of the tasks whose reports are recorded, from one listing.
    pub async fn recorded_tasks<M: ObjectStore>(&self, store: &M) -> Result<BTreeSet<u32>> {
        let prefix = self.file(TASKS_DIR).key;
        let listed = store.list_objects(&self.bucket, &prefix).await?;
        Ok(listed
            .iter()
            .filter_map(|o| task_index(o.key.strip_prefix(&prefix)?))
            .collect())
    }

    /// The recorded task reports, by index.
    pub async fn task_reports<M: ObjectStore>(
        &self,
        store: &M,
    ) -> Result<BTreeMap<u32, TaskReport>> {
        let indices = self.recorded_tasks(store).await?;
        let reports: Vec<Option<TaskReport>> = futures::stream::iter(indices)
            .map(|i| async move { get_json(store, &self.task_file(i)).await })
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut by_index = BTreeMap::new();
        for report in reports.into_iter().flatten() {
            by_index.insert(report.index, report);
        }
        Ok(by_index)
    }

    /// Removes the record: the task reports first, then `job.json`.
    pub async fn remove<M: ObjectStore>(&self, store: &M) -> Result<()> {
        // The job's claim on its destination goes first: a record without a claim is still a
        // job, a claim without a record is stale and taken over.
        if let Some(record) = get_json::<M, JobRecord>(store, &self.file(JOB_FILE)).await? {
            self.release(store, &record.destination).await?;
        }
        let prefix = format!("{}{}/", self.prefix, self.id);
        let mut keys: Vec<String> = store
            .list_objects(&self.bucket, &prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let job_file = self.file(JOB_FILE).key;
        keys.retain(|k| k != &job_file);
        futures::stream::iter(keys)
            .map(|key| async move {
                let url = ObjectUrl {
                    bucket: self.bucket.clone(),
                    key,
                };
                store.delete_object(&url).await
            })
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        store.delete_object(&self.file(JOB_FILE)).await
    }
}

impl JobRef {
    /// Where the claim on `dest` is: one object per destination, named by its hash.
    fn claim_file(&self, dest: &ObjectUrl) -> ObjectUrl {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(dest.to_string().as_bytes());
        ObjectUrl {
            bucket: self.bucket.clone(),
            key: format!(
                "{}{CLAIMS_DIR}{}.json",
                self.prefix,
                hex::encode(&digest[..16])
            ),
        }
    }

    /// Claims `dest` for this job with a conditional write, so that no two unfinished jobs
    /// write one destination (two runs of the same job, a duplicate delivery of a job event).
    /// A claim whose job has no record any more (it stopped between claiming and recording, or
    /// its removal failed) is stale and taken over, unless its job started less than
    /// [`CLAIM_GRACE`] ago: that job is between its claim and its record's first write (two
    /// scans that start together race so). Fails with [`Error::JobExists`] naming the
    /// other job.
    pub async fn claim<M: ObjectStore>(&self, store: &M, dest: &ObjectUrl) -> Result<()> {
        let url = self.claim_file(dest);
        let ours = Claim {
            job_id: self.id.clone(),
            destination: dest.clone(),
        };
        let body = serde_json::to_vec(&ours)
            .map_err(|e| Error::invalid("job claim", format!("encode {url}: {e}")))?;
        // Twice: once more after removing a stale claim.
        for _ in 0..2 {
            if store
                .put_object_if_absent(&url, Bytes::from(body.clone()))
                .await?
            {
                return Ok(());
            }
            let Some(holder) = get_json::<M, Claim>(store, &url).await? else {
                continue;
            };
            if holder.job_id == self.id {
                return Ok(());
            }
            let other = JobRef::new(&self.bucket, &self.prefix, &holder.job_id)?;
            if other.read(store).await?.is_some() || started_recently(&holder.job_id) {
                return Err(Error::JobExists {
                    destination: dest.to_string(),
                    job: other.to_string(),
                });
            }
            tracing::warn!(claim = %url, job = %holder.job_id, "taking over a stale claim");
            store.delete_object(&url).await?;
        }
        Err(Error::invalid(
            "job claim",
            format!("{url} changed hands while it was being claimed; try again"),
        ))
    }

    /// Releases this job's claim on `dest` (another job's claim is left alone).
    pub async fn release<M: ObjectStore>(&self, store: &M, dest: &ObjectUrl) -> Result<()> {
        let url = self.claim_file(dest);
        match get_json::<M, Claim>(store, &url).await? {
            Some(holder) if holder.job_id == self.id => store.delete_object(&url).await,
            _ => Ok(()),
        }
    }
}

/// How long after its job started a claim without a record still counts as its job's.
pub const CLAIM_GRACE: Duration = Duration::from_secs(60);

/// Whether the job `id` (as [`new_id`] makes them) started less than [`CLAIM_GRACE`] ago.
fn started_recently(id: &str) -> bool {
    let Some(millis) = id.rsplit('-').nth(1).and_then(|m| m.parse::<u128>().ok()) else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    now.saturating_sub(millis) < CLAIM_GRACE.as_millis()
}

/// Who writes a destination: `<prefix>claims/<hash of the destination>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claim {
    job_id: String,
    destination: ObjectUrl,
}

/// An unfinished job as `gzship jobs` shows it.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// Where its record is.
    pub at: JobRef,
    /// The record.
    pub record: JobRecord,
    /// Tasks whose reports are recorded.
    pub tasks_done: BTreeSet<u32>,
}

impl JobStatus {
    /// Source bytes of the recorded tasks.
    pub fn bytes_done(&self) -> u64 {
        self.record.bytes_of(&self.tasks_done)
    }
}

/// The unfinished jobs recorded in `bucket` under `prefix`, oldest first, from one listing and
/// one read per job.
pub async fn list_jobs<M: ObjectStore>(
    store: &M,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<JobStatus>> {
    check_prefix(prefix)?;
    let mut jobs: BTreeMap<String, (bool, BTreeSet<u32>)> = BTreeMap::new();
    for o in store.list_objects(bucket, prefix).await? {
        let Some((id, rest)) = o.key[prefix.len()..].split_once('/') else {
            continue;
        };
        let entry = jobs.entry(id.to_owned()).or_default();
        if rest == JOB_FILE {
            entry.0 = true;
        } else if let Some(index) = rest.strip_prefix(TASKS_DIR).and_then(task_index) {
            entry.1.insert(index);
        }
    }
    let mut found = Vec::new();
    for (id, (has_record, tasks_done)) in jobs {
        // Task reports without `job.json`: a removal under way, or not gzship's.
        let Ok(at) = JobRef::new(bucket, prefix, &id) else {
            continue;
        };
        if !has_record {
            continue;
        }
        if let Some(record) = at.read(store).await? {
            found.push(JobStatus {
                at,
                record,
                tasks_done,
            });
        }
    }
    found.sort_by(|a, b| (a.record.created, &a.at.id).cmp(&(b.record.created, &b.at.id)));
    Ok(found)
}

/// Whether `listed` (a ListParts answer) holds every part of `report` as it was acknowledged:
/// same number, size and ETag, and the same CRC32C where the store reports one.
pub fn confirms(report: &TaskReport, listed: &BTreeMap<u32, ListedPart>) -> bool {
    !report.parts.is_empty()
        && report.parts.iter().all(|p: &UploadedPart| {
            listed.get(&p.number.get()).is_some_and(|l| {
                l.size == p.size && l.etag == p.etag && l.crc32c.is_none_or(|c| c == p.crc32c)
            })
        })
}

/// A new job id for a job writing `dest`: the object's file name (characters other than
/// letters, digits, `.`, `_` and `-` replaced by `_`), the start time in milliseconds and four
/// random hex digits, e.g. `access.log.gz-1764488400123-9f2c`.
pub fn new_id(dest: &ObjectUrl) -> String {
    let name: String = dest
        .file_name()
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    let name = name.trim_start_matches('.');
    let name = if name.is_empty() { "job" } else { name };
    format!("{name}-{millis}-{:04x}", rand::random::<u16>())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Checks a jobs prefix: empty, or relative and ending in `/`, without empty, `.` or `..`
/// components.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let bad = |reason: &str| Error::invalid("jobs prefix", format!("{prefix:?} {reason}"));
    if prefix.is_empty() {
        return Ok(());
    }
    if !prefix.ends_with('/') {
        return Err(bad("must end with '/'"));
    }
    if prefix[..prefix.len() - 1]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(
            "has an empty, '.' or '..' component (or starts with '/')",
        ));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != CLAIMS_DIR.trim_end_matches('/')
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "job id",
            format!("{id:?} is not a job id (letters, digits, '.', '_' and '-')"),
        ))
    }
}

fn task_index(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() >= 5 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

async fn put_json<M: ObjectStore, T: Serialize>(
    store: &M,
    url: &ObjectUrl,
    value: &T,
) -> Result<()> {
    let body = serde_json::to_vec(value)
        .map_err(|e| Error::invalid("job record", format!("encode {url}: {e}")))?;
    store.put_object(url, Bytes::from(body)).await
}

async fn get_json<M: ObjectStore, T: serde::de::DeserializeOwned>(
    store: &M,
    url: &ObjectUrl,
) -> Result<Option<T>> {
    let mut stream = match store.get_object(url).await {
        Ok(s) => s,
        Err(e) if e.s3_code() == Some("NoSuchKey") => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.try_next().await? {
        if body.len() + chunk.len() > MAX_RECORD_BYTES {
            return Err(Error::invalid(
                "job record",
                format!("{url} is larger than {MAX_RECORD_BYTES} bytes: not a gzship record"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::invalid("job record", format!("{url} is not a valid record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{self, Tuning};
    use crate::store::local::LocalStore;
    use crate::types::{GIB, TIB};

    fn record(size: u64, tuning: &Tuning) -> JobRecord {
        JobRecord {
            version: RECORD_VERSION,
            job_id: "big.gz-1-abcd".into(),
            created: unix_now(),
            gzship_version: "0.1.0".into(),
            source: "sftp://u@h/data/big".parse().unwrap(),
            source_stat: SourceStat {
                size,
                mtime: Some(1_700_000_000),
                is_file: true,
            },
            destination: "s3://bkt/exports/big.gz".parse().unwrap(),
            upload_id: Some(UploadId::new("x".repeat(120)).unwrap()),
            level: Level::default(),
            plan: plan::plan(size, tuning).unwrap(),
        }
    }

    #[test]
    fn bytes_of_a_hostile_record_saturates() {
        // Two ranges near u64::MAX overflowed the sum (a panic in `gzship jobs` built with
        // overflow checks). Corpus input of the wire_json fuzz target: job_record_huge_ranges.
        let mut rec = record(3 * GIB, &Tuning::default());
        for t in &mut rec.plan.tasks {
            t.range = crate::types::ByteRange::new(1, u64::MAX).unwrap();
        }
        let all = rec.plan.tasks.iter().map(|t| t.index).collect();
        assert_eq!(rec.bytes_of(&all), u64::MAX);
    }

    #[test]
    fn a_48_tib_job_of_10000_tasks_has_a_small_record() {
        // 48 TiB is near the most a plan holds (about 48.7 TiB).
        let tuning = Tuning {
            tasks: Some(10_000),
            max_tasks: 10_000,
            ..Tuning::default()
        };
        let rec = record(48 * TIB, &tuning);
        // The planner gives as many tasks as fit S3's 10,000 parts at that size.
        let n = rec.plan.tasks.len() as u32;
        assert!(n > 9_900, "{n} tasks");
        let json = serde_json::to_vec(&rec).unwrap();
        assert!(
            json.len() < 2 * 1024 * 1024,
            "a 10,000-task record is {} bytes",
            json.len()
        );
        assert!(json.len() < MAX_RECORD_BYTES);
        let back: JobRecord = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, rec);
        let last = back.task(n - 1).unwrap();
        assert!(last.is_last);
        assert_eq!(last.range.end(), 48 * TIB);
        last.validate().unwrap();
    }

    #[test]
    fn ids_and_prefixes_are_checked() {
        let dest: ObjectUrl = "s3://bkt/dir/my file (1).csv.gz".parse().unwrap();
        let id = new_id(&dest);
        assert!(id.starts_with("my_file__1_.csv.gz-"), "{id}");
        check_id(&id).unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        for good in ["", ".gzship/jobs/", "jobs/"] {
            check_prefix(good).unwrap();
        }
        for bad in [".gzship/jobs", "/jobs/", "a//b/", "../jobs/"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        let at = JobRef::new("bkt", DEFAULT_JOBS_PREFIX, &id).unwrap();
        assert_eq!(at.url().to_string(), format!("s3://bkt/.gzship/jobs/{id}"));
        assert_eq!(JobRef::from_url(&at.url(), DEFAULT_JOBS_PREFIX), Some(at));
        assert_eq!(JobRef::from_url(&dest, DEFAULT_JOBS_PREFIX), None);
    }

    #[tokio::test]
    async fn records_round_trip_and_are_removed_whole() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let (store, dest) = LocalStore::for_file(&dir.path().join("out.gz"))?;
        let mut rec = record(3 * GIB, &Tuning::default());
        rec.destination = dest.clone();
        let at = JobRef::new(&dest.bucket, DEFAULT_JOBS_PREFIX, &rec.job_id)?;
        assert_eq!(at.read(&store).await?, None);
        at.write(&store, &rec).await?;
        assert_eq!(at.read(&store).await?.as_ref(), Some(&rec));

        let report = TaskReport {
            index: 1,
            range: rec.plan.tasks[1].range,
            parts: Vec::new(),
            bytes_read: rec.plan.tasks[1].range.len(),
            compressed_bytes: 0,
            crc32: 7,
            members: 0,
            seconds: 0.5,
        };
        at.record_task(&store, &report).await?;
        at.record_task(&store, &report).await?;
        assert_eq!(at.recorded_tasks(&store).await?, BTreeSet::from([1]));
        assert_eq!(at.task_reports(&store).await?[&1], report);
        assert!(at.recorded_errors(&store).await?.is_empty());
        let failed = TaskError {
            index: 2,
            error_type: "Fatal.NotAFile".into(),
            message: "/data/big is not a regular file".into(),
        };
        at.record_error(&store, &failed).await?;
        assert_eq!(at.recorded_errors(&store).await?, [failed]);
        // Errors are not reports.
        assert_eq!(at.recorded_tasks(&store).await?, BTreeSet::from([1]));

        let jobs = list_jobs(&store, &dest.bucket, DEFAULT_JOBS_PREFIX).await?;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].at, at);
        assert_eq!(jobs[0].bytes_done(), GIB);

        // The destination is claimed by one job at a time; a claim without a record is stale.
        at.claim(&store, &dest).await?;
        at.claim(&store, &dest).await?;
        let other = JobRef::new(&dest.bucket, DEFAULT_JOBS_PREFIX, "other-1-beef")?;
        let err = other.claim(&store, &dest).await.unwrap_err();
        assert!(matches!(err, Error::JobExists { .. }), "{err}");
        assert!(err.to_string().contains(&at.to_string()), "{err}");

        at.remove(&store).await?;
        assert_eq!(at.read(&store).await?, None);
        other.claim(&store, &dest).await?;
        // A claim without a record, of a job started just now: that job is about to record
        // itself, so its claim holds.
        let starting = JobRef::new(&dest.bucket, DEFAULT_JOBS_PREFIX, &new_id(&dest))?;
        other.release(&store, &dest).await?;
        starting.claim(&store, &dest).await?;
        let err = other.claim(&store, &dest).await.unwrap_err();
        assert!(matches!(err, Error::JobExists { .. }), "{err}");
        starting.release(&store, &dest).await?;
        other.claim(&store, &dest).await?;
        let stale = JobRef::new(&dest.bucket, DEFAULT_JOBS_PREFIX, "third-1-f00d")?;
        stale.claim(&store, &dest).await?;
        stale.release(&store, &dest).await?;
        assert!(
            list_jobs(&store, &dest.bucket, DEFAULT_JOBS_PREFIX)
                .await?
                .is_empty()
        );
        // Nothing is left on disk: not the record, not its directories.
        assert!(!dir.path().join(".gzship").exists());
        Ok(())
    }
}
