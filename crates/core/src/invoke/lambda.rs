//! The AWS Lambda [`Invoker`]: each task is one synchronous (`RequestResponse`) invoke of the
//! worker function on aws-sdk-lambda. Compiled with the `lambda` feature only.
//!
//! How a worker's failure travels back:
//! - The worker answers with a `Diagnostic` whose `errorType` is [`error_type_of`] its error:
//!   `Retryable.SftpRead`, `Fatal.SourceChanged`, ... and whose `errorMessage` is the error's whole
//!   chain.
//! - Lambda answers such an invoke with HTTP 200 and `FunctionError` set, so the status alone
//!   never means success: every response is checked for `FunctionError`. Lambda's own failures
//!   (`Sandbox.Timedout`, `Runtime.ExitError`, ...) arrive the same way, without a prefix; they
//!   count as not retryable.
//! - `cargo lambda watch` (the local emulator) answers a handler error with HTTP 500 and the same
//!   JSON body instead; the SDK reports that as an error, whose raw body is read the same way.
//!
//! Either way the task fails with [`Error::Remote`] (inside [`Error::Task`]), whose `retryable`
//! comes from the prefix; transport and service failures of the invoke itself become
//! [`Error::Invoke`], classified by error code and HTTP status.
//!
//! Concurrency is not bounded here: the master runs at most `concurrency` invokes at once.

use std::time::Duration;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde::Deserialize;

use crate::error::{BoxError, Error, Result};
use crate::invoke::Invoker;
use crate::wire::{Task, TaskReport};

/// Prefix of a worker's `errorType` when another attempt can help.
pub const RETRYABLE_PREFIX: &str = "Retryable.";
/// Prefix of a worker's `errorType` when another attempt cannot help.
pub const FATAL_PREFIX: &str = "Fatal.";

/// The Lambda `errorType` for `err`: its stable [`Error::error_type`] behind
/// [`RETRYABLE_PREFIX`] or [`FATAL_PREFIX`], so the master knows whether to retry without
/// reading the message.
pub fn error_type_of(err: &Error) -> String {
    encode_error_type(err.error_type(), err.is_retryable())
}

/// `Retryable.{name}` or `Fatal.{name}`.
pub fn encode_error_type(name: &str, retryable: bool) -> String {
    let prefix = if retryable {
        RETRYABLE_PREFIX
    } else {
        FATAL_PREFIX
    };
    format!("{prefix}{name}")
}

/// Splits an `errorType` into the stable name and whether a retry can help. Types without
/// either prefix (Lambda's own, such as `Sandbox.Timedout`) are kept whole and not retryable.
pub fn decode_error_type(error_type: &str) -> (String, bool) {
    if let Some(name) = error_type.strip_prefix(RETRYABLE_PREFIX) {
        (name.to_owned(), true)
    } else if let Some(name) = error_type.strip_prefix(FATAL_PREFIX) {
        (name.to_owned(), false)
    } else {
        (error_type.to_owned(), false)
    }
}

/// The body Lambda returns for a failed invoke (the runtime's `Diagnostic`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionErrorBody {
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

/// Runs each task as one synchronous invoke of the worker function.
#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: Client,
    /// Function name, ARN or `name:alias`.
    function: String,
    /// The worker function's configured timeout.
    worker_timeout: Duration,
}

impl LambdaInvoker {
    /// An invoker of `function` (name, ARN or `name:alias`), whose configured timeout is
    /// `worker_timeout`. The master sizes tasks so one finishes well inside it (see
    /// [`Invoker::time_limit`]). `client` should allow an invoke to run at least that long:
    /// build it with [`LambdaInvoker::client_config`].
    pub fn new(client: Client, function: impl Into<String>, worker_timeout: Duration) -> Self {
        LambdaInvoker {
            client,
            function: function.into(),
            worker_timeout,
        }
    }

    /// A Lambda client configuration from the standard chain's `sdk` whose timeouts fit a
    /// worker that may run `worker_timeout`: each attempt may take that long plus a minute
    /// (the SDK's defaults would cut a long invoke short), and connecting 10 s.
    pub fn client_config(
        sdk: &aws_config::SdkConfig,
        worker_timeout: Duration,
    ) -> aws_sdk_lambda::Config {
        use aws_sdk_lambda::config::timeout::TimeoutConfig;
        aws_sdk_lambda::config::Builder::from(sdk)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(worker_timeout + Duration::from_secs(60))
                    .build(),
            )
            .build()
    }

    /// The function invoked.
    pub fn function(&self) -> &str {
        &self.function
    }

    async fn invoke_once(&self, task: &Task) -> Result<TaskReport> {
        let index = task.index;
        let payload = serde_json::to_vec(task)
            .map_err(|e| Error::invalid("task", format!("serialize task {index}: {e}")))?;
        let sent = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload))
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            Err(err) => return Err(sdk_error(index, err)),
        };
        let body = out.payload().map(|b| b.as_ref()).unwrap_or_default();
        if let Some(kind) = out.function_error() {
            return Err(remote_error(kind, body));
        }
        serde_json::from_slice::<TaskReport>(body).map_err(|e| Error::BadReport {
            index: Some(index),
            reason: format!(
                "the worker's answer is not a task report ({e}): {}",
                excerpt(body)
            ),
        })
    }
}

impl Invoker for LambdaInvoker {
    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        tracing::debug!(task = task.index, function = %self.function, "invoking worker");
        self.invoke_once(&task).await.map_err(|e| Error::Task {
            index: task.index,
            range: task.range,
            source: Box::new(e),
        })
    }

    fn time_limit(&self) -> Option<Duration> {
        Some(self.worker_timeout)
    }
}

/// The worker's error from a failed invoke's body; `function_error` is Lambda's
/// `FunctionError` header (`Unhandled` or `Handled`), used when the body says nothing.
fn remote_error(function_error: &str, body: &[u8]) -> Error {
    let parsed = serde_json::from_slice::<FunctionErrorBody>(body).ok();
    let error_type = parsed
        .as_ref()
        .and_then(|p| p.error_type.clone())
        .unwrap_or_else(|| format!("Lambda.{function_error}"));
    let message = parsed
        .and_then(|p| p.error_message)
        .unwrap_or_else(|| excerpt(body));
    let (error_type, retryable) = decode_error_type(&error_type);
    Error::Remote {
        error_type,
        message,
        retryable,
    }
}

/// A failed invoke call. An HTTP 500 whose body is a function error is the emulator's way of
/// reporting a handler error: treat it as the worker's error.
fn sdk_error<E>(index: u32, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(ctx) = &err {
        let raw = ctx.raw();
        if raw.status().as_u16() == 500
            && let Some(body) = raw.body().bytes()
            && let Ok(FunctionErrorBody {
                error_type: Some(error_type),
                error_message,
            }) = serde_json::from_slice::<FunctionErrorBody>(body)
        {
            let (error_type, retryable) = decode_error_type(&error_type);
            return Error::Remote {
                error_type,
                message: error_message.unwrap_or_default(),
                retryable,
            };
        }
    }
    let retryable = is_retryable(&err);
    Error::Invoke {
        index,
        retryable,
        source: Box::new(err) as BoxError,
    }
}

/// Error codes of Invoke that a later attempt can get past (throttling, capacity, a function
/// still being created or updated, Lambda's own faults).
const RETRYABLE_CODES: &[&str] = &[
    "TooManyRequestsException",
    "ServiceException",
    "ResourceNotReadyException",
    "ResourceConflictException",
    "EC2ThrottledException",
    "EC2UnexpectedException",
    "ENILimitReachedException",
    "SubnetIPAddressLimitReachedException",
    "SnapStartTimeoutException",
    "SnapStartNotReadyException",
];

fn is_retryable<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    crate::aws_error::is_retryable(err, RETRYABLE_CODES)
}

/// The start of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 500;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]).into_owned();
    if body.len() > MAX {
        format!("{text}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_round_trip_with_retryability() {
        let read = Error::SftpRead {
            path: "/f".into(),
            range: crate::ByteRange::new(0, 1).unwrap(),
            source: "reset".into(),
        };
        assert_eq!(error_type_of(&read), "Retryable.SftpRead");
        let changed = Error::SourceChanged {
            path: "/f".into(),
            detail: "size".into(),
        };
        assert_eq!(error_type_of(&changed), "Fatal.SourceChanged");
        assert_eq!(
            decode_error_type("Retryable.SftpRead"),
            ("SftpRead".into(), true)
        );
        assert_eq!(
            decode_error_type("Fatal.SourceChanged"),
            ("SourceChanged".into(), false)
        );
        assert_eq!(
            decode_error_type("Sandbox.Timedout"),
            ("Sandbox.Timedout".into(), false)
        );
    }

    #[test]
    fn function_error_bodies_become_remote_errors() {
        let err = remote_error(
            "Unhandled",
            br#"{"errorType":"Retryable.SshConnect","errorMessage":"connect to ssh server h:22: refused"}"#,
        );
        match &err {
            Error::Remote {
                error_type,
                message,
                retryable,
            } => {
                assert_eq!(error_type, "SshConnect");
                assert!(message.contains("refused"));
                assert!(retryable);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.is_retryable());
        // Lambda's own failure, and a body that is not JSON at all.
        let err = remote_error(
            "Unhandled",
            br#"{"errorType":"Sandbox.Timedout","errorMessage":"Task timed out after 900.00 seconds"}"#,
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("Sandbox.Timedout"), "{err}");
        let err = remote_error("Unhandled", b"out of memory");
        assert!(err.to_string().contains("Lambda.Unhandled"), "{err}");
        assert!(err.to_string().contains("out of memory"), "{err}");
    }
}
