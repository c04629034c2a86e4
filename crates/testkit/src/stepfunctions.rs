//! A real Step Functions engine for tests: ministack ([`MINISTACK_VERSION`]) on 127.0.0.1,
//! running Amazon States Language state machines (Standard workflows, inline and DISTRIBUTED
//! Map, Retry, Catch) whose Lambda tasks run the workspace's functions, in one of two ways:
//! - [`StepFunctions::register_function`]: ministack forwards each invoke to the functions
//!   under `cargo lambda watch` ([`crate::watch::Watch`]), as the other Lambda tests run them.
//! - [`StepFunctions::register_binary`]: ministack runs the built binary
//!   ([`crate::bins::path`]) itself, as a `provided.al2023` function with its own Lambda
//!   runtime API; errors then reach the state machine as on AWS (see below).
//!
//! ```no_run
//! # async fn demo(watch: &gzship_testkit::watch::Watch) {
//! use gzship_testkit::stepfunctions::{ROLE_ARN, StepFunctions};
//! let sfn = StepFunctions::start().await;
//! let worker = sfn.register_function("worker", &watch.function_url("worker")).await;
//! let definition = format!(r#"{{"StartAt": "Run", "States": {{"Run": {{"Type": "Task",
//!     "Resource": "{worker}", "End": true}}}}}}"#);
//! let machine = sfn.create_state_machine("job", &definition, ROLE_ARN).await;
//! let run = sfn.start_execution(&machine, &serde_json::json!({"task": 0})).await;
//! let done = sfn.wait(&run, std::time::Duration::from_secs(60)).await;
//! # }
//! ```
//!
//! What ministack does differently from AWS, and where this module keeps it:
//! - A failed task of a forwarded function has the `Error` `Runtime.HandlerError`, and its
//!   `Cause` wraps the function's reply (`Proxy target returned HTTP 500: {"errorType": ...}`,
//!   cut at 512 bytes). On AWS, and for a function registered with `register_binary`, the
//!   `Error` is the function's `errorType` and the `Cause` its reply. [`lambda_error_type`]
//!   reads gzship's error type from either, and is the one place that knows the difference. A
//!   `Retry` or `Catch` that names gzship's error types matches nothing for a forwarded
//!   function; only `States.ALL` and `States.TaskFailed` do.
//! - A forwarded function's reply of HTTP 200 is a success even with `X-Amz-Function-Error`
//!   (cargo lambda watch answers errors with 500, which ministack does report as errors).
//! - A failed execution's `output` is `{"Error", "Cause"}`; AWS has none. [`Execution::output`]
//!   is `None` unless the execution succeeded, as on AWS.
//! - No `RedriveExecution` (ministack 1.5.33 answers `InvalidAction`), so there is no
//!   `redrive_execution` here: resume on the emulator by starting a new execution.
//! - Execution history is thinner (no `MapIteration*` or `MapRun*` events); the child
//!   executions of a DISTRIBUTED Map are listed by `ListMapRuns` and `ListExecutions` as on AWS
//!   ([`StepFunctions::map_run_executions`]), each with its own history.
//! - As on AWS, a DISTRIBUTED Map with a failed item fails with
//!   `States.ExceedToleratedFailureThreshold` and a cause that does not name the item's error:
//!   that lives in the child execution.
//!
//! Functions are registered with AWS's maximum timeout, 900 s: for a forwarded function it is
//! the timeout of ministack's HTTP request, and the first invocation under `cargo lambda watch`
//! builds the function.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_sfn::error::DisplayErrorContext;
use aws_sdk_sfn::types::{HistoryEventType, StateMachineType};
use gzship_core::backoff::Backoff;
use serde_json::Value;

pub use aws_sdk_sfn::types::ExecutionStatus;

/// The ministack version tests run against, installed by `scripts/install-test-deps.sh`: this
/// module relies on how it reports a forwarded function's error (see the module docs).
pub const MINISTACK_VERSION: &str = "1.5.33";
/// The account ministack puts in ARNs for the test credentials (those of [`crate::s3`]).
pub const ACCOUNT_ID: &str = "000000000000";
/// A role for state machines (ministack checks none).
pub const ROLE_ARN: &str = "arn:aws:iam::000000000000:role/gzship-test-states";
/// The `Error` ministack gives every failed Lambda task.
const MINISTACK_LAMBDA_ERROR: &str = "Runtime.HandlerError";
/// What ministack's `Cause` message says before the forwarded reply's body.
const PROXY_REPLY_PREFIX: &str = "Proxy target returned HTTP ";

/// Starts ministack after checking its version, so that a wrong install fails with the fix.
const LAUNCHER: &str = r#"
import sys
import importlib.metadata as metadata
want = sys.argv[1]
try:
    have = metadata.version("ministack")
except metadata.PackageNotFoundError:
    sys.exit(f"gzship-testkit: ministack is not installed, the tests need {want}")
if have != want:
    sys.exit(f"gzship-testkit: ministack {have} is installed, the tests need {want}")
from ministack.app import main
sys.argv = ["ministack"]
main()
"#;
const INSTALL_HINT: &str =
    "run scripts/install-test-deps.sh (pip install ministack) to get ministack";
/// How long ministack may take to listen (about a second here).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts to start on a free port (another process may take it between probe and bind).
const START_ATTEMPTS: u32 = 3;
/// Wait between readiness checks and between `DescribeExecution` polls.
const POLL: Backoff = Backoff {
    base: Duration::from_millis(10),
    max: Duration::from_millis(250),
};
/// The function timeout registered with ministack: its forwarded invoke's HTTP timeout.
const FUNCTION_TIMEOUT_SECONDS: i32 = 900;
/// The smallest valid zip (an end-of-central-directory record): ministack needs code to
/// register a function and never runs it when the function is forwarded.
const EMPTY_ZIP: [u8; 22] = [
    0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// A running ministack (Step Functions and Lambda only); its process group is killed on drop.
#[derive(Debug)]
pub struct StepFunctions {
    child: Option<Child>,
    addr: SocketAddr,
    sfn: aws_sdk_sfn::Client,
    lambda: aws_sdk_lambda::Client,
    /// Holds ministack's log and temporary files until it is dropped.
    dir: tempfile::TempDir,
}

/// An execution as `DescribeExecution` reports it.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The execution's ARN.
    pub arn: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, ...
    pub status: ExecutionStatus,
    /// The execution's input.
    pub input: Value,
    /// The output of a succeeded execution (`None` otherwise, as on AWS).
    pub output: Option<Value>,
    /// The error of a failed execution.
    pub error: Option<String>,
    /// The cause of a failed execution.
    pub cause: Option<String>,
}

impl Execution {
    /// gzship's error type when the execution failed in a Lambda task (see
    /// [`lambda_error_type`]); the execution's error otherwise.
    pub fn error_type(&self) -> Option<String> {
        let error = self.error.as_deref()?;
        Some(lambda_error_type(error, self.cause.as_deref()))
    }
}

/// One failed attempt of a Task state (a `TaskFailed` history event).
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// The error as the engine names it.
    pub error: String,
    /// The cause: for a Lambda task, the function's error reply.
    pub cause: Option<String>,
}

impl TaskFailure {
    /// gzship's error type (see [`lambda_error_type`]).
    pub fn error_type(&self) -> String {
        lambda_error_type(&self.error, self.cause.as_deref())
    }
}

/// The `errorType` a Lambda function failed with (gzship's `Retryable.*` / `Fatal.*`), from a
/// Step Functions `Error` and `Cause`.
///
/// On AWS the error is the function's `errorType` (and the cause its whole reply). ministack
/// names every failed Lambda task `Runtime.HandlerError` and wraps the function's reply in the
/// cause's `errorMessage`: `Proxy target returned HTTP 500: {"errorType": ..., ...}`, cut at 512
/// bytes (the runtime writes `errorType` first). Any other error, or a cause without a
/// function's reply (the function was unreachable, or crashed), is returned as it is.
pub fn lambda_error_type(error: &str, cause: Option<&str>) -> String {
    if error != MINISTACK_LAMBDA_ERROR {
        return error.to_owned();
    }
    cause
        .and_then(forwarded_error_type)
        .unwrap_or_else(|| error.to_owned())
}

/// The `errorType` of the function reply that ministack wrapped in `cause`.
fn forwarded_error_type(cause: &str) -> Option<String> {
    let cause: Value = serde_json::from_str(cause).ok()?;
    let message = cause.get("errorMessage")?.as_str()?;
    let (_status, body) = message.strip_prefix(PROXY_REPLY_PREFIX)?.split_once(": ")?;
    if let Ok(reply) = serde_json::from_str::<Value>(body) {
        return reply.get("errorType")?.as_str().map(str::to_owned);
    }
    // A reply longer than ministack keeps: read the first string after "errorType":.
    let rest = body.split_once(r#""errorType""#)?.1.trim_start();
    let rest = rest.strip_prefix(':')?;
    serde_json::Deserializer::from_str(rest)
        .into_iter::<String>()
        .next()?
        .ok()
}

/// A zip holding one executable file, `bootstrap` (stored, not compressed).
fn zip_bootstrap(content: &[u8]) -> Vec<u8> {
    const NAME: &[u8] = b"bootstrap";
    // rwxr-xr-x regular file, in the high half of the external attributes (unix "made by").
    const MODE: u32 = 0o100_755 << 16;
    let crc = crc32fast::hash(content);
    let size = u32::try_from(content.len()).expect("a bootstrap script is small");
    let name_len = u16::try_from(NAME.len()).expect("a short name");
    let mut zip = Vec::new();
    // Local file header: version 1.0, no flags, stored, no time, crc, sizes, name.
    zip.extend_from_slice(&0x0403_4b50_u32.to_le_bytes());
    zip.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for field in [crc, size, size] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    zip.extend_from_slice(&name_len.to_le_bytes());
    zip.extend_from_slice(&0_u16.to_le_bytes());
    zip.extend_from_slice(NAME);
    zip.extend_from_slice(content);
    let directory_offset = u32::try_from(zip.len()).expect("a small zip");
    // Central directory header: made by unix (3) zip 2.0, needs 1.0, the same fields, then
    // comment length, disk, internal attributes, external attributes, local header offset.
    zip.extend_from_slice(&0x0201_4b50_u32.to_le_bytes());
    zip.extend_from_slice(&[20, 3, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for field in [crc, size, size] {
        zip.extend_from_slice(&field.to_le_bytes());
    }
    zip.extend_from_slice(&name_len.to_le_bytes());
    zip.extend_from_slice(&[0; 8]);
    zip.extend_from_slice(&MODE.to_le_bytes());
    zip.extend_from_slice(&0_u32.to_le_bytes());
    zip.extend_from_slice(NAME);
    let directory_len = u32::try_from(zip.len()).expect("a small zip") - directory_offset;
    // End of central directory: one entry.
    zip.extend_from_slice(&0x0605_4b50_u32.to_le_bytes());
    zip.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    zip.extend_from_slice(&directory_len.to_le_bytes());
    zip.extend_from_slice(&directory_offset.to_le_bytes());
    zip.extend_from_slice(&0_u16.to_le_bytes());
    zip
}

impl StepFunctions {
    /// Starts ministack on a free port of 127.0.0.1 with Retry intervals and Wait states as
    /// written, and waits until it answers HTTP.
    ///
    /// Panics with the fix ("run scripts/install-test-deps.sh") when ministack or python3 is
    /// missing or is another version, and with ministack's log when it does not start.
    pub async fn start() -> StepFunctions {
        Self::start_with_wait_scale(1.0).await
    }

    /// As [`StepFunctions::start`], with every Retry interval and Wait state scaled by
    /// `scale` (ministack's `SFN_WAIT_SCALE`; 0 skips them): a state machine written for AWS,
    /// with AWS's backoff, runs fast in a test.
    pub async fn start_with_wait_scale(scale: f64) -> StepFunctions {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(scale).await {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("ministack did not start after {START_ATTEMPTS} attempts; its log:\n{last_log}");
    }

    /// One start; `Err` carries ministack's log when it exited or never answered.
    async fn try_start(wait_scale: f64) -> Result<StepFunctions, String> {
        let dir = tempfile::Builder::new()
            .prefix("gzship-ministack-")
            .tempdir()
            .expect("create a temporary directory for ministack");
        let log_path = dir.path().join("ministack.log");
        let port = crate::net::free_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = File::create(&log_path).expect("create ministack's log file");
        let log2 = log.try_clone().expect("clone ministack's log file handle");
        let child = Command::new("python3")
            .args(["-c", LAUNCHER, MINISTACK_VERSION])
            .env("BIND_HOST", "127.0.0.1")
            .env("GATEWAY_PORT", port.to_string())
            .env("MINISTACK_REGION", crate::s3::REGION)
            .env("SERVICES", "stepfunctions,lambda")
            .env("SFN_WAIT_SCALE", wait_scale.to_string())
            // Both listen on fixed ports of every interface by default (8883, 2222): two
            // servers would collide, and a test has no use for them.
            .env("IOT_MTLS_ENABLED", "0")
            .env("SFTP_ENABLED", "0")
            .env("PERSIST_STATE", "0")
            .env_remove("SFN_MOCK_CONFIG")
            .env_remove("LOCALSTACK_SFN_MOCK_CONFIG")
            // Its code cache and other temporary files go with the test's directory.
            .env("TMPDIR", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group, so that drop ends whatever it started too.
            .process_group(0)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("python3 is not installed: {INSTALL_HINT} ({e})")
            }
            Err(e) => panic!("spawn python3 to run ministack: {e}"),
        };
        let endpoint = format!("http://{addr}");
        let sdk = crate::s3::sdk_config();
        let sfn = aws_sdk_sfn::Client::from_conf(
            aws_sdk_sfn::config::Builder::from(&sdk)
                .endpoint_url(&endpoint)
                .build(),
        );
        let lambda = aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&sdk)
                .endpoint_url(&endpoint)
                .build(),
        );
        let mut server = StepFunctions {
            child: Some(child),
            addr,
            sfn,
            lambda,
            dir,
        };
        let startup = crate::net::Startup {
            addr,
            timeout: START_TIMEOUT,
            poll: POLL,
            launcher_marker: "gzship-testkit: ministack",
            hint: INSTALL_HINT,
        };
        crate::net::wait_until_serving(startup, &mut server, Self::child_exited, Self::log).await?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, the endpoint of both Step Functions and Lambda.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A Step Functions client of this server, for what the methods here do not cover.
    pub fn client(&self) -> &aws_sdk_sfn::Client {
        &self.sfn
    }

    /// ministack's output so far (requests, executions, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ministack.log")).unwrap_or_default()
    }

    /// Registers the Lambda function `name`, whose invocations ministack forwards to
    /// `proxy_url` (a [`crate::watch::Watch::function_url`]); returns its ARN, for a Task's
    /// `Resource` or a `lambda:invoke` `FunctionName`.
    pub async fn register_function(&self, name: &str, proxy_url: &str) -> String {
        let environment = aws_sdk_lambda::types::Environment::builder()
            .variables("MINISTACK_LAMBDA_PROXY_URL", proxy_url)
            .build();
        self.create_function(name, EMPTY_ZIP.to_vec(), environment)
            .await
    }

    /// Registers the Lambda function `name` as the binary `exe` (such as
    /// [`crate::bins::path`]`("worker")`), which ministack runs itself as a `provided.al2023`
    /// function with `env` and its own Lambda runtime API; returns its ARN.
    ///
    /// Unlike a function forwarded to `cargo lambda watch` ([`StepFunctions::register_function`]),
    /// a failed task's `Error` is then the function's `errorType`, as on AWS, so a `Retry` or
    /// `Catch` that names gzship's error types matches. The functions' output goes to
    /// [`StepFunctions::log`]. ministack keeps warm instances of the function between
    /// invocations, as AWS does.
    pub async fn register_binary(
        &self,
        name: &str,
        exe: &std::path::Path,
        env: &[(String, String)],
    ) -> String {
        // A link of its own: cargo replaces the workspace's binaries when anything builds them
        // again (`cargo lambda watch` does, with another profile), and the function must not
        // find its file missing, or changed, while a test runs.
        let own = self.dir.path().join(format!("function-{name}"));
        if std::fs::hard_link(exe, &own).is_err() {
            std::fs::copy(exe, &own)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", exe.display(), own.display()));
        }
        let exe = own.to_str().unwrap_or_else(|| {
            panic!("{} is not UTF-8: cannot name it in a script", own.display())
        });
        assert!(
            !exe.contains('\''),
            "{exe} has a single quote: cannot name it in a script"
        );
        let bootstrap = format!("#!/bin/sh\nexec '{exe}'\n");
        let mut variables = aws_sdk_lambda::types::Environment::builder();
        for (k, v) in env {
            variables = variables.variables(k, v);
        }
        self.create_function(name, zip_bootstrap(bootstrap.as_bytes()), variables.build())
            .await
    }

    async fn create_function(
        &self,
        name: &str,
        zip: Vec<u8>,
        environment: aws_sdk_lambda::types::Environment,
    ) -> String {
        let code = aws_sdk_lambda::types::FunctionCode::builder()
            .zip_file(Blob::new(zip))
            .build();
        let created = self
            .lambda
            .create_function()
            .function_name(name)
            .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
            .handler("bootstrap")
            .role(format!("arn:aws:iam::{ACCOUNT_ID}:role/gzship-test-lambda"))
            .code(code)
            .timeout(FUNCTION_TIMEOUT_SECONDS)
            .environment(environment)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "register function {name} with ministack: {}\n{}",
                    aws_sdk_lambda::error::DisplayErrorContext(e),
                    self.log()
                )
            });
        created
            .function_arn()
            .unwrap_or_else(|| panic!("ministack registered {name} without an ARN"))
            .to_owned()
    }

    /// Creates a Standard state machine from its Amazon States Language `definition`; returns
    /// its ARN.
    pub async fn create_state_machine(
        &self,
        name: &str,
        definition: &str,
        role_arn: &str,
    ) -> String {
        let created = self
            .sfn
            .create_state_machine()
            .name(name)
            .definition(definition)
            .role_arn(role_arn)
            .r#type(StateMachineType::Standard)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create state machine {name}: {}\n{definition}\n{}",
                    DisplayErrorContext(e),
                    self.log()
                )
            });
        created.state_machine_arn().to_owned()
    }

    /// Starts an execution of the state machine `state_machine_arn` with `input`; returns the
    /// execution's ARN.
    pub async fn start_execution(&self, state_machine_arn: &str, input: &Value) -> String {
        let started = self
            .sfn
            .start_execution()
            .state_machine_arn(state_machine_arn)
            .input(input.to_string())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "start an execution of {state_machine_arn}: {}\n{}",
                    DisplayErrorContext(e),
                    self.log()
                )
            });
        started.execution_arn().to_owned()
    }

    /// The execution `execution_arn` now.
    pub async fn describe_execution(&self, execution_arn: &str) -> Execution {
        let out = self
            .sfn
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "describe execution {execution_arn}: {}\n{}",
                    DisplayErrorContext(e),
                    self.log()
                )
            });
        let json = |what: &str, text: &str| -> Value {
            serde_json::from_str(text).unwrap_or_else(|e| {
                panic!("the {what} of execution {execution_arn} is not JSON ({e}): {text}")
            })
        };
        let status = out.status().clone();
        Execution {
            arn: execution_arn.to_owned(),
            input: out.input().map_or(Value::Null, |t| json("input", t)),
            output: out
                .output()
                .filter(|_| status == ExecutionStatus::Succeeded)
                .map(|t| json("output", t)),
            status,
            error: out.error().map(str::to_owned),
            cause: out.cause().map(str::to_owned),
        }
    }

    /// Waits until the execution `execution_arn` stops (succeeds, fails, times out or is
    /// aborted) and returns it. Panics with the execution and ministack's log after `timeout`.
    pub async fn wait(&self, execution_arn: &str, timeout: Duration) -> Execution {
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let execution = self.describe_execution(execution_arn).await;
            if execution.status != ExecutionStatus::Running
                && execution.status != ExecutionStatus::PendingRedrive
            {
                return execution;
            }
            assert!(
                Instant::now() < deadline,
                "execution {execution_arn} still {} after {timeout:?}\nministack log:\n{}",
                execution.status.as_str(),
                self.log()
            );
            attempt += 1;
            tokio::time::sleep(POLL.delay(attempt)).await;
        }
    }

    /// The child executions of every DISTRIBUTED Map run of the execution `execution_arn`
    /// (one per item), in no particular order.
    pub async fn map_run_executions(&self, execution_arn: &str) -> Vec<Execution> {
        let runs = self
            .sfn
            .list_map_runs()
            .execution_arn(execution_arn)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "list the map runs of {execution_arn}: {}",
                    DisplayErrorContext(e)
                )
            });
        let mut children = Vec::new();
        for run in runs {
            let listed = self
                .sfn
                .list_executions()
                .map_run_arn(run.map_run_arn())
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "list the executions of map run {}: {}",
                        run.map_run_arn(),
                        DisplayErrorContext(e)
                    )
                });
            for child in listed {
                children.push(self.describe_execution(child.execution_arn()).await);
            }
        }
        children
    }

    /// Every failed Task attempt of the execution `execution_arn`, in order: a task retried
    /// twice that then failed for good shows three.
    pub async fn task_failures(&self, execution_arn: &str) -> Vec<TaskFailure> {
        let events = self
            .sfn
            .get_execution_history()
            .execution_arn(execution_arn)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "get the history of {execution_arn}: {}",
                    DisplayErrorContext(e)
                )
            });
        events
            .iter()
            .filter(|event| *event.r#type() == HistoryEventType::TaskFailed)
            .map(|event| {
                let details = event.task_failed_event_details();
                TaskFailure {
                    error: details
                        .and_then(|d| d.error())
                        .unwrap_or_default()
                        .to_owned(),
                    cause: details.and_then(|d| d.cause()).map(str::to_owned),
                }
            })
            .collect()
    }

    fn child_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for StepFunctions {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::process::kill_group(&mut child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause as ministack 1.5.33 writes it for a forwarded function's HTTP 500.
    fn ministack_cause(reply: &str) -> String {
        let kept: String = reply.chars().take(512).collect();
        serde_json::json!({
            "errorMessage": format!("Proxy target returned HTTP 500: {kept}"),
            "errorType": "Runtime.HandlerError",
        })
        .to_string()
    }

    #[test]
    fn the_bootstrap_zip_unpacks_with_pythons_zipfile_as_an_executable() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("code.zip");
        std::fs::write(&zip, zip_bootstrap(b"#!/bin/sh\nexec true\n")).unwrap();
        // What ministack does with a function's code: extract, keeping the mode bits.
        let script = "import sys, zipfile\n\
            z = zipfile.ZipFile(sys.argv[1])\n\
            assert z.testzip() is None\n\
            (info,) = z.infolist()\n\
            print(info.filename, oct(info.external_attr >> 16), z.read(info).decode(), end='')";
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&zip)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "bootstrap 0o100755 #!/bin/sh\nexec true\n"
        );
    }

    #[test]
    fn error_type_on_aws_is_the_error() {
        let cause = r#"{"errorType":"Retryable.SftpRead","errorMessage":"read ..."}"#;
        assert_eq!(
            lambda_error_type("Retryable.SftpRead", Some(cause)),
            "Retryable.SftpRead"
        );
        assert_eq!(
            lambda_error_type("States.ExceedToleratedFailureThreshold", None),
            "States.ExceedToleratedFailureThreshold"
        );
    }

    #[test]
    fn error_type_on_ministack_comes_from_the_forwarded_reply() {
        let cause = ministack_cause(
            r#"{"errorType":"Fatal.InvalidInput","errorMessage":"invalid input: no job"}"#,
        );
        assert_eq!(
            lambda_error_type("Runtime.HandlerError", Some(&cause)),
            "Fatal.InvalidInput"
        );
    }

    #[test]
    fn error_type_survives_a_cut_reply() {
        let long = "x".repeat(2000);
        let reply = format!(r#"{{"errorType": "Retryable.S3", "errorMessage": "{long}"}}"#);
        let cause = ministack_cause(&reply);
        assert!(!cause.contains(&long), "the reply was not cut: {cause}");
        assert_eq!(
            lambda_error_type("Runtime.HandlerError", Some(&cause)),
            "Retryable.S3"
        );
    }

    #[test]
    fn error_type_without_a_reply_stays_the_engines() {
        let unreachable = serde_json::json!({
            "errorMessage": "Proxy target http://127.0.0.1:1/ unreachable: refused",
            "errorType": "Runtime.HandlerError",
        })
        .to_string();
        for cause in [Some(unreachable.as_str()), Some("not json"), None] {
            assert_eq!(
                lambda_error_type("Runtime.HandlerError", cause),
                "Runtime.HandlerError"
            );
        }
    }
}
