//! The master handler: an event in, jobs run through [`master::run`] with workers invoked by an
//! [`Invoker`], the job report (or an SQS partial batch response) out.
//!
//! SQS batches: each message is one job, run one after the other. A message whose job fails
//! for good (a `Fatal.*` error: it cannot be parsed, its path is not allowed, its file is
//! gone...) is sent at once to the dead-letter queue (`GZSHIP_DEAD_LETTER_QUEUE`) with the
//! error and acknowledged, since another delivery would fail the same way. A message whose job
//! may succeed on another attempt (or whose dead letter could not be sent) is returned in
//! `batchItemFailures`, so SQS redelivers only that message and, after the queue's
//! `maxReceiveCount`, moves it to the dead-letter queue itself. The
//! template's event source mapping sets `ReportBatchItemFailures` and a batch size of 1, since
//! one job may take most of the master's 15 minutes.
//!
//! Long jobs: a job whose schedule (the one duration model) does not fit the master's timeout
//! is started ([`master::start`]: recorded, upload created, tasks sized to the worker's
//! timeout) and handed to the state machine ([`StateMachine`]); the master returns the
//! execution's ARN and the record's URL. The state machine calls the master back to complete
//! the job (`{"complete": ...}`) and, for a task that failed for good, to end the job
//! (`{"failed": ...}`: abort it on a fatal error, else keep it for a redrive of the execution or
//! `{"resume": URL}`, which runs the tasks without a confirmed report in a new execution).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gzship_core::duration::{DurationModel, Schedule, WorkerSpeed};
use gzship_core::gzip::Level;
use gzship_core::invoke::Invoker;
use gzship_core::job::JobRef;
use gzship_core::master::{self, CancellationToken, MasterConfig, RunStats};
use gzship_core::plan::{self, Plan, Tuning};
use gzship_core::source::{ByteStream, DirEntry, Source, SourceStat};
use gzship_core::store::{MultipartStore, ObjectStore};
use gzship_core::wire::{JobReport, JobRequest};
use gzship_core::{ByteRange, Error, ObjectUrl, Result};
use serde::Serialize;
use serde_json::Value;

use crate::config::MasterEnv;
use crate::credentials::Credentials;
use crate::error::HandlerError;
use crate::event::{EventKind, FailedStep, ParseContext, ScanRequest, Trigger, parse_event};
use crate::queue::{ArrivalQueue, DeadLetterQueue};
use crate::statemachine::{ExecutionInput, StateMachine, execution_name};
use crate::worker::{is_fatal_type, job_ref, sftp_source};

/// What the master returns.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum MasterResponse {
    /// The report of the one job.
    Job(JobReport),
    /// For SQS: the messages that failed (an empty list acknowledges the whole batch).
    Batch(SqsBatchResponse),
    /// A job (or a resume) handed to the state machine.
    Started(StartedJob),
    /// The failure step's outcome.
    Ended(EndedJob),
    /// What a scan sent to the arrival queue.
    Scanned(ScanReport),
}

/// What a scan did: the files it sent to the arrival queue, one message each, and the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// The scanned glob.
    pub source: String,
    /// Entries whose name matched.
    pub matched: usize,
    /// The destinations of the files enqueued, one message each.
    pub enqueued: Vec<String>,
    /// Matching files not enqueued, and why (not stable yet, shipped, claimed by another scan,
    /// a directory, unreadable).
    pub skipped: Vec<gzship_core::scan::Skipped>,
    /// New files past `GZSHIP_SCAN_FILES`, left for the next scan.
    pub left: usize,
}

/// A job handed to the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartedJob {
    /// The job's id.
    pub job_id: String,
    /// Its record: `{"resume": record}` continues it, `gzship abort record` gives it up.
    pub record: String,
    /// The execution running its tasks.
    pub execution_arn: String,
    /// Tasks the execution runs.
    pub tasks: u32,
    /// Tasks a previous run had done (a resume), skipped.
    pub resumed_tasks: u32,
}

/// How the failure step ended a job; the state machine fails with `error` and `cause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndedJob {
    /// The error that ended the job: a task's recorded fatal error, or the one caught.
    pub error: String,
    /// What happened, and for a job kept, how to resume or abort it.
    pub cause: String,
    /// Whether the job was aborted (upload aborted, record removed).
    pub aborted: bool,
    /// The record of a job kept for a resume.
    pub record: Option<String>,
}

/// Lambda's partial batch response for SQS.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct SqsBatchResponse {
    /// The failed messages.
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// One failed SQS message.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct BatchItemFailure {
    /// The message's `messageId`.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// The master's dependencies: the clients are built once per execution environment, the
/// cancellation token once per invocation.
#[derive(Debug)]
pub struct MasterDeps<'a, M, I> {
    /// The SSH credential.
    pub credentials: &'a Credentials,
    /// Where objects go.
    pub store: &'a M,
    /// How tasks run (the Lambda invoker in AWS).
    pub invoker: &'a I,
    /// Cancels this invocation's job (see [`cancel_delay`]): its tasks stop and its upload is
    /// aborted.
    pub cancel: CancellationToken,
    /// The state machine for jobs longer than the master's timeout (`GZSHIP_STATE_MACHINE`);
    /// `None`: they are refused.
    pub state_machine: Option<&'a StateMachine>,
    /// Where a scan sends each new file's job (`GZSHIP_ARRIVAL_QUEUE`); `None`: scans are
    /// refused.
    pub arrival_queue: Option<&'a ArrivalQueue>,
    /// Where a queued job's message goes when the job fails for good; `None`: SQS redelivers
    /// it until the queue's `maxReceiveCount`.
    pub dead_letter_queue: Option<&'a DeadLetterQueue>,
}

/// Time to keep, before the master function's deadline, for cancelling a job that is running
/// late: the first abort, the drain of the workers (`drain_timeout`), the final abort and the
/// answer.
pub fn cancel_margin(drain_timeout: Duration) -> Duration {
    drain_timeout + Duration::from_secs(15)
}

/// How long from `now` until a job must be cancelled so that its upload is aborted before the
/// function is killed at `deadline_ms` (milliseconds since the epoch, as the runtime gives it);
/// `None` when the deadline is not usable (in the past: `cargo lambda watch` gives 1970).
pub fn cancel_delay(deadline_ms: u64, now: SystemTime, margin: Duration) -> Option<Duration> {
    let deadline = UNIX_EPOCH + Duration::from_millis(deadline_ms);
    let left = deadline.duration_since(now).ok()?;
    Some(left.saturating_sub(margin))
}

/// Handles one master event. `request_id` names the job in logs; `now` is the time used when
/// the event carries none.
pub async fn handle_event<M: MultipartStore + ObjectStore, I: Invoker>(
    event: Value,
    request_id: &str,
    now: SystemTime,
    env: &MasterEnv,
    deps: &MasterDeps<'_, M, I>,
) -> Result<MasterResponse, HandlerError> {
    let ctx = ParseContext {
        template: env.template.as_ref(),
        policy: &env.master.policy,
        now,
    };
    match parse_event(&event, &ctx)? {
        Trigger::Job { kind, job } => run_job(&job, kind, request_id, env, deps).await,
        Trigger::Resume(record) => resume_job(&record, env, deps).await,
        Trigger::Complete(record) => complete_job(&record, env, deps).await,
        Trigger::Failed(step) => end_failed_job(&step, env, deps).await,
        Trigger::Scan(request) => scan_dir(&request, now, env, deps).await,
        Trigger::Sqs(items) => {
            let mut response = SqsBatchResponse::default();
            for item in items {
                let outcome = match item.job {
                    Ok((kind, job)) => {
                        let id = format!("{request_id}-{}", item.message_id);
                        let ran = run_job(&job, kind, &id, env, deps).await.map(|_| ());
                        // A scan's claim on the file ends with its job; a job that failed
                        // keeps it until it expires (GZSHIP_SCAN_CLAIM_EXPIRY), so that the
                        // next scans do not enqueue the failing file again at once.
                        if ran.is_ok() {
                            release_scan_claim(&job, env, deps).await;
                        }
                        ran
                    }
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = outcome
                    && !dead_letter(&item.message_id, &item.body, &e, deps).await
                {
                    tracing::error!(
                        message_id = %item.message_id, error_type = %e.error_type(),
                        error = %gzship_core::error::chain(&e),
                        "sqs message failed; reporting it as a batch item failure, to be redelivered"
                    );
                    response.batch_item_failures.push(BatchItemFailure {
                        item_identifier: item.message_id,
                    });
                }
            }
            Ok(MasterResponse::Batch(response))
        }
    }
}

/// Sends a queued message whose job failed for good (`error` is fatal) to the dead-letter
/// queue; true if it is there (the batch then acknowledges it), false if it must be redelivered
/// instead: a retryable error, no dead-letter queue, or a failed send (logged).
async fn dead_letter<M: MultipartStore + ObjectStore, I: Invoker>(
    message_id: &str,
    body: &str,
    error: &HandlerError,
    deps: &MasterDeps<'_, M, I>,
) -> bool {
    let Some(queue) = deps.dead_letter_queue.filter(|_| !error.is_retryable()) else {
        return false;
    };
    match queue.send(message_id, body, error).await {
        Ok(dead_letter_id) => {
            tracing::error!(
                message_id, dead_letter_id, queue = queue.url(), error_type = %error.error_type(),
                error = %gzship_core::error::chain(error),
                "sqs message failed for good; sent to the dead-letter queue, not redelivered"
            );
            true
        }
        Err(e) => {
            tracing::warn!(
                message_id, error = %gzship_core::error::chain(&e),
                "could not send the failed message to the dead-letter queue; SQS redelivers it"
            );
            false
        }
    }
}

/// Removes a scan's claim on the file of `job`, if any, logging a failure (the claim then
/// expires).
async fn release_scan_claim<M: MultipartStore + ObjectStore, I: Invoker>(
    job: &JobRequest,
    env: &MasterEnv,
    deps: &MasterDeps<'_, M, I>,
) {
    let released =
        gzship_core::scan::release_file(deps.store, &job.destination, &env.master.jobs_prefix)
            .await;
    if let Err(e) = released {
        tracing::warn!(
            destination = %job.destination, error = %gzship_core::error::chain(&e),
            "could not remove the scan's claim on the file; it expires"
        );
    }
}

/// `{"scan": ...}`: lists the directory, picks the new, complete files (the CLI's rules:
/// [`gzship_core::scan`]), claims each (a conditional write, so that overlapping scans never
/// enqueue one file twice) and sends its job to the arrival queue, at most `GZSHIP_SCAN_FILES`
/// a scan.
async fn scan_dir<M: MultipartStore + ObjectStore, I: Invoker>(
    request: &ScanRequest,
    now: SystemTime,
    env: &MasterEnv,
    deps: &MasterDeps<'_, M, I>,
) -> Result<MasterResponse, HandlerError> {
    let destinations = request.validate(&env.master.policy)?;
    let queue = deps.arrival_queue.ok_or_else(|| {
        Error::invalid(
            "scan",
            "the master has no arrival queue (GZSHIP_ARRIVAL_QUEUE) to send the files' jobs to",
        )
    })?;
    let rules = gzship_core::scan::ScanRules {
        stable_for: request
            .stable_for_secs
            .map_or(env.scan.stable_for, Duration::from_secs),
        ..env.scan
    };
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let source = sftp_source(&request.source, &env.ssh, deps.credentials).await?;
    let outcome = gzship_core::scan::scan(
        &source,
        deps.store,
        &request.source,
        &destinations,
        &rules,
        &env.master.policy,
        now,
    )
    .await;
    // The listing's and probes' connections are not needed past this handler.
    source.close_idle().await;
    let outcome = outcome?;
    let mut report = ScanReport {
        source: request.source.to_string(),
        matched: outcome.matched,
        enqueued: Vec::new(),
        skipped: outcome.skipped,
        left: outcome.left,
    };
    let prefix = &env.master.jobs_prefix;
    for file in outcome.picked {
        let claimed =
            gzship_core::scan::claim_file(deps.store, &file, prefix, env.scan_claim_expiry, now)
                .await?;
        if !claimed {
            report.skipped.push(gzship_core::scan::Skipped {
                name: file.name,
                reason: "enqueued by another scan".into(),
                warn: false,
            });
            continue;
        }
        let job = JobRequest {
            source: file.source.clone(),
            destination: file.destination.clone(),
            level: Default::default(),
            tuning: Tuning::default(),
        };
        if let Err(e) = queue.send(&job).await {
            // Not enqueued: the next scan may try it again.
            release_scan_claim(&job, env, deps).await;
            return Err(e);
        }
        tracing::info!(source = %job.source, destination = %job.destination, "file enqueued");
        report.enqueued.push(job.destination.to_string());
    }
    for s in report.skipped.iter().filter(|s| s.warn) {
        tracing::warn!(file = %s.name, reason = %s.reason, "skipped");
    }
    Ok(MasterResponse::Scanned(report))
}

/// Runs one job: checks the policy, stats the source once; a job that fits the master's
/// timeout runs with [`master::run`], a longer one is handed to the state machine (or, without
/// one, refused with what to change).
pub async fn run_job<M: MultipartStore + ObjectStore, I: Invoker>(
    job: &JobRequest,
    kind: EventKind,
    request_id: &str,
    env: &MasterEnv,
    deps: &MasterDeps<'_, M, I>,
) -> Result<MasterResponse, HandlerError> {
    env.master.policy.check_source(&job.source)?;
    env.master.policy.check_destination(&job.destination)?;
    job.tuning.validate()?;
    let job_id = gzship_core::job::new_id(&job.destination);
    tracing::info!(
        job = %job_id, request_id, trigger = kind.name(), source = %job.source,
        destination = %job.destination, "job received"
    );
    let source = sftp_source(&job.source, &env.ssh, deps.credentials).await?;
    let stat = source.stat(&job.source.path).await?;
    // The workers read the file on connections of their own.
    source.close_idle().await;
    let source = StatOnce {
        inner: &source,
        path: &job.source.path,
        stat,
    };
    let fits = |size| {
        Ok::<_, Error>(
            master_schedule(size, job.level, &job.tuning, env)?
                .1
                .fits_master(env.master_timeout),
        )
    };
    if stat.is_file && !fits(stat.size)? {
        match deps.state_machine {
            Some(machine) => return hand_off(job, &job_id, &source, machine, env, deps).await,
            // Refused, with what to change.
            None => check_duration(stat.size, job.level, &job.tuning, env)?,
        }
    }
    let config = MasterConfig {
        cancel: deps.cancel.clone(),
        ..env.master.clone()
    };
    let report = master::run(
        job,
        &job_id,
        &source,
        deps.store,
        deps.invoker,
        &config,
        None,
    )
    .await?;
    Ok(MasterResponse::Job(report))
}

/// Starts a job too long for the master and hands it to the state machine: records it and
/// creates its upload ([`master::start`], tasks sized to the worker's timeout), then starts an
/// execution over all its tasks. If the execution cannot start, the job is aborted.
async fn hand_off<S: Source, M: MultipartStore + ObjectStore, I: Invoker>(
    job: &JobRequest,
    job_id: &str,
    source: &S,
    machine: &StateMachine,
    env: &MasterEnv,
    deps: &MasterDeps<'_, M, I>,
) -> Result<MasterResponse, HandlerError> {
    let config = MasterConfig {
        cancel: deps.cancel.clone(),
        ..env.master.clone()
    };
    let (at, record) = master::start(
        job,
        job_id,
        source,
        deps.store,
        Some(env.worker_timeout),
        &config,
    )
    .await?;
    let tasks: Vec<u32> = record.plan.tasks.iter().map(|t| t.index).collect();
    match start_execution(&at, tasks, &execution_name(job_id, ""), machine).await {
        Ok(started) => Ok(MasterResponse::Started(started)),
        Err(e) => {
            if let Err(a) = master::abort_job(&at, deps.store).await {
                tracing::error!(
                    record = %at, error = %gzship_core::error::chain(&a),
                    "could not abort the job the state machine did not start; `gzship abort` \
                     ends it"
                );
            }
            Err(e)
        }
    }
}

async fn start_execution(
    at: &JobRef,
    tasks: Vec<u32>,
    name: &str,
    machine: &StateMachine,
) -> Result<StartedJob, HandlerError> {
    let count = tasks.len() as u32;
    let input = ExecutionInput {
        record: at.url(),
        tasks,
    };
    let execution_arn = machine.start(name, &input).await?;
    tracing::info!(
        job = %at.id, record = %at, execution = %execution_arn, tasks = count,
        "job handed to the state machine"
    );
    Ok(StartedJob {
        job_id: at.id.clone(),
        record: at.url().to_string(),
        execution_arn,
        tasks: count,
        resumed_tasks: 0,
    })
}

/// `{"resume": URL}`: checks that the source is unchanged (a changed one aborts the job),
/// confirms the recorded reports with ListParts, and starts an execution over the tasks
/// without one.
async fn resume_job<M: MultipartStore + ObjectStore, I: Invoker>(
    url: &ObjectUrl,
    env: &MasterEnv,
    deps: &MasterDeps<'_, M, I>,
) -> Result<MasterResponse, HandlerError> {
    let at = job_ref(url, &env.master.jobs_prefix)?;
    let machine = deps.state_machine.ok_or_else(|| {
        Error::invalid(
            "resume",
            format!(
                "the master has no state machine (GZSHIP_STATE_MACHINE) to run the remaining \
                 tasks on: resume {at} with `gzship resume {at}`"
            ),
        )
    })?;
    let recorded = at.read_existing(deps.store).await?;
    let source = sftp_source(&recorded.source, &env.ssh, deps.credentials).await?;
    let prepared = master::prepare_resume(&at, recorded, &source, deps.store, &env.master).await;
    source.close_idle().await;
    let (record, done) = prepared?;
    let remaining: Vec<u32> = record
        .plan
        .tasks
        .iter()
        .map(|t| t.index)
        .filter(|i| !done.contains(i))
        .collect();
    let suffix = format!("-r{}", unix_millis());
    let mut started =
        start_execution(&at, remaining, &execution_name(&at.id, &suffix), machine).await?;
    started.resumed_tasks = done.len() as u32;
    Ok(MasterResponse::Started(started))
}

/// The completion step: completes the job from the task reports recorded with it. A failure
/// that retrying can fix keeps the job (the failure step then leaves it resumable); any other
/// aborts it.
async fn complete_job<M: MultipartStore + ObjectStore, I: Invoker>(
    url: &ObjectUrl,
    env: &MasterEnv,
    deps: &MasterDeps<'_, M, I>,
) -> Result<MasterResponse, HandlerError> {
    let at = job_ref(url, &env.master.jobs_prefix)?;
    let record = at.read_existing(deps.store).await?;
    env.master.policy.check_destination(&record.destination)?;
    let config = MasterConfig {
        resumable: true,
        ..env.master.clone()
    };
    let stats = RunStats {
        started: Instant::now()
            .checked_sub(record.age())
            .unwrap_or_else(Instant::now),
        retries: 0,
        resumed: BTreeSet::new(),
    };
    let report = master::finish(&at, &record, deps.store, &config, stats).await?;
    Ok(MasterResponse::Job(report))
}

/// The failure step, which the state machine runs in the item of a task that failed for good:
/// aborts the job when a task recorded a fatal error or the task failed fatally; otherwise
/// keeps it (its upload and record) for a resume or a redrive. Answers how it ended, which the
/// item fails with. Idempotent: the failure steps of several tasks may run at once.
async fn end_failed_job<M: MultipartStore + ObjectStore, I: Invoker>(
    step: &FailedStep,
    env: &MasterEnv,
    deps: &MasterDeps<'_, M, I>,
) -> Result<MasterResponse, HandlerError> {
    let at = job_ref(&step.record, &env.master.jobs_prefix)?;
    let caught = &step.error;
    let caught_cause = caught.cause.clone().unwrap_or_default();
    if at.read(deps.store).await?.is_none() {
        return Ok(MasterResponse::Ended(EndedJob {
            error: caught.error.clone(),
            cause: format!(
                "{caught_cause}; job {at} has no record left: it was aborted (or completed)"
            ),
            aborted: true,
            record: None,
        }));
    }
    let fatal = at.recorded_errors(deps.store).await?;
    let (error, cause) = match fatal.first() {
        Some(task) => (
            task.error_type.clone(),
            format!("task {} failed: {}", task.index, task.message),
        ),
        None => (caught.error.clone(), caught_cause),
    };
    if !fatal.is_empty() || is_fatal_type(&caught.error) {
        // The failure steps of other tasks may abort it at the same time.
        if let Err(e) = master::abort_job(&at, deps.store).await
            && at.read(deps.store).await?.is_some()
        {
            return Err(e.into());
        }
        tracing::error!(job = %at.id, error = %error, cause = %cause, "job failed; aborted");
        return Ok(MasterResponse::Ended(EndedJob {
            error,
            cause: format!("{cause}; the job was aborted: its upload and record are removed"),
            aborted: true,
            record: None,
        }));
    }
    tracing::warn!(record = %at, error = %error, "job failed; kept for a resume");
    Ok(MasterResponse::Ended(EndedJob {
        error,
        cause: format!(
            "{cause}; the job is kept for a resume: invoke the master with \
             {{\"resume\": \"{at}\"}} or redrive the execution (both re-run only the tasks \
             without a report), or give it up with `gzship abort {at}`"
        ),
        aborted: false,
        record: Some(at.url().to_string()),
    }))
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
}

/// The plan of a job as the master would run it (tasks sized to the worker's timeout) and its
/// schedule by the one duration model ([`gzship_core::duration`]).
pub fn master_schedule(
    size: u64,
    level: Level,
    tuning: &Tuning,
    env: &MasterEnv,
) -> Result<(Plan, Schedule)> {
    schedule_with(&env.master.duration_model(level), size, tuning, env)
}

/// [`master_schedule`] by `model`.
fn schedule_with(
    model: &DurationModel,
    size: u64,
    tuning: &Tuning,
    env: &MasterEnv,
) -> Result<(Plan, Schedule)> {
    let mut tuning = tuning.clone();
    model.cap_tasks(&mut tuning, env.worker_timeout);
    let plan = plan::plan(size, &tuning)?;
    let schedule = model.schedule(&plan);
    Ok((plan, schedule))
}

/// Refuses a job whose tasks cannot all finish inside the master's own timeout, by the one
/// duration model ([`gzship_core::duration`]): tasks sized to the worker's timeout,
/// `concurrency` at once, staggered starts, each at the worker's throughput capped by its
/// share of the source's bandwidth; the schedule must end
/// [`MASTER_MARGIN`](gzship_core::duration::MASTER_MARGIN) before the timeout ([`Schedule::fits_master`]).
/// Says what to change. A master with a state machine runs such a job there instead.
pub fn check_duration(size: u64, level: Level, tuning: &Tuning, env: &MasterEnv) -> Result<()> {
    let model = env.master.duration_model(level);
    let (plan, schedule) = schedule_with(&model, size, tuning, env)?;
    let budget = Schedule::master_budget_secs(env.master_timeout);
    if schedule.fits_master(env.master_timeout) {
        return Ok(());
    }
    let tasks = plan.tasks.len();
    let longest = plan.tasks.iter().map(|t| t.range.len()).max().unwrap_or(0);
    // The least concurrency whose schedule fits, if any does.
    let fits = |concurrency: usize| {
        DurationModel {
            concurrency,
            ..model
        }
        .schedule(&plan)
        .wall_secs
            <= budget
    };
    let advice = if !fits(tasks.max(1)) {
        "lower tuning.task_size (or give more tasks), raise GZSHIP_MASTER_TIMEOUT with the master \
         function's timeout, set GZSHIP_STATE_MACHINE (the template's state machine runs jobs \
         of any length), or ship the file with the gzship CLI, which has no time limit \
         (a slow source, GZSHIP_SOURCE_MB_PER_S, is not helped by more workers)"
            .to_owned()
    } else {
        let (mut low, mut high) = (model.concurrency.max(1), tasks.max(1));
        while low < high {
            let mid = (low + high) / 2;
            if fits(mid) {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        format!(
            "raise GZSHIP_CONCURRENCY to at least {high} (and the worker function's reserved \
             concurrency with it), set GZSHIP_STATE_MACHINE (the template's state machine runs \
             jobs of any length), or ship the file with the gzship CLI, which has no time limit"
        )
    };
    Err(Error::Plan {
        size,
        reason: format!(
            "its {tasks} tasks of up to {longest} bytes take about {:.0} s each at {:.0} MB/s \
             per worker ({}{}); {} at a time the job takes about {:.0} s, more than the \
             {budget:.0} s the master has inside its {} s timeout: {advice}",
            schedule.longest_secs,
            schedule.worker_bytes_per_s / 1e6,
            match env.master.worker_speed {
                WorkerSpeed::Fixed(_) => "GZSHIP_WORKER_MB_PER_S".to_owned(),
                WorkerSpeed::Memory(mib) => format!(
                    "level {} on a worker of {mib:.0} MiB, GZSHIP_WORKER_MEMORY; more memory is \
                     faster",
                    level.get()
                ),
            },
            if env.master.source_mb_per_s.is_some() {
                ", shared with GZSHIP_SOURCE_MB_PER_S"
            } else {
                ""
            },
            model.concurrency,
            schedule.wall_secs,
            env.master_timeout.as_secs()
        ),
    })
}

/// A source whose stat of one path was already taken: the handler stats once to check the
/// job's duration, and [`master::run`] gets the same answer without a second connection.
struct StatOnce<'a, S> {
    inner: &'a S,
    path: &'a str,
    stat: SourceStat,
}

impl<S: Source> Source for StatOnce<'_, S> {
    async fn stat(&self, path: &str) -> Result<SourceStat> {
        if path == self.path {
            Ok(self.stat)
        } else {
            self.inner.stat(path).await
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        self.inner.list(dir).await
    }

    async fn probe(&self, path: &str) -> Result<SourceStat> {
        self.inner.probe(path).await
    }

    async fn read_range(
        &self,
        path: &str,
        range: ByteRange,
        expect: SourceStat,
    ) -> Result<ByteStream> {
        self.inner.read_range(path, range, expect).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use gzship_core::types::{GIB, TIB};

    use super::*;

    fn env() -> MasterEnv {
        let vars = |k: &str| -> Option<String> {
            match k {
                "GZSHIP_ALLOWED_SOURCE_PATHS" => Some("/".into()),
                "GZSHIP_ALLOWED_DESTINATIONS" => Some("s3://bucket".into()),
                "GZSHIP_HOST_KEY" => {
                    Some("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s".into())
                }
                "GZSHIP_IDENTITY" => Some("/dev/null".into()),
                "GZSHIP_WORKER_FUNCTION" => Some("w".into()),
                _ => None,
            }
        };
        MasterEnv::from_lookup(&vars).unwrap()
    }

    #[test]
    fn jobs_that_fit_the_masters_timeout_pass() {
        let env = env();
        check_duration(100 * GIB, Level::default(), &Tuning::default(), &env).unwrap();
        check_duration(0, Level::default(), &Tuning::default(), &env).unwrap();
    }

    #[test]
    fn jobs_too_long_for_the_master_say_what_to_change() {
        let env = env();
        let err = check_duration(TIB, Level::default(), &Tuning::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GZSHIP_CONCURRENCY to at least"), "{err}");
        let mut env = env;
        env.master.concurrency = 64;
        check_duration(TIB, Level::default(), &Tuning::default(), &env).unwrap();
        // One task alone cannot finish: the advice is about task size.
        env.master_timeout = Duration::from_secs(90);
        let tuning = Tuning {
            task_size: 10 * GIB,
            ..Tuning::default()
        };
        let err = check_duration(10 * GIB, Level::default(), &tuning, &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("task_size"), "{err}");
    }

    /// Issue 12: a source that delivers 100 MB/s in all makes 100 GiB take about 18 minutes
    /// whatever the concurrency; the check counts it, and says more workers do not help.
    #[test]
    fn a_slow_source_caps_the_job() {
        let mut env = env();
        check_duration(100 * GIB, Level::default(), &Tuning::default(), &env).unwrap();
        env.master.source_mb_per_s = Some(100.0);
        let err = check_duration(100 * GIB, Level::default(), &Tuning::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GZSHIP_SOURCE_MB_PER_S"), "{err}");
        env.master.concurrency = 100;
        assert!(check_duration(100 * GIB, Level::default(), &Tuning::default(), &env).is_err());
        check_duration(20 * GIB, Level::default(), &Tuning::default(), &env).unwrap();
    }

    /// Issue 12, item 7: with the worker's memory known, the check counts its vCPUs and the
    /// job's level: a job that fits at level 1 may not at level 9, and more memory helps.
    #[test]
    fn the_worker_memory_and_the_level_size_the_check() {
        let mut env = env();
        env.master.worker_speed = WorkerSpeed::Memory(1769.0);
        let level = |n| Level::new(n).unwrap();
        let size = 300 * GIB;
        check_duration(size, level(1), &Tuning::default(), &env).unwrap();
        let err = check_duration(size, level(9), &Tuning::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("level 9 on a worker of 1769 MiB, GZSHIP_WORKER_MEMORY"),
            "{err}"
        );
        env.master.worker_speed = WorkerSpeed::Memory(10_240.0);
        env.master.concurrency = 32;
        check_duration(size, level(9), &Tuning::default(), &env).unwrap();
    }

    #[test]
    fn a_job_is_cancelled_a_margin_before_the_deadline() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let deadline_ms = 1_800_000_900_000; // 900 s from now
        let margin = cancel_margin(Duration::from_secs(30));
        assert_eq!(margin, Duration::from_secs(45));
        assert_eq!(
            cancel_delay(deadline_ms, now, margin),
            Some(Duration::from_secs(855))
        );
        // Closer than the margin: at once.
        assert_eq!(
            cancel_delay(1_800_000_010_000, now, margin),
            Some(Duration::ZERO)
        );
        // cargo lambda watch's 1970 deadline: no cancellation.
        assert_eq!(cancel_delay(0, now, margin), None);
    }
}
