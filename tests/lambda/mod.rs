//! The Lambda functions: end to end under the runtime emulator ([`watch`]), the handlers on
//! every event shape ([`handlers`]), and the deployable template ([`template`]).

mod handlers;
mod template;
mod watch;
