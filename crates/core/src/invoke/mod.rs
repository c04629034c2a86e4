//! How the master runs tasks: the [`Invoker`] trait, and where they run:
//! - [`local`]: [`LocalInvoker`](local::LocalInvoker), tasks as in-process workers (the CLI).
//! - `lambda` (feature `lambda`): `LambdaInvoker`, each task one invoke of the worker function,
//!   over `keepalive`'s HTTP client (TCP keepalive, for invokes that idle for minutes).
//! - [`wire_error`]: how a worker's error crosses the Lambda wire, both ways: the worker's
//!   handler encodes it, the Lambda invoker decodes it.

use std::future::Future;
use std::time::Duration;

use crate::error::Result;
use crate::wire::{Task, TaskReport};

#[cfg(feature = "lambda")]
pub mod keepalive;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod local;
pub mod wire_error;

/// Runs tasks somewhere: in this process, or in AWS Lambda.
///
/// Contract:
/// - `invoke` returns the worker's report, or the worker's error with its retryability kept
///   (`Error::is_retryable`), so the master can decide to retry.
/// - A task may be invoked again after a failure; workers are idempotent (same bytes under the
///   same part numbers).
/// - The invoker never completes or aborts the upload: the master does.
pub trait Invoker: Send + Sync {
    /// Runs one task to its report.
    fn invoke(&self, task: Task) -> impl Future<Output = Result<TaskReport>> + Send;

    /// How long one task may run, if the invoker has a limit (Lambda: the worker's timeout).
    fn time_limit(&self) -> Option<Duration> {
        None
    }
}
