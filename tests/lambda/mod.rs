//! The Lambda functions: end to end under the runtime emulator ([`watch`]), run by a real Step
//! Functions engine ([`stepfunctions`]), the handlers on every event shape ([`handlers`]),
//! the deployable template ([`template`]), and retries of broken worker invokes ([`invoke`]).

mod handlers;
mod invoke;
mod scan;
mod stepfunctions;
mod template;
mod watch;
