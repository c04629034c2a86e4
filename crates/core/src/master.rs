//! The master: stat, plan, create the upload, fan out tasks, check the reports, complete; or
//! abort on any failure, so that nothing is ever left at the key or half-uploaded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
pub use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::AccessPolicy;
use crate::duration::{DurationModel, WorkerSpeed};
use crate::error::{Error, Result, chain};
use crate::gzip::{self, Level};
use crate::invoke::Invoker;
use crate::job::{self, JobRecord, JobRef};
use crate::plan::{self, Plan};
use crate::source::{Source, SourceStat};
use crate::store::{ListedPart, MultipartStore, ObjectMeta, ObjectStore, UploadedPart};
use crate::types::{MAX_PART_SIZE, MIN_PART_SIZE, UploadId};
use crate::url::{ObjectUrl, SourceUrl};
use crate::wire::{JobReport, JobRequest, Task, TaskReport};
use crate::worker::Progress;

/// Master knobs.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Tasks running at once. Default 8. Each is an SSH connection to the source server and,
    /// with Lambda, a concurrent function. Too high: OpenSSH's `MaxStartups` (10 by default)
    /// drops handshakes and the source disk seeks; too low: the job runs longer.
    pub concurrency: usize,
    /// Pause between starting two tasks. Default 200 ms: at most five SSH handshakes a second
    /// reach the server, well under `MaxStartups 10:30:100`. Too short: dropped handshakes
    /// (retried, but slower); too long: slow ramp-up on jobs with many tasks.
    pub start_interval: Duration,
    /// Attempts per task when its error is retryable. Default 3.
    pub task_attempts: u32,
    /// Delays between a task's attempts: 1 s before the first retry, doubling (jittered) up
    /// to 30 s.
    pub retry: Backoff,
    /// How long, after a task failed for good and the upload was aborted, to wait for the
    /// tasks still running to end before the final abort. Default 30 s. Remote workers fail at
    /// their next UploadPart once the upload is aborted; too short: a part uploaded in that
    /// race can survive the first abort (the bucket's lifecycle rule still removes it); too
    /// long: a failing job takes longer to report.
    pub drain_timeout: Duration,
    /// How fast one worker is assumed to be (default 50 MB/s at any level: a slow single
    /// core at level 9). With the invoker's time limit it sizes tasks; see [`DurationModel`].
    pub worker_speed: WorkerSpeed,
    /// What the source server delivers in total, in MB/s, shared by the tasks running;
    /// `None` (default): no cap.
    pub source_mb_per_s: Option<f64>,
    /// Which sources and destinations are allowed.
    pub policy: AccessPolicy,
    /// Cancels the job from outside (the CLI on Ctrl-C, the Lambda master near its deadline):
    /// the tasks stop and the job ends with [`Error::Cancelled`], resumable or aborted as
    /// `resumable` says.
    pub cancel: CancellationToken,
    /// Where job records live in the destination's bucket (or directory). Default
    /// [`job::DEFAULT_JOBS_PREFIX`], `.gzship/jobs/`.
    pub jobs_prefix: String,
    /// Keep a job that stopped for a reason retrying can fix (a retryable error, an
    /// interruption) resumable: its upload and record stay for [`resume`]. Off (the default): it
    /// is aborted like a failed one; for callers no one resumes after (a Lambda master).
    pub resumable: bool,
    /// A scan's job: when, once the job has claimed its destination, the destination already
    /// holds an object of this very source (its size and mtime recorded), the job ends with
    /// [`Error::AlreadyShipped`] instead of shipping it again. Another scan shipped it between
    /// this scan's listing and the claim. Off by default: a plain job replaces the object.
    pub skip_shipped: bool,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            concurrency: 8,
            start_interval: Duration::from_millis(200),
            task_attempts: 3,
            retry: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(30),
            },
            drain_timeout: Duration::from_secs(30),
            worker_speed: WorkerSpeed::Fixed(50.0),
            source_mb_per_s: None,
            policy: AccessPolicy::default(),
            cancel: CancellationToken::new(),
            jobs_prefix: job::DEFAULT_JOBS_PREFIX.to_owned(),
            resumable: false,
            skip_shipped: false,
        }
    }
}

impl MasterConfig {
    /// The duration model of jobs run with this configuration at `level`.
    pub fn duration_model(&self, level: Level) -> DurationModel {
        DurationModel {
            worker_bytes_per_s: self.worker_speed.mb_per_s(level) * 1e6,
            source_bytes_per_s: self.source_mb_per_s.map(|mb| mb * 1e6),
            concurrency: self.concurrency,
            start_interval: self.start_interval,
        }
    }
}

/// Object tag holding the CRC-32 of the whole source (8 hex digits), as gzip's trailers do.
pub const CRC32_TAG: &str = "gzship-crc32";

/// Content-Type of every object gzship writes.
pub const CONTENT_TYPE: &str = "application/gzip";

/// Runs a whole job: the object at `request.destination` is complete and valid when this
/// returns `Ok`, and the job's record is removed. On `Err` the upload has been aborted and the
/// record removed, unless the job was left resumable ([`MasterConfig::resumable`] and a
/// failure that retrying can fix, see [`leaves_resumable`]): then both stay for [`resume`].
#[tracing::instrument(name = "job", skip_all, fields(job = job_id))]
pub async fn run<S, M, I>(
    request: &JobRequest,
    job_id: &str,
    source: &S,
    store: &M,
    invoker: &I,
    config: &MasterConfig,
    progress: Option<&Progress>,
) -> Result<JobReport>
where
    S: Source,
    M: MultipartStore + ObjectStore,
    I: Invoker,
{
    let started = Instant::now();
    let (at, record) = start(request, job_id, source, store, invoker.time_limit(), config).await?;
    if let Some(p) = progress {
        p.total_bytes
            .store(record.source_stat.size, Ordering::Relaxed);
    }
    execute(
        &at,
        &record,
        store,
        invoker,
        config,
        &BTreeSet::new(),
        started,
    )
    .await
}

/// Starts a job without running its tasks: checks the request, stats the source, plans (tasks
/// sized to `time_limit` when the invoker has one), records the job beside its destination and
/// creates the multipart upload. The record is written before the upload is created and again
/// with its id, so no upload is ever without a record; a failure removes what was made.
pub async fn start<S, M>(
    request: &JobRequest,
    job_id: &str,
    source: &S,
    store: &M,
    time_limit: Option<Duration>,
    config: &MasterConfig,
) -> Result<(JobRef, JobRecord)>
where
    S: Source,
    M: MultipartStore + ObjectStore,
{
    config.policy.check_source(&request.source)?;
    config.policy.check_destination(&request.destination)?;
    check_config(config)?;
    let at = JobRef::new(&request.destination.bucket, &config.jobs_prefix, job_id)?;

    let stat = source.stat(&request.source.path).await?;
    if !stat.is_file {
        return Err(Error::NotAFile {
            path: request.source.path.clone(),
        });
    }
    let mut tuning = request.tuning.clone();
    if let Some(limit) = time_limit {
        config
            .duration_model(request.level)
            .cap_tasks(&mut tuning, limit);
    }
    let plan = plan::plan(stat.size, &tuning)?;
    tracing::info!(
        job = job_id, source = %request.source, destination = %request.destination,
        size = stat.size, tasks = plan.tasks.len(), part_size = plan.part_size,
        "job planned"
    );
    let mut record = JobRecord {
        version: job::RECORD_VERSION,
        job_id: job_id.to_owned(),
        created: job::unix_now(),
        gzship_version: env!("CARGO_PKG_VERSION").to_owned(),
        source: request.source.clone(),
        source_stat: stat,
        destination: request.destination.clone(),
        upload_id: None,
        level: request.level,
        plan,
    };
    at.claim(store, &record.destination).await?;
    if let Err(err) = at.write(store, &record).await {
        if let Err(e) = at.release(store, &record.destination).await {
            tracing::warn!(error = %chain(&e), "could not release the destination's claim");
        }
        return Err(err);
    }
    if config.skip_shipped {
        let shipped = store
            .head_object(&record.destination)
            .await
            .map(|found| found.is_some_and(|(_, meta)| crate::scan::holds_source(&meta, &stat)));
        match shipped {
            Ok(false) => {}
            Ok(true) => {
                remove_record(&at, store).await;
                return Err(Error::AlreadyShipped {
                    destination: record.destination.to_string(),
                    source_url: record.source.to_string(),
                });
            }
            Err(err) => {
                remove_record(&at, store).await;
                return Err(err);
            }
        }
    }

    let meta = object_meta(&record.source, record.level, &stat);
    let upload_id = match store.create_upload(&request.destination, &meta).await {
        Ok(id) => id,
        Err(err) => {
            remove_record(&at, store).await;
            return Err(err);
        }
    };
    tracing::info!(job = job_id, upload_id = %upload_id, record = %at, "multipart upload created");
    record.upload_id = Some(upload_id.clone());
    if let Err(err) = at.write(store, &record).await {
        let err = abort(store, &request.destination, &upload_id, err).await;
        remove_record(&at, store).await;
        return Err(err);
    }
    Ok((at, record))
}

/// Continues the job recorded at `at`, whose `record` the caller read (to know which source
/// to connect to): checks that the source is unchanged (a changed source aborts the job and
/// removes its record), reuses the open upload, skips every task whose recorded report
/// `ListParts` confirms (number, size, ETag and CRC32C of each part), runs the others and
/// completes. The object is the one an uninterrupted run makes: the plan, level and block size
/// come from the record. The report counts the skipped tasks in `resumed_tasks`.
#[tracing::instrument(name = "job", skip_all, fields(job = %at.id))]
pub async fn resume<S, M, I>(
    at: &JobRef,
    record: JobRecord,
    source: &S,
    store: &M,
    invoker: &I,
    config: &MasterConfig,
    progress: Option<&Progress>,
) -> Result<JobReport>
where
    S: Source,
    M: MultipartStore + ObjectStore,
    I: Invoker,
{
    let started = Instant::now();
    let (record, done) = prepare_resume(at, record, source, store, config).await?;
    if let Some(p) = progress {
        p.total_bytes
            .store(record.source_stat.size, Ordering::Relaxed);
        p.source_bytes
            .store(record.bytes_of(&done), Ordering::Relaxed);
    }
    execute(at, &record, store, invoker, config, &done, started).await
}

/// What resuming the job at `at` starts from: its `record` as the caller read it (completed
/// with an upload, created now if the job stopped before recording one) and the tasks already
/// done, confirmed by `ListParts`.
/// A changed source aborts the job and removes its record; an upload that is gone removes the
/// record. Whoever runs the remaining tasks ([`resume`], or a Step Functions execution over
/// their indices) then completes with [`finish`].
pub async fn prepare_resume<S, M>(
    at: &JobRef,
    mut record: JobRecord,
    source: &S,
    store: &M,
    config: &MasterConfig,
) -> Result<(JobRecord, BTreeSet<u32>)>
where
    S: Source,
    M: MultipartStore + ObjectStore,
{
    config.policy.check_source(&record.source)?;
    config.policy.check_destination(&record.destination)?;
    check_config(config)?;

    let stat = source.stat(&record.source.path).await?;
    let was = record.source_stat;
    if was.change_to(&stat).is_some()
        || was.mtime.is_some() != stat.mtime.is_some()
        || !stat.is_file
    {
        let err = Error::SourceChanged {
            path: record.source.path.clone(),
            detail: format!(
                "it was {} bytes with {} when job {} started and is {} bytes with {} now; a \
                 resume would mix old and new bytes, so the job was aborted and its record \
                 removed: run it again",
                was.size,
                was.mtime_words(),
                record.job_id,
                stat.size,
                stat.mtime_words()
            ),
        };
        return Err(discard(at, &record, store, err).await);
    }

    let upload_id = match &record.upload_id {
        Some(id) => id.clone(),
        None => {
            // The job stopped between recording itself and recording its upload.
            abort_unrecorded(at, &record, store).await?;
            let meta = object_meta(&record.source, record.level, &stat);
            let id = store.create_upload(&record.destination, &meta).await?;
            record.upload_id = Some(id.clone());
            if let Err(err) = at.write(store, &record).await {
                return Err(abort(store, &record.destination, &id, err).await);
            }
            id
        }
    };
    let listed = match store.list_parts(&record.destination, &upload_id).await {
        Ok(listed) => listed,
        Err(e) if e.s3_code() == Some("NoSuchUpload") => {
            return Err(upload_gone(at, &record, store, &upload_id).await);
        }
        Err(e) => return Err(e),
    };
    let listed: BTreeMap<u32, ListedPart> =
        listed.into_iter().map(|p| (p.number.get(), p)).collect();
    let done: BTreeSet<u32> = at
        .task_reports(store)
        .await?
        .values()
        .filter(|r| {
            let planned = record.plan.tasks.get(r.index as usize);
            planned.is_some_and(|t| t.range == r.range) && job::confirms(r, &listed)
        })
        .map(|r| r.index)
        .collect();
    tracing::info!(
        job = %record.job_id, upload_id = %upload_id, done = done.len(),
        tasks = record.plan.tasks.len(), "resuming job"
    );
    Ok((record, done))
}

/// Aborts the job recorded at `at`: aborts its upload (one already gone is fine) and removes
/// the record. Returns the record, for the caller to say what was aborted.
#[tracing::instrument(name = "job", skip_all, fields(job = %at.id))]
pub async fn abort_job<M>(at: &JobRef, store: &M) -> Result<JobRecord>
where
    M: MultipartStore + ObjectStore,
{
    let record = at.read_existing(store).await?;
    match &record.upload_id {
        Some(id) => match store.abort_upload(&record.destination, id).await {
            Ok(()) => {}
            Err(e) if e.s3_code() == Some("NoSuchUpload") => {}
            Err(e) => return Err(e),
        },
        None => abort_unrecorded(at, &record, store).await?,
    }
    at.remove(store).await?;
    tracing::info!(job = %record.job_id, destination = %record.destination, "job aborted");
    Ok(record)
}

/// Completes the job recorded at `at` from the task reports recorded there (not from memory):
/// checks that they cover the source once, with legal parts, completes the upload, tags the
/// object with the source's CRC-32 and removes the record. A failure aborts (or, when
/// resumable, keeps) the job as [`run`] does.
#[tracing::instrument(name = "job", skip_all, fields(job = %at.id))]
pub async fn finish<M>(
    at: &JobRef,
    record: &JobRecord,
    store: &M,
    config: &MasterConfig,
    stats: RunStats,
) -> Result<JobReport>
where
    M: MultipartStore + ObjectStore,
{
    let upload_id = recorded_upload(record)?;
    let checked = async {
        let mut recorded = at.task_reports(store).await?;
        let reports = record
            .plan
            .tasks
            .iter()
            .map(|t| {
                recorded.remove(&t.index).ok_or_else(|| Error::BadReport {
                    index: Some(t.index),
                    reason: "no report of it is recorded".into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let parts = check_reports(&record.plan, &reports)?;
        Ok::<_, Error>((reports, parts))
    };
    let (reports, parts) = match checked.await {
        Ok(done) => done,
        Err(err) => return Err(fail(at, record, store, config, err).await),
    };
    if let Err(err) = store
        .complete_upload(&record.destination, upload_id, &parts)
        .await
    {
        return Err(fail(at, record, store, config, err).await);
    }

    let crc32 = reports.iter().fold(0u32, |crc, r| {
        gzip::crc32_combine(crc, r.crc32, r.bytes_read)
    });
    // The CRC-32 is known only now, and S3 metadata is fixed at creation: record it as a tag.
    // The object is complete and correct either way, so a refused tag is a warning.
    let tags = BTreeMap::from([(CRC32_TAG.to_owned(), format!("{crc32:08x}"))]);
    if let Err(e) = store.put_tags(&record.destination, &tags).await {
        tracing::warn!(
            error = %chain(&e),
            "could not tag the object with the source's CRC-32 (needs s3:PutObjectTagging)"
        );
    }
    remove_record(at, store).await;

    let size = record.source_stat.size;
    let object_bytes: u64 = parts.iter().map(|p| p.size).sum();
    let seconds = stats.started.elapsed().as_secs_f64();
    let shipped = size - record.bytes_of(&stats.resumed);
    let report = JobReport {
        job_id: record.job_id.clone(),
        source: record.source.clone(),
        destination: record.destination.to_string(),
        source_bytes: size,
        object_bytes,
        ratio: if object_bytes == 0 {
            0.0
        } else {
            size as f64 / object_bytes as f64
        },
        parts: parts.len() as u32,
        tasks: record.plan.tasks.len() as u32,
        part_size: record.plan.part_size,
        level: record.level,
        crc32,
        seconds,
        mb_per_s: shipped as f64 / 1e6 / seconds.max(1e-9),
        retries: stats.retries,
        resumed_tasks: stats.resumed.len() as u32,
    };
    tracing::info!(
        job = %record.job_id,
        object_bytes,
        parts = report.parts,
        ratio = report.ratio,
        seconds,
        mb_per_s = report.mb_per_s,
        resumed_tasks = report.resumed_tasks,
        "job complete"
    );
    Ok(report)
}

/// What a run of a job's tasks adds to its report.
#[derive(Debug, Clone)]
pub struct RunStats {
    /// When this run started.
    pub started: Instant,
    /// Task attempts that failed and were retried.
    pub retries: u32,
    /// Tasks skipped because a previous run had done them.
    pub resumed: BTreeSet<u32>,
}

/// Whether a job that stopped with `err` can be resumed rather than aborted: a failure that
/// retrying can fix (a lost connection, throttling, an unreachable server) or an interruption.
/// A fatal error (the source changed, access denied, bad input) aborts.
pub fn leaves_resumable(err: &Error) -> bool {
    err.is_retryable() || matches!(err, Error::Cancelled { .. })
}

fn check_config(config: &MasterConfig) -> Result<()> {
    if config.concurrency == 0 || config.task_attempts == 0 {
        return Err(Error::invalid(
            "master config",
            "concurrency and task_attempts must be at least 1",
        ));
    }
    config.retry.validate()?;
    job::check_prefix(&config.jobs_prefix)
}

fn recorded_upload(record: &JobRecord) -> Result<&UploadId> {
    record.upload_id.as_ref().ok_or_else(|| {
        Error::invalid(
            "job record",
            format!("job {} has no multipart upload", record.job_id),
        )
    })
}

/// Runs the tasks not in `skip`, then completes from the record.
async fn execute<M, I>(
    at: &JobRef,
    record: &JobRecord,
    store: &M,
    invoker: &I,
    config: &MasterConfig,
    skip: &BTreeSet<u32>,
    started: Instant,
) -> Result<JobReport>
where
    M: MultipartStore + ObjectStore,
    I: Invoker,
{
    let tasks = record
        .plan
        .tasks
        .iter()
        .filter(|t| !skip.contains(&t.index))
        .map(|t| record.task(t.index))
        .collect::<Result<Vec<_>>>()?;
    let retries = match run_tasks(at, record, tasks, store, invoker, config).await {
        Ok(retries) => retries,
        Err(err) => return Err(fail(at, record, store, config, err).await),
    };
    let stats = RunStats {
        started,
        retries,
        resumed: skip.clone(),
    };
    finish(at, record, store, config, stats).await
}

/// Ends a job that failed with `err`: keeps it resumable when the configuration and the error
/// allow, and otherwise aborts the upload and removes the record. Returns `err`.
async fn fail<M>(
    at: &JobRef,
    record: &JobRecord,
    store: &M,
    config: &MasterConfig,
    err: Error,
) -> Error
where
    M: MultipartStore + ObjectStore,
{
    if config.resumable && leaves_resumable(&err) {
        tracing::warn!(
            job = %record.job_id, record = %at, error = %chain(&err),
            "job stopped; its upload and record are kept for a resume"
        );
        return err;
    }
    discard(at, record, store, err).await
}

/// Aborts the job's upload and removes its record after `err`; returns `err`.
async fn discard<M>(at: &JobRef, record: &JobRecord, store: &M, err: Error) -> Error
where
    M: MultipartStore + ObjectStore,
{
    let err = match &record.upload_id {
        Some(id) => abort(store, &record.destination, id, err).await,
        None => err,
    };
    remove_record(at, store).await;
    err
}

/// Removes a record whose job is over; a failure is logged (the record then shows in `gzship
/// jobs`, where `gzship abort` removes it).
async fn remove_record<M: ObjectStore>(at: &JobRef, store: &M) {
    if let Err(e) = at.remove(store).await {
        tracing::warn!(
            record = %at, error = %chain(&e),
            "could not remove the job record; `gzship abort {at}` removes it"
        );
    }
}

/// Aborts the uploads open at the job's destination that no other record claims: the job
/// stopped after creating its upload and before recording its id.
async fn abort_unrecorded<M>(at: &JobRef, record: &JobRecord, store: &M) -> Result<()>
where
    M: MultipartStore + ObjectStore,
{
    let dest = &record.destination;
    let claimed: BTreeSet<String> = job::list_jobs(store, &at.bucket, &at.prefix)
        .await?
        .into_iter()
        .filter_map(|j| Some(j.record.upload_id?.as_str().to_owned()))
        .collect();
    for open in store.list_uploads(&dest.bucket, &dest.key).await? {
        if open.key == dest.key && !claimed.contains(open.upload_id.as_str()) {
            tracing::warn!(upload_id = %open.upload_id, "aborting an upload no record claims");
            store.abort_upload(dest, &open.upload_id).await?;
        }
    }
    Ok(())
}

/// The error for a resume whose upload is gone; removes the record, which nothing can
/// continue.
async fn upload_gone<M>(at: &JobRef, record: &JobRecord, store: &M, upload_id: &UploadId) -> Error
where
    M: MultipartStore + ObjectStore,
{
    let dest = &record.destination;
    let completed = match store.head_object(dest).await {
        Ok(Some((_, meta))) => {
            let m = &meta.metadata;
            m.get("gzship-source-size") == Some(&record.source_stat.size.to_string())
                && m.get("gzship-source-mtime").cloned()
                    == record.source_stat.mtime.map(|t| t.to_string())
        }
        _ => false,
    };
    remove_record(at, store).await;
    let what = if completed {
        format!(
            "the job had completed: {dest} holds an object of this source; its leftover \
             record was removed"
        )
    } else {
        "it was aborted, or removed by the bucket's lifecycle rule; the record was removed: \
         run the job again"
            .to_owned()
    };
    Error::invalid(
        "job",
        format!(
            "job {}: upload {upload_id} of {dest} no longer exists: {what}",
            record.job_id
        ),
    )
}

/// The most bytes of the `gzship-source` metadata value: S3 allows 2 KB of user metadata in
/// all (keys and values), and gzship's other entries take about 120 bytes.
const MAX_SOURCE_META: usize = 1024;

/// The source URL as the `gzship-source` metadata value: the URL itself (ASCII: its path and
/// user are percent-encoded), or, when longer than [`MAX_SOURCE_META`], its beginning, `...`
/// and the first 16 hex digits of its SHA-256, so distinct long paths stay distinct.
fn source_meta_value(source: &SourceUrl) -> String {
    let url = source.to_string();
    if url.len() <= MAX_SOURCE_META {
        return url;
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(url.as_bytes()));
    let suffix = format!("...sha256:{}", &digest[..16]);
    let keep = crate::types::prefix_within(&url, MAX_SOURCE_META - suffix.len());
    format!("{keep}{suffix}")
}

fn object_meta(source: &SourceUrl, level: Level, stat: &SourceStat) -> ObjectMeta {
    let mut metadata = BTreeMap::new();
    metadata.insert("gzship-source".into(), source_meta_value(source));
    metadata.insert("gzship-source-size".into(), stat.size.to_string());
    // Left out where the server sends no mtime, rather than a made-up 0 (1970).
    if let Some(mtime) = stat.mtime {
        metadata.insert("gzship-source-mtime".into(), mtime.to_string());
    }
    metadata.insert("gzship-level".into(), level.to_string());
    metadata.insert("gzship-version".into(), env!("CARGO_PKG_VERSION").into());
    ObjectMeta {
        content_type: CONTENT_TYPE.into(),
        metadata,
    }
}

/// Fans the tasks out with bounded concurrency, a pause between starts and retries of
/// retryable failures, recording each task's report as it arrives; the first permanent failure
/// stops the rest. Returns the number of retries.
async fn run_tasks<M, I>(
    at: &JobRef,
    record: &JobRecord,
    tasks: Vec<Task>,
    store: &M,
    invoker: &I,
    config: &MasterConfig,
) -> Result<u32>
where
    M: MultipartStore + ObjectStore,
    I: Invoker,
{
    let job_id = record.job_id.as_str();
    let mut retries = 0u32;
    let mut running = FuturesUnordered::new();
    let mut next = 0usize;
    let mut last_start: Option<Instant> = None;

    loop {
        let can_start = running.len() < config.concurrency && next < tasks.len();
        let wait = last_start.map_or(Duration::ZERO, |at| {
            config.start_interval.saturating_sub(at.elapsed())
        });
        let done = if can_start && wait.is_zero() {
            last_start = Some(Instant::now());
            running.push(attempt(
                invoker,
                store,
                at,
                tasks[next].clone(),
                1,
                Duration::ZERO,
            ));
            next += 1;
            continue;
        } else if can_start {
            // Collect results while waiting to start the next task.
            tokio::select! {
                () = config.cancel.cancelled() => None,
                _ = tokio::time::sleep(wait) => continue,
                Some(done) = running.next() => Some(done),
            }
        } else {
            tokio::select! {
                () = config.cancel.cancelled() => None,
                done = running.next() => match done {
                    Some(done) => Some(done),
                    None => break,
                },
            }
        };
        let Some((task, number, result)) = done else {
            tracing::warn!(job = job_id, "job cancelled; stopping the tasks");
            let err = Error::Cancelled {
                reason: if config.resumable {
                    "the job was stopped before it finished".into()
                } else {
                    "the job was stopped before it finished (interrupted, or the master's \
                     time limit was near); the upload was aborted"
                        .into()
                },
            };
            return Err(stop_tasks(store, record, running, config, err).await);
        };
        match result {
            Ok(()) => {}
            Err(err) if err.is_retryable() && number < config.task_attempts => {
                retries += 1;
                let delay = config.retry.delay(number);
                tracing::warn!(
                    task = task.index, attempt = number, retry_in = ?delay, error = %chain(&err),
                    "task failed; retrying"
                );
                running.push(attempt(invoker, store, at, task, number + 1, delay));
            }
            Err(err) => {
                tracing::error!(
                    task = task.index, error = %chain(&err),
                    "task failed; stopping the other tasks"
                );
                return Err(stop_tasks(store, record, running, config, err).await);
            }
        }
    }
    Ok(retries)
}

/// Stops a failing (or cancelled) job's tasks; returns `err`. A job left resumable just drops
/// them (in-process workers stop; their parts are uploaded again on resume). Otherwise: remote
/// workers (Lambda) keep running when their invocation is dropped, so abort now, so that their
/// next UploadPart fails instead of adding parts, and let them end (bounded) before the
/// caller's final abort, so that no part uploaded during the first abort survives it.
/// In-process workers fail at their next upload too, and are dropped with `running` after the
/// drain.
async fn stop_tasks<M: MultipartStore, F: Future<Output = Attempt>>(
    store: &M,
    record: &JobRecord,
    mut running: FuturesUnordered<F>,
    config: &MasterConfig,
    err: Error,
) -> Error {
    if config.resumable && leaves_resumable(&err) {
        return err;
    }
    let Some(upload_id) = &record.upload_id else {
        return err;
    };
    if let Err(e) = store.abort_upload(&record.destination, upload_id).await {
        tracing::warn!(error = %chain(&e), "first abort failed; retrying after the tasks stop");
    }
    let drain = async { while running.next().await.is_some() {} };
    if tokio::time::timeout(config.drain_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?config.drain_timeout,
            "tasks still running after the abort; they fail at their next upload"
        );
    }
    err
}

type Attempt = (Task, u32, Result<()>);

/// One attempt at a task, after `delay`: invoke it, then record its report.
async fn attempt<I: Invoker, M: ObjectStore>(
    invoker: &I,
    store: &M,
    at: &JobRef,
    task: Task,
    number: u32,
    delay: Duration,
) -> Attempt {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let result = match invoker.invoke(task.clone()).await {
        Ok(report) => at.record_task(store, &report).await,
        Err(e) => Err(e),
    };
    (task, number, result)
}

/// Checks that the reports cover every byte once, in order, with legal parts inside their
/// windows; returns all parts in order.
fn check_reports(plan: &Plan, reports: &[TaskReport]) -> Result<Vec<UploadedPart>> {
    let mut parts = Vec::new();
    for (planned, report) in plan.tasks.iter().zip(reports) {
        let bad = |reason: String| Error::BadReport {
            index: Some(planned.index),
            reason,
        };
        if report.index != planned.index || report.range != planned.range {
            return Err(bad(format!(
                "it is for task {} range {}, expected range {}",
                report.index, report.range, planned.range
            )));
        }
        if report.bytes_read != planned.range.len() {
            return Err(bad(format!(
                "it read {} bytes of a {}-byte range",
                report.bytes_read,
                planned.range.len()
            )));
        }
        if report.parts.is_empty() {
            return Err(bad("it uploaded no part".into()));
        }
        for p in &report.parts {
            if !planned.window.contains(p.number) {
                return Err(bad(format!(
                    "part {} is outside its window {}",
                    p.number, planned.window
                )));
            }
        }
        parts.extend(report.parts.iter().cloned());
    }
    let n = parts.len();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 && parts[i - 1].number >= p.number {
            return Err(Error::BadReport {
                index: None,
                reason: format!("part numbers do not ascend at part {}", p.number),
            });
        }
        if p.size > MAX_PART_SIZE || (i + 1 < n && p.size < MIN_PART_SIZE) {
            return Err(Error::BadReport {
                index: None,
                reason: format!("part {} has an illegal size of {} bytes", p.number, p.size),
            });
        }
    }
    Ok(parts)
}

/// Aborts the upload after `cause`; returns the cause (with the abort's failure logged, since
/// the cause is what the user must see). An upload already aborted (by `run_tasks`) answers
/// `NoSuchUpload`: whether it is really gone is checked by listing, not by reading the error.
async fn abort<M: MultipartStore + ObjectStore>(
    store: &M,
    dest: &ObjectUrl,
    upload_id: &UploadId,
    cause: Error,
) -> Error {
    tracing::error!(error = %chain(&cause), "job failed; aborting the multipart upload");
    if let Err(e) = store.abort_upload(dest, upload_id).await {
        let still_open = match store.list_uploads(&dest.bucket, &dest.key).await {
            Ok(open) => open.iter().any(|u| &u.upload_id == upload_id),
            Err(_) => true,
        };
        if still_open {
            tracing::error!(
                upload_id = %upload_id, error = %chain(&e),
                "abort failed: the upload may stay open until the bucket's lifecycle rule \
                 removes it"
            );
        }
    }
    cause
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_non_ascii_source_paths_fit_s3_metadata() {
        let dir = "d".repeat(200);
        let path = format!("/{}/données é.log", vec![dir.as_str(); 15].join("/"));
        assert!(path.len() > 3000);
        let source: SourceUrl = format!("sftp://user@host{path}").parse().unwrap();
        let stat = SourceStat {
            size: u64::MAX,
            mtime: Some(u64::MAX),
            is_file: true,
        };
        let meta = object_meta(&source, Level::default(), &stat);
        let total: usize = meta.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(total <= 2048, "{total} bytes of user metadata");
        let value = &meta.metadata["gzship-source"];
        assert!(value.is_ascii(), "{value}");
        assert!(value.starts_with("sftp://user@host:22/ddd"), "{value}");
        assert!(value.contains("...sha256:"), "{value}");

        let other: SourceUrl = format!("sftp://user@host{path}x").parse().unwrap();
        assert_ne!(source_meta_value(&other), *value);
        let short: SourceUrl = "sftp://user@host/données é.log".parse().unwrap();
        let value = source_meta_value(&short);
        assert!(value.is_ascii() && !value.contains("sha256"), "{value}");
    }
}
