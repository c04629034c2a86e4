//! The in-process [`Invoker`]: each task runs as a worker in this process (the CLI's way).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::invoke::Invoker;
use crate::source::Source;
use crate::spool::SpoolBudget;
use crate::store::MultipartStore;
use crate::wire::{Task, TaskReport};
use crate::worker::{self, Progress, WorkerTuning};

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
