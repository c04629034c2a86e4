//! The Lambda functions: end to end under the runtime emulator ([`watch`]), run by a real Step
//! Functions engine ([`stepfunctions`]), the handlers on every event shape ([`handlers`]),
//! the deployable template ([`template`]) and what tests read from it ([`cfn`]), its IAM
//! policies under moto's IAM enforcement ([`iam`]), retries of broken worker invokes
//! ([`invoke`]), and queued jobs that failed for good sent to the dead-letter queue
//! ([`deadletter`]).

mod cfn;
mod deadletter;
mod handlers;
mod iam;
mod invoke;
mod scan;
mod stepfunctions;
mod template;
mod watch;

use std::time::Duration;

use gzship_core::invoke::Invoker;
use gzship_core::wire::{Task, TaskReport};
use gzship_lambda::credentials::Credentials;
use gzship_lambda::master::MasterDeps;

/// An invoker for master handlers that must not run any task (a scan, a refused or dead-lettered
/// job): it panics if one is invoked, and gives Lambda's 900 s worker limit.
struct NoInvoker;

impl Invoker for NoInvoker {
    async fn invoke(&self, task: Task) -> gzship_core::Result<TaskReport> {
        panic!("no task may run here, but task {} was invoked", task.index)
    }

    fn time_limit(&self) -> Option<Duration> {
        Some(Duration::from_secs(900))
    }
}

/// The master's dependencies with no state machine, arrival queue or dead-letter queue; a test
/// that needs one sets it: `MasterDeps { arrival_queue: Some(&queue), ..master_deps(..) }`.
fn master_deps<'a, M, I>(
    credentials: &'a Credentials,
    store: &'a M,
    invoker: &'a I,
) -> MasterDeps<'a, M, I> {
    MasterDeps {
        credentials,
        store,
        invoker,
        cancel: Default::default(),
        state_machine: None,
        arrival_queue: None,
        dead_letter_queue: None,
    }
}
