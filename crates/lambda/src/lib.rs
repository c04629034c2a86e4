//! gzship's AWS Lambda functions: the handlers behind the thin `master` and `worker` binaries.
//!
//! Handlers are plain async functions that take their dependencies (configuration, S3 store,
//! credentials, invoker) by reference, so tests call them without a Lambda runtime.
//!
//! Module map:
//! - [`config`]: [`WorkerEnv`](config::WorkerEnv) and [`MasterEnv`](config::MasterEnv), read once
//!   from the environment (every variable documented there).
//! - [`credentials`]: the SSH credential from Secrets Manager (cached per execution
//!   environment) or a key file.
//! - [`worker`]: [`handle_task`](worker::handle_task): validate, check the policy, run the task
//!   (given whole, or read from a job record, where its report is recorded).
//! - [`event`]: the master's event shapes (job, template event, file-arrival notice, EventBridge,
//!   SNS, SQS), recognised and parsed strictly.
//! - [`template`]: job templates with `{date}`, `{time}`, `{name}`, `{path}` placeholders.
//! - [`master`]: [`handle_event`](master::handle_event): parse, check, run jobs (or hand a
//!   long one to the state machine), complete, end or resume recorded jobs, report.
//! - [`statemachine`]: [`StateMachine`](statemachine::StateMachine): the Step Functions state
//!   machine that runs the tasks of jobs longer than the master's timeout.
//! - [`queue`]: [`ArrivalQueue`](queue::ArrivalQueue): the SQS queue a scan sends each new
//!   file's job to.
//! - [`error`]: [`HandlerError`](error::HandlerError) and its Lambda `Diagnostic`, whose
//!   `errorType` (`Retryable.*` / `Fatal.*`) tells the master whether a retry can help.
//! - [`runtime`]: what both binaries share: tracing, the AWS configuration.

pub mod config;
pub mod credentials;
pub mod error;
pub mod event;
pub mod master;
pub mod queue;
pub mod runtime;
pub mod statemachine;
pub mod template;
pub mod worker;
