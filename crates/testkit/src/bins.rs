//! The workspace's binaries (`gzship`, the Lambda functions), for tests that run them.
//!
//! Cargo builds a package's own binaries before its integration tests and names them in
//! `CARGO_BIN_EXE_<name>`, but not the binaries of other packages, which is what the top-level
//! `tests/` run. [`path`] therefore runs `cargo build --workspace --bins --tests` with the
//! profile the running test was built with, into the target directory it was built in, before
//! it returns a path. Cargo rebuilds whatever changed since and does nothing when all is fresh,
//! so a test never runs a stale binary; a build that fails fails the test with cargo's output.
//!
//! Why those flags: `--workspace --tests` resolves features as `cargo nextest run --workspace`
//! and `cargo test --workspace` do (dev-dependencies included: proptest turns on
//! regex-syntax's unicode features, which tracing-subscriber and so every binary links), so
//! the binaries reuse the test build's libraries and only the binaries themselves are linked.
//! `--bins` alone, or `-p`, would build a second copy of tracing-subscriber, lambda_runtime
//! and gzship-lambda. The test targets are fresh by then and cost nothing.
//!
//! The build runs once per test process, and once per `cargo nextest run` (which runs every
//! test in a process of its own): the first process builds under a file lock in the target
//! directory and records the run's `NEXTEST_RUN_ID`; the others wait for the lock, find the
//! record and go on. `scripts/test` builds the binaries before the run, so that no test waits
//! for a build.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `gzship` binary (package gzship-cli), built if missing or stale.
pub fn gzship() -> PathBuf {
    path("gzship")
}

/// The workspace binary `name` (`gzship`, `master`, `worker`, `gzship-s3lite`), built if
/// missing or stale (see the module docs). Panics with cargo's output when the build fails.
pub fn path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = match BUILT.get_or_init(build) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let exe = dir.join(name);
    assert!(
        exe.is_file(),
        "{} is missing after cargo built the workspace's binaries: is `{name}` a [[bin]] of a \
         workspace member?",
        exe.display()
    );
    exe
}

/// The target directory the running test was built in, where tools that build the workspace
/// themselves (`cargo lambda watch`) should build too, so that they reuse its libraries.
pub fn target_dir() -> PathBuf {
    match layout() {
        Ok(layout) => layout.target,
        Err(e) => panic!("{e}"),
    }
}

/// The workspace's root directory (where its `Cargo.toml` is).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the running test executable sits in its target directory.
struct Layout {
    /// `<target>/<profile dir>`, where the binaries go.
    dir: PathBuf,
    /// `<target>`.
    target: PathBuf,
    /// The profile the test was built with (`test` for `<target>/debug`).
    profile: String,
}

fn layout() -> Result<Layout, String> {
    let exe = std::env::current_exe().map_err(|e| format!("find the test executable: {e}"))?;
    // Test executables live in <target>/<profile dir>/deps; the binaries in <profile dir>.
    let layout = exe
        .parent()
        .filter(|deps| deps.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .and_then(|dir| Some((dir, dir.parent()?)));
    let Some((dir, target)) = layout else {
        return Err(format!(
            "{} is not in <target>/<profile>/deps, where cargo puts test executables: cannot \
             tell where the workspace's binaries go",
            exe.display()
        ));
    };
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        // `cargo test` and `cargo nextest run` build tests with the `test` profile, whose
        // output directory is `debug`.
        Some("debug") => "test",
        Some(other) => other,
        None => return Err(format!("no profile directory in {}", dir.display())),
    };
    Ok(Layout {
        dir: dir.to_owned(),
        target: target.to_owned(),
        profile: profile.to_owned(),
    })
}

/// Builds the workspace's binaries; returns the directory they are in (`<target>/debug` for the
/// test profile).
fn build() -> Result<PathBuf, String> {
    let Layout {
        dir,
        target,
        profile,
    } = layout()?;
    let lock_path = dir.join(".gzship-testkit-bins.lock");
    let lock =
        File::create(&lock_path).map_err(|e| format!("create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let stamp = dir.join(".gzship-testkit-bins.run");
    let run = std::env::var("NEXTEST_RUN_ID").ok();
    if let Some(run) = &run
        && std::fs::read_to_string(&stamp).is_ok_and(|built| &built == run)
    {
        return Ok(dir);
    }

    let workspace = workspace_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--workspace",
        "--bins",
        "--tests",
        "--profile",
        &profile,
    ])
    .arg("--manifest-path")
    .arg(workspace.join("Cargo.toml"))
    .env("CARGO_TARGET_DIR", &target);
    let out = cmd.output().map_err(|e| format!("run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if let Some(run) = &run {
        std::fs::write(&stamp, run).map_err(|e| format!("write {}: {e}", stamp.display()))?;
    }
    Ok(dir)
}
