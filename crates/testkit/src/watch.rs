//! The Lambda functions (`master`, `worker`) under the Lambda runtime emulator,
//! `cargo lambda watch`, on 127.0.0.1.
//!
//! `cargo lambda watch` builds the functions with `cargo run` into the running test's target
//! directory ([`crate::bins::target_dir`]) on their first invocation, so it reuses the test
//! build's libraries, and passes its own environment to them: each emulator gets the
//! environment of the functions it serves, as each function has its own in AWS. Function names
//! in its URLs are the binary names.
//!
//! ```no_run
//! # async fn demo() {
//! let port = gzship_testkit::net::free_port();
//! let watch = gzship_testkit::watch::Watch::start(port, &[("GZSHIP_LOG".into(), "info".into())]);
//! let answer = watch.invoke("master", &serde_json::json!({"path": "/x"})).await;
//! # }
//! ```

use std::fs::File;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::primitives::Blob;
use serde_json::Value;

const INSTALL_HINT: &str =
    "run scripts/install-test-deps.sh (pip install cargo-lambda) to get `cargo lambda`";
/// How long the emulator may take to answer its port.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The first invocation builds the function: allow for a build on two cores.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(900);

/// A `cargo lambda watch` process group serving the package gzship-lambda's functions; killed
/// on drop.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    port: u16,
    log: PathBuf,
    /// Holds the log until the emulator is dropped.
    _dir: tempfile::TempDir,
}

impl Watch {
    /// Starts the emulator on `port` (from [`crate::net::free_port`]) with `env` for its
    /// functions, and waits until it listens.
    ///
    /// Panics with the fix when `cargo lambda` is not installed, and with the emulator's log
    /// when it exits or does not listen within a minute.
    pub fn start(port: u16, env: &[(String, String)]) -> Watch {
        let version = Command::new("cargo").args(["lambda", "--version"]).output();
        match version {
            Ok(o) if o.status.success() => {}
            _ => panic!("`cargo lambda` is not installed: {INSTALL_HINT}"),
        }
        // Logs live outside the workspace: the emulator watches the workspace for changes.
        let dir = tempfile::Builder::new()
            .prefix("gzship-watch-")
            .tempdir()
            .expect("create a temporary directory for the emulator's log");
        let log = dir.path().join("watch.log");
        let out = File::create(&log).expect("create the emulator's log file");
        let child = Command::new("cargo")
            .args(["lambda", "watch", "--quiet", "--ignore-changes"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            .args(["--concurrency", "4", "--package", "gzship-lambda"])
            .current_dir(crate::bins::workspace_dir())
            .env("CARGO_TARGET_DIR", crate::bins::target_dir())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(
                out.try_clone()
                    .expect("clone the emulator's log file handle"),
            )
            .stderr(out)
            // Its own process group, so that drop ends the functions it spawned too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn cargo lambda watch: {e}; {INSTALL_HINT}"));
        let mut watch = Watch {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = watch
                .child
                .try_wait()
                .expect("poll the cargo lambda watch process")
            {
                panic!("cargo lambda watch exited with {status}:\n{}", watch.log());
            }
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen on {port} within {START_TIMEOUT:?}:\n{}",
                watch.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        watch
    }

    /// `http://127.0.0.1:PORT`, the Lambda API endpoint (`AWS_ENDPOINT_URL_LAMBDA`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The Invoke URL of `function`, for a caller that posts the event itself (ministack's
    /// `MINISTACK_LAMBDA_PROXY_URL`). A function error is an HTTP 500 whose body is
    /// `{"errorType", "errorMessage"}`.
    pub fn function_url(&self, function: &str) -> String {
        format!(
            "{}/2015-03-31/functions/{function}/invocations",
            self.endpoint()
        )
    }

    /// The emulator's output so far, the functions' logs included.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Invokes `function` as the SDK does in AWS; returns the response payload, or the
    /// function's error body. Panics with the emulator's log when the invocation itself fails.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Value, Value> {
        let sdk = crate::s3::sdk_config();
        let config = aws_sdk_lambda::config::Builder::from(&sdk)
            .endpoint_url(self.endpoint())
            .timeout_config(
                aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(INVOKE_TIMEOUT)
                    .build(),
            )
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
            .build();
        let client = aws_sdk_lambda::Client::from_conf(config);
        invoke_function(&client, function, payload, || {
            format!("emulator log:\n{}", self.log())
        })
        .await
    }
}

/// Invokes `function` through `client` (pointed at `cargo lambda watch` or ministack) as
/// `aws lambda invoke` does: its answer, or its error body. A function error comes as HTTP 200
/// with `FunctionError` (AWS, ministack) or as HTTP 500 with the same body (`cargo lambda
/// watch`); both are `Err`. Anything else panics, with `context()` (a server's log).
pub async fn invoke_function(
    client: &aws_sdk_lambda::Client,
    function: &str,
    payload: &Value,
    context: impl Fn() -> String,
) -> Result<Value, Value> {
    let sent = client
        .invoke()
        .function_name(function)
        .payload(Blob::new(
            serde_json::to_vec(payload).expect("serialize a JSON value"),
        ))
        .send()
        .await;
    let body = |bytes: &[u8]| -> Value {
        serde_json::from_slice(bytes).unwrap_or_else(|e| {
            panic!(
                "{function} answered something other than JSON ({e}): {}\n{}",
                String::from_utf8_lossy(bytes),
                context()
            )
        })
    };
    match sent {
        Ok(out) => {
            let payload = body(out.payload().map(|b| b.as_ref()).unwrap_or(b"null"));
            if out.function_error().is_some() {
                Err(payload)
            } else {
                Ok(payload)
            }
        }
        // The emulator answers a function error with HTTP 500 and the same body.
        Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 500 => {
            Err(body(e.raw().body().bytes().unwrap_or(b"null")))
        }
        Err(e) => panic!(
            "invoke {function}: {}\n{}",
            aws_sdk_lambda::error::DisplayErrorContext(e),
            context()
        ),
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The group is the emulator, cargo and the function processes it started.
        crate::process::kill_group(&mut self.child);
    }
}
