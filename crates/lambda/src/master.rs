//! The master handler: an event in, jobs run through [`master::run`] with workers invoked by an
//! [`Invoker`], the job report (or an SQS partial batch response) out.
//!
//! SQS batches: each message is one job, run one after the other; a message whose job fails
//! (or that cannot be parsed) is returned in `batchItemFailures`, so SQS redelivers only that
//! message and, after the queue's `maxReceiveCount`, moves it to the dead-letter queue. The
//! template's event source mapping sets `ReportBatchItemFailures` and a batch size of 1, since
//! one job may take most of the master's 15 minutes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gzship_core::invoke::Invoker;
use gzship_core::master::{self, CancellationToken, MasterConfig};
use gzship_core::plan::{self, Tuning};
use gzship_core::source::{ByteStream, Source, SourceStat};
use gzship_core::store::{MultipartStore, ObjectStore};
use gzship_core::wire::{JobReport, JobRequest};
use gzship_core::{ByteRange, Error, ObjectUrl, Result};
use serde::Serialize;
use serde_json::Value;

use crate::config::MasterEnv;
use crate::credentials::Credentials;
use crate::error::HandlerError;
use crate::event::{EventKind, ParseContext, Trigger, parse_event};
use crate::worker::sftp_source;

/// What the master returns.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum MasterResponse {
    /// The report of the one job.
    Job(JobReport),
    /// For SQS: the messages that failed (an empty list acknowledges the whole batch).
    Batch(SqsBatchResponse),
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
        Trigger::Job { kind, job } => {
            let report = run_job(&job, kind, request_id, env, deps).await?;
            Ok(MasterResponse::Job(report))
        }
        Trigger::Sqs(items) => {
            let mut response = SqsBatchResponse::default();
            for item in items {
                let outcome = match item.job {
                    Ok((kind, job)) => {
                        let id = format!("{request_id}-{}", item.message_id);
                        run_job(&job, kind, &id, env, deps).await.map(|_| ())
                    }
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = outcome {
                    tracing::error!(
                        message_id = %item.message_id, error = %gzship_core::error::chain(&e),
                        "sqs message failed; reporting it as a batch item failure"
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

/// Runs one job: checks the policy, stats the source once, refuses a job that cannot finish
/// inside the master's timeout, then runs [`master::run`].
pub async fn run_job<M: MultipartStore + ObjectStore, I: Invoker>(
    job: &JobRequest,
    kind: EventKind,
    request_id: &str,
    env: &MasterEnv,
    deps: &MasterDeps<'_, M, I>,
) -> Result<JobReport, HandlerError> {
    env.master.policy.check_source(&job.source)?;
    env.master.policy.check_destination(&job.destination)?;
    job.tuning.validate()?;
    let job_id = job_id(&job.destination, request_id);
    tracing::info!(
        job = %job_id, trigger = kind.name(), source = %job.source,
        destination = %job.destination, "job received"
    );
    let source = sftp_source(&job.source, &env.ssh, deps.credentials).await?;
    let stat = source.stat(&job.source.path).await?;
    if stat.is_file {
        check_duration(stat.size, &job.tuning, env)?;
    }
    let source = StatOnce {
        inner: &source,
        path: &job.source.path,
        stat,
    };
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
    Ok(report)
}

/// A job id for logs: the key's file name and the Lambda request id.
fn job_id(dest: &ObjectUrl, request_id: &str) -> String {
    format!("{}-{request_id}", dest.file_name())
}

/// Time the master keeps for itself (stat, create, complete, abort) out of its timeout.
const MASTER_MARGIN: Duration = Duration::from_secs(60);

/// Refuses a job whose tasks cannot all finish inside the master's own timeout: with
/// `concurrency` tasks at a time, each taking its bytes at `worker_mb_per_s`, the rounds of
/// tasks must end `MASTER_MARGIN` before the timeout. Says what to change.
pub fn check_duration(size: u64, tuning: &Tuning, env: &MasterEnv) -> Result<()> {
    let mut tuning = tuning.clone();
    let per_task = gzship_core::master::bytes_within(env.worker_timeout);
    tuning.max_task_size = Some(tuning.max_task_size.unwrap_or(u64::MAX).min(per_task));
    let plan = plan::plan(size, &tuning)?;
    let tasks = plan.tasks.len() as u64;
    let longest = plan.tasks.iter().map(|t| t.range.len()).max().unwrap_or(0);
    let bytes_per_s = env.worker_mb_per_s * 1e6;
    let task_secs = longest as f64 / bytes_per_s;
    let concurrency = env.master.concurrency.max(1) as u64;
    let rounds = tasks.div_ceil(concurrency);
    let starts = env.master.start_interval.as_secs_f64() * tasks as f64;
    let estimate = rounds as f64 * task_secs + starts;
    let budget = env
        .master_timeout
        .saturating_sub(MASTER_MARGIN)
        .as_secs_f64();
    if estimate <= budget {
        return Ok(());
    }
    let advice = if task_secs + starts >= budget {
        "lower tuning.task_size (or give more tasks), or raise GZSHIP_MASTER_TIMEOUT_SECS with \
         the master function's timeout"
            .to_owned()
    } else {
        let per_slot = ((budget - starts) / task_secs).floor().max(1.0) as u64;
        let needed = tasks.div_ceil(per_slot);
        format!(
            "raise GZSHIP_CONCURRENCY to at least {needed} (and the worker function's reserved \
             concurrency with it), or ship the file with the gzship CLI, which has no time limit"
        )
    };
    Err(Error::Plan {
        size,
        reason: format!(
            "its {tasks} tasks of up to {longest} bytes take about {task_secs:.0} s each at an \
             assumed {} MB/s per worker (GZSHIP_WORKER_MB_PER_S); {concurrency} at a time that \
             is about {estimate:.0} s, more than the {budget:.0} s the master has inside its \
             {} s timeout: {advice}",
            env.worker_mb_per_s,
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
                "GZSHIP_SSH_KEY_FILE" => Some("/dev/null".into()),
                "GZSHIP_WORKER_FUNCTION" => Some("w".into()),
                _ => None,
            }
        };
        MasterEnv::from_lookup(&vars).unwrap()
    }

    #[test]
    fn jobs_that_fit_the_masters_timeout_pass() {
        let env = env();
        check_duration(100 * GIB, &Tuning::default(), &env).unwrap();
        check_duration(0, &Tuning::default(), &env).unwrap();
    }

    #[test]
    fn jobs_too_long_for_the_master_say_what_to_change() {
        let env = env();
        let err = check_duration(TIB, &Tuning::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GZSHIP_CONCURRENCY to at least"), "{err}");
        let mut env = env;
        env.master.concurrency = 64;
        check_duration(TIB, &Tuning::default(), &env).unwrap();
        // One task alone cannot finish: the advice is about task size.
        env.master_timeout = Duration::from_secs(90);
        let tuning = Tuning {
            task_size: 10 * GIB,
            ..Tuning::default()
        };
        let err = check_duration(10 * GIB, &tuning, &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("task_size"), "{err}");
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
