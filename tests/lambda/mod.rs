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
