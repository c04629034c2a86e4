//! The master handler: an event in, jobs run through [`master::run`] with workers invoked by an
//! [`Invoker`], the job report (or an SQS partial batch response) out.
//!
//! SQS batches: each message is one job, run one after the other; a message whose job fails
//! (or that cannot be parsed) is returned in `batchItemFailures`, so SQS redelivers only that
//! message and, after the queue's `maxReceiveCount`, moves it to the dead-letter queue. The
//! template's event source mapping sets `ReportBatchItemFailures` and a batch size of 1, since
//! one job may take most of the master's 15 minutes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gzship_core::duration::DurationModel;
use gzship_core::invoke::Invoker;
use gzship_core::master::{self, CancellationToken, MasterConfig};
use gzship_core::plan::{self, Tuning};
use gzship_core::source::{ByteStream, Source, SourceStat};
use gzship_core::store::{MultipartStore, ObjectStore};
use gzship_core::wire::{JobReport, JobRequest};
use gzship_core::{ByteRange, Error, Result};
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
    let job_id = gzship_core::job::new_id(&job.destination);
    tracing::info!(
        job = %job_id, request_id, trigger = kind.name(), source = %job.source,
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



/// Time the master keeps for itself (stat, create, complete, abort) out of its timeout.
const MASTER_MARGIN: Duration = Duration::from_secs(60);

/// Refuses a job whose tasks cannot all finish inside the master's own timeout, by the one
/// duration model ([`gzship_core::duration`]): tasks sized to the worker's timeout,
/// `concurrency` at once, staggered starts, each at the worker's throughput capped by its
/// share of the source's bandwidth; the schedule must end `MASTER_MARGIN` before the timeout.
/// Says what to change.
pub fn check_duration(size: u64, tuning: &Tuning, env: &MasterEnv) -> Result<()> {
    let model = env.master.duration_model();
    let mut tuning = tuning.clone();
    model.cap_tasks(&mut tuning, env.worker_timeout);
    let plan = plan::plan(size, &tuning)?;
    let schedule = model.schedule(&plan);
    let budget = env
        .master_timeout
        .saturating_sub(MASTER_MARGIN)
        .as_secs_f64();
    if schedule.wall_secs <= budget {
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
         function's timeout, or ship the file with the gzship CLI, which has no time limit \
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
             concurrency with it), or ship the file with the gzship CLI, which has no time limit"
        )
    };
    Err(Error::Plan {
        size,
        reason: format!(
            "its {tasks} tasks of up to {longest} bytes take about {:.0} s each at {:.0} MB/s \
             per worker (GZSHIP_WORKER_MB_PER_S{}); {} at a time the job takes about {:.0} s, \
             more than the {budget:.0} s the master has inside its {} s timeout: {advice}",
            schedule.longest_secs,
            schedule.worker_bytes_per_s / 1e6,
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

    /// Issue 12: a source that delivers 100 MB/s in all makes 100 GiB take about 18 minutes
    /// whatever the concurrency; the check counts it, and says more workers do not help.
    #[test]
    fn a_slow_source_caps_the_job() {
        let mut env = env();
        check_duration(100 * GIB, &Tuning::default(), &env).unwrap();
        env.master.source_mb_per_s = Some(100.0);
        let err = check_duration(100 * GIB, &Tuning::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GZSHIP_SOURCE_MB_PER_S"), "{err}");
        env.master.concurrency = 100;
        assert!(check_duration(100 * GIB, &Tuning::default(), &env).is_err());
        check_duration(20 * GIB, &Tuning::default(), &env).unwrap();
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
