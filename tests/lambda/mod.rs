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
