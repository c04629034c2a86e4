//! Servers that run as a process group of their own (`cargo lambda watch` and the functions it
//! starts, ministack and its workers), so that one kill ends all of them.

use std::process::{Child, Command};

/// Kills the process group that `child` leads (spawned with `process_group(0)`) and reaps
/// `child`. Errors are ignored: the group may be gone already.
pub(crate) fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}
