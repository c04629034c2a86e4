//! The Lambda functions: end to end under the runtime emulator ([`watch`]), run by a real Step
//! Functions engine ([`stepfunctions`]), the handlers on every event shape ([`handlers`]), and
//! the deployable template ([`template`]).

mod handlers;
mod stepfunctions;
mod template;
mod watch;
