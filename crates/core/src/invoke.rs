//! How the master runs tasks: the [`Invoker`] trait and the in-process [`LocalInvoker`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::source::Source;
use crate::spool::SpoolBudget;
use crate::store::MultipartStore;
use crate::wire::{Task, TaskReport};
use crate::worker::{self, Progress, WorkerTuning};

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

/// Runs tasks as in-process workers, all against one source server and one store, sharing
/// one spool budget.
#[derive(Debug, Clone)]
pub struct LocalInvoker<S, M> {
    source: Arc<S>,
    store: M,
    tuning: WorkerTuning,
    /// The tasks of this invoker run at once and spool into one directory: each must see the
    /// others' reservations.
    spool: SpoolBudget,
    progress: Option<Arc<Progress>>,
}

impl<S: Source, M: MultipartStore + Clone + 'static> LocalInvoker<S, M> {
    /// An invoker whose workers read from `source` and upload to `store`, spooling within one
    /// budget of `tuning`'s spool directory ([`WorkerTuning::spool_budget`]). Make one per job.
    pub fn new(source: Arc<S>, store: M, tuning: WorkerTuning) -> Self {
        LocalInvoker {
            source,
            store,
            spool: tuning.spool_budget(),
            tuning,
            progress: None,
        }
    }

    /// Counts the workers' bytes into `progress`.
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }
}

impl<S: Source, M: MultipartStore + Clone + 'static> Invoker for LocalInvoker<S, M> {
    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        let index = task.index;
        let range = task.range;
        worker::run(
            &task,
            self.source.as_ref(),
            &self.store,
            &self.tuning,
            &self.spool,
            self.progress.as_deref(),
        )
        .await
        .map_err(|e| Error::Task {
            index,
            range,
            source: Box::new(e),
        })
    }
}
