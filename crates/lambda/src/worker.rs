//! The worker handler: a task in, its parts uploaded, its report out. A task given as a job
//! record's index (the state machine's items) is read from the record, and its report (or its
//! fatal error) recorded there.

use gzship_core::Error;
use gzship_core::error::chain;
use gzship_core::invoke::wire_error;
use gzship_core::job::{JobRef, TaskError};
use gzship_core::source::sftp::{SftpConfig, SftpSource};
use gzship_core::spool::SpoolBudget;
use gzship_core::store::{MultipartStore, ObjectStore};
use gzship_core::wire::{Task, TaskReport};
use gzship_core::worker;
use serde::Serialize;
use serde_json::Value;

use crate::config::{SshSettings, WorkerEnv};
use crate::credentials::Credentials;
use crate::error::HandlerError;
use crate::event::{RecordedTask, WorkerEvent, parse_worker_event};

/// What the worker returns.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum WorkerResponse {
    /// A task's report, for the master that invoked it.
    Report(TaskReport),
    /// A recorded task's outcome, kept tiny: the state machine discards it, and the report is
    /// in the job record.
    Recorded(RecordedOutcome),
}

/// What a recorded task did (its report is in the job record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedOutcome {
    /// The task's index.
    pub index: u32,
    /// Parts it uploaded.
    pub parts: u32,
    /// Source bytes it read.
    pub bytes_read: u64,
}

/// Runs one task. Before any connection is made, the payload must be a valid [`Task`] or
/// [`RecordedTask`] (unknown fields refused, range inside the file, consistent sizes) and the
/// task's source and destination must be allowed by the worker's own policy: a worker can be
/// invoked directly, not only by the master. `spool` is the process's spool budget:
/// invocations of one process share its /tmp.
pub async fn handle_task<M: MultipartStore + ObjectStore + Clone + 'static>(
    payload: Value,
    env: &WorkerEnv,
    credentials: &Credentials,
    store: &M,
    spool: &SpoolBudget,
) -> Result<WorkerResponse, HandlerError> {
    match parse_worker_event(payload)? {
        WorkerEvent::Task(task) => {
            let report = run_task(&task, env, credentials, store, spool).await?;
            Ok(WorkerResponse::Report(report))
        }
        WorkerEvent::Recorded(recorded) => {
            let outcome = run_recorded(&recorded, env, credentials, store, spool).await?;
            Ok(WorkerResponse::Recorded(outcome))
        }
    }
}

async fn run_task<M: MultipartStore + Clone + 'static>(
    task: &Task,
    env: &WorkerEnv,
    credentials: &Credentials,
    store: &M,
    spool: &SpoolBudget,
) -> Result<TaskReport, HandlerError> {
    task.validate()?;
    env.policy.check_source(&task.source)?;
    env.policy.check_destination(&task.destination)?;
    let source = sftp_source(&task.source, &env.ssh, credentials).await?;
    let report = worker::run(task, &source, store, &env.tuning, spool, None).await;
    // Closed while the handler runs: the sandbox may be frozen right after it returns.
    source.close_idle().await;
    Ok(report?)
}

/// Runs task `index` of the job recorded at `record`, records its report; a fatal failure is
/// recorded too, so that the state machine's failure step aborts the job (a Distributed Map
/// does not pass an item's error on). A retryable one is not: the state machine retries it,
/// and when it gives up the job stays resumable.
async fn run_recorded<M: MultipartStore + ObjectStore + Clone + 'static>(
    recorded: &RecordedTask,
    env: &WorkerEnv,
    credentials: &Credentials,
    store: &M,
    spool: &SpoolBudget,
) -> Result<RecordedOutcome, HandlerError> {
    let at = job_ref(&recorded.record, &env.jobs_prefix)?;
    let record = at.read_existing(store).await?;
    let index = recorded.index;
    let result = async {
        if record.destination.bucket != at.bucket {
            return Err(Error::invalid(
                "job record",
                format!(
                    "{at} is not in the bucket of its destination {}",
                    record.destination
                ),
            )
            .into());
        }
        let task = record.task(index)?;
        let report = Box::pin(run_task(&task, env, credentials, store, spool)).await?;
        at.record_task(store, &report).await?;
        Ok::<_, HandlerError>(RecordedOutcome {
            index,
            parts: report.parts.len() as u32,
            bytes_read: report.bytes_read,
        })
    }
    .await;
    if let Err(e) = &result
        && !e.is_retryable()
    {
        let failed = TaskError {
            index,
            error_type: e.error_type(),
            message: chain(e),
        };
        if let Err(r) = at.record_error(store, &failed).await {
            tracing::warn!(
                record = %at, task = index, error = %chain(&r),
                "could not record the task's error; the failure step will keep the job for a \
                 resume instead of aborting it"
            );
        }
    }
    result
}

/// The job whose record is at `url`, with the function's jobs prefix.
pub fn job_ref(url: &gzship_core::ObjectUrl, prefix: &str) -> Result<JobRef, HandlerError> {
    JobRef::from_url(url, prefix).ok_or_else(|| {
        Error::invalid(
            "job record",
            format!(
                "{url} is not a job record's URL: expected s3://BUCKET/{prefix}JOB-ID \
                 (GZSHIP_JOBS_PREFIX is {prefix:?})"
            ),
        )
        .into()
    })
}

/// Whether `error_type` (a Lambda `errorType`) says retrying cannot help.
pub fn is_fatal_type(error_type: &str) -> bool {
    error_type.starts_with(wire_error::FATAL_PREFIX)
}

/// The SFTP source for `url`, with the function's credential, host key policy and tuning.
pub async fn sftp_source(
    url: &gzship_core::SourceUrl,
    ssh: &SshSettings,
    credentials: &Credentials,
) -> Result<SftpSource, HandlerError> {
    let auth = credentials.get().await?;
    let config =
        SftpConfig::from_url(url, ssh.default_user.as_deref(), auth, ssh.host_key.clone())?
            .with_tuning(ssh.tuning.clone());
    Ok(SftpSource::new(config)?)
}
