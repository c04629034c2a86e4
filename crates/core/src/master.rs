//! The master: stat, plan, create the upload, fan out tasks, check the reports, complete; or
//! abort on any failure, so that nothing is ever left at the key or half-uploaded.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
pub use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::AccessPolicy;
use crate::duration::DurationModel;
use crate::error::{Error, Result, chain};
use crate::gzip;
use crate::invoke::Invoker;
use crate::plan::{self, Plan};
use crate::source::{Source, SourceStat};
use crate::store::{MultipartStore, ObjectMeta, ObjectStore, UploadedPart};
use crate::types::{MAX_PART_SIZE, MIN_PART_SIZE, UploadId};
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
    /// Source bytes a second one worker is assumed to manage (default 50 MB/s: a slow single
    /// core at level 9). With the invoker's time limit it sizes tasks; see [`DurationModel`].
    pub worker_mb_per_s: f64,
    /// What the source server delivers in total, in MB/s, shared by the tasks running;
    /// `None` (default): no cap.
    pub source_mb_per_s: Option<f64>,
    /// Which sources and destinations are allowed.
    pub policy: AccessPolicy,
    /// Cancels the job from outside (the CLI on Ctrl-C, the Lambda master near its deadline):
    /// the tasks stop and the upload is aborted, as when a task fails for good, and the job
    /// ends with [`Error::Cancelled`].
    pub cancel: CancellationToken,
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
            worker_mb_per_s: 50.0,
            source_mb_per_s: None,
            policy: AccessPolicy::default(),
            cancel: CancellationToken::new(),
        }
    }
}

impl MasterConfig {
    /// The duration model of jobs run with this configuration.
    pub fn duration_model(&self) -> DurationModel {
        DurationModel {
            worker_bytes_per_s: self.worker_mb_per_s * 1e6,
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
/// returns `Ok`; on `Err` the multipart upload has been aborted (or was never created).
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
    config.policy.check_source(&request.source)?;
    config.policy.check_destination(&request.destination)?;
    if config.concurrency == 0 || config.task_attempts == 0 {
        return Err(Error::invalid(
            "master config",
            "concurrency and task_attempts must be at least 1",
        ));
    }
    config.retry.validate()?;

    let stat = source.stat(&request.source.path).await?;
    if !stat.is_file {
        return Err(Error::NotAFile {
            path: request.source.path.clone(),
        });
    }
    let mut tuning = request.tuning.clone();
    if let Some(limit) = invoker.time_limit() {
        config.duration_model().cap_tasks(&mut tuning, limit);
    }
    let plan = plan::plan(stat.size, &tuning)?;
    if let Some(p) = progress {
        p.total_bytes.store(stat.size, Ordering::Relaxed);
    }
    tracing::info!(
        job = job_id, source = %request.source, destination = %request.destination,
        size = stat.size, tasks = plan.tasks.len(), part_size = plan.part_size,
        "job planned"
    );

    let meta = object_meta(request, &stat);
    let upload_id = store.create_upload(&request.destination, &meta).await?;
    tracing::info!(job = job_id, upload_id = %upload_id, "multipart upload created");

    let outcome = run_tasks(
        request, job_id, &plan, stat, &upload_id, store, invoker, config,
    )
    .await
    .and_then(|(reports, retries)| {
        let parts = check_reports(&plan, &reports)?;
        Ok((reports, parts, retries))
    });
    let (reports, parts, retries) = match outcome {
        Ok(done) => done,
        Err(err) => return Err(abort(store, request, &upload_id, err).await),
    };
    if let Err(err) = store
        .complete_upload(&request.destination, &upload_id, &parts)
        .await
    {
        return Err(abort(store, request, &upload_id, err).await);
    }

    let crc32 = reports.iter().fold(0u32, |crc, r| {
        gzip::crc32_combine(crc, r.crc32, r.bytes_read)
    });
    // The CRC-32 is known only now, and S3 metadata is fixed at creation: record it as a tag.
    // The object is complete and correct either way, so a refused tag is a warning.
    let tags = BTreeMap::from([(CRC32_TAG.to_owned(), format!("{crc32:08x}"))]);
    if let Err(e) = store.put_tags(&request.destination, &tags).await {
        tracing::warn!(
            error = %chain(&e),
            "could not tag the object with the source's CRC-32 (needs s3:PutObjectTagging)"
        );
    }
    let object_bytes: u64 = parts.iter().map(|p| p.size).sum();
    let seconds = started.elapsed().as_secs_f64();
    let report = JobReport {
        job_id: job_id.to_owned(),
        source: request.source.clone(),
        destination: request.destination.to_string(),
        source_bytes: stat.size,
        object_bytes,
        ratio: if object_bytes == 0 {
            0.0
        } else {
            stat.size as f64 / object_bytes as f64
        },
        parts: parts.len() as u32,
        tasks: plan.tasks.len() as u32,
        part_size: plan.part_size,
        level: request.level,
        crc32,
        seconds,
        mb_per_s: stat.size as f64 / 1e6 / seconds.max(1e-9),
        retries,
    };
    tracing::info!(
        job = job_id,
        object_bytes,
        parts = report.parts,
        ratio = report.ratio,
        seconds,
        mb_per_s = report.mb_per_s,
        "job complete"
    );
    Ok(report)
}

fn object_meta(request: &JobRequest, stat: &SourceStat) -> ObjectMeta {
    let mut metadata = BTreeMap::new();
    metadata.insert("gzship-source".into(), request.source.to_string());
    metadata.insert("gzship-source-size".into(), stat.size.to_string());
    metadata.insert("gzship-source-mtime".into(), stat.mtime.to_string());
    metadata.insert("gzship-level".into(), request.level.to_string());
    metadata.insert("gzship-version".into(), env!("CARGO_PKG_VERSION").into());
    ObjectMeta {
        content_type: CONTENT_TYPE.into(),
        metadata,
    }
}

/// Fans the plan's tasks out with bounded concurrency, a pause between starts and retries of
/// retryable failures; the first permanent failure cancels the rest.
#[allow(clippy::too_many_arguments)]
async fn run_tasks<M: MultipartStore, I: Invoker>(
    request: &JobRequest,
    job_id: &str,
    plan: &Plan,
    stat: SourceStat,
    upload_id: &UploadId,
    store: &M,
    invoker: &I,
    config: &MasterConfig,
) -> Result<(Vec<TaskReport>, u32)> {
    let tasks: Vec<Task> = plan
        .tasks
        .iter()
        .map(|t| {
            Task::new(
                job_id,
                t,
                &request.source,
                stat,
                &request.destination,
                upload_id,
                plan.part_size,
                plan.block_size,
                request.level,
            )
        })
        .collect();
    let mut reports: Vec<Option<TaskReport>> = vec![None; tasks.len()];
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
            running.push(attempt(invoker, tasks[next].clone(), 1, Duration::ZERO));
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
            tracing::warn!(job = job_id, "job cancelled; aborting the upload");
            let err = Error::Cancelled {
                reason: "the job was stopped before it finished (interrupted, or the \
                         master's time limit was near); the upload was aborted"
                    .into(),
            };
            return Err(stop_tasks(store, request, upload_id, running, config, err).await);
        };
        match result {
            Ok(report) => reports[task.index as usize] = Some(report),
            Err(err) if err.is_retryable() && number < config.task_attempts => {
                retries += 1;
                let delay = config.retry.delay(number);
                tracing::warn!(
                    task = task.index, attempt = number, retry_in = ?delay, error = %chain(&err),
                    "task failed; retrying"
                );
                running.push(attempt(invoker, task, number + 1, delay));
            }
            Err(err) => {
                tracing::error!(
                    task = task.index, error = %chain(&err),
                    "task failed; aborting the upload and stopping the other tasks"
                );
                return Err(stop_tasks(store, request, upload_id, running, config, err).await);
            }
        }
    }
    let reports = reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| Error::BadReport {
                index: Some(i as u32),
                reason: "no report arrived".into(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((reports, retries))
}

/// Stops a failing (or cancelled) job's tasks; returns `err`. Remote workers (Lambda) keep
/// running when their invocation is dropped: abort now, so that their next UploadPart fails
/// instead of adding parts, and let them end (bounded) before the caller's final abort, so that
/// no part uploaded during the first abort survives it. In-process workers fail at their next
/// upload too, and are dropped with `running` after the drain.
async fn stop_tasks<M: MultipartStore, F: Future<Output = Attempt>>(
    store: &M,
    request: &JobRequest,
    upload_id: &UploadId,
    mut running: FuturesUnordered<F>,
    config: &MasterConfig,
    err: Error,
) -> Error {
    if let Err(e) = store.abort_upload(&request.destination, upload_id).await {
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

/// `base * 2^(attempt - 1)`, times a random factor in [0.5, 1.5) so retries of many tasks do
/// not arrive together.
type Attempt = (Task, u32, Result<TaskReport>);

async fn attempt<I: Invoker>(invoker: &I, task: Task, number: u32, delay: Duration) -> Attempt {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let result = invoker.invoke(task.clone()).await;
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
    request: &JobRequest,
    upload_id: &UploadId,
    cause: Error,
) -> Error {
    tracing::error!(error = %chain(&cause), "job failed; aborting the multipart upload");
    let dest = &request.destination;
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
