//! The AWS Lambda [`Invoker`]: each task is one synchronous (`RequestResponse`) invoke of the
//! worker function on aws-sdk-lambda. Compiled with the `lambda` feature only.
//!
//! How a worker's failure travels back (the format is [`wire_error`]'s):
//! - The worker answers with a `Diagnostic`: a [`FunctionError`] whose `errorType` says whether
//!   a retry can help (`Retryable.SftpRead`, `Fatal.SourceChanged`, ...).
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

use crate::error::{BoxError, Error, Result};
use crate::invoke::Invoker;
use crate::invoke::wire_error::{self, FunctionError};
use crate::wire::{Task, TaskReport};

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
    /// (the SDK's defaults would cut a long invoke short), and connecting 10 s. Connections
    /// have TCP keepalive ([`keepalive`](super::keepalive)): a NAT gateway drops a flow idle
    /// for 350 s, and an invoke sends nothing until its worker ends.
    ///
    /// The SDK does not retry: its standard policy (3 attempts, timeouts and I/O errors
    /// included) on top of the master's task attempts would run one range up to 9 times at
    /// once after one broken connection, since a dropped invoke does not stop the worker. The
    /// master owns retries: a failed invoke is an [`Error::Invoke`] (retryable for throttling,
    /// timeouts and I/O errors) and the master tries the task again after its backoff.
    pub fn client_config(
        sdk: &aws_config::SdkConfig,
        worker_timeout: Duration,
    ) -> aws_sdk_lambda::Config {
        use aws_sdk_lambda::config::retry::RetryConfig;
        use aws_sdk_lambda::config::timeout::TimeoutConfig;
        aws_sdk_lambda::config::Builder::from(sdk)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(worker_timeout + Duration::from_secs(60))
                    .build(),
            )
            .retry_config(RetryConfig::disabled())
            .http_client(super::keepalive::http_client())
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
            return Err(wire_error::remote_error(kind, body));
        }
        serde_json::from_slice::<TaskReport>(body).map_err(|e| Error::BadReport {
            index: Some(index),
            reason: format!(
                "the worker's answer is not a task report ({e}): {}",
                wire_error::excerpt(body)
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
            && let Some(worker_error) = FunctionError::parse(body)
        {
            return worker_error.into_error();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The master owns retries: one attempt per invoke, so a broken connection runs the
    /// worker once more (the master's retry), never the SDK's three times on top.
    #[test]
    fn the_sdk_does_not_retry_invokes() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let config = LambdaInvoker::client_config(&sdk, Duration::from_secs(900));
        let retry = config.retry_config().expect("a retry configuration");
        assert_eq!(retry.max_attempts(), 1);
        let timeouts = config.timeout_config().expect("a timeout configuration");
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(Duration::from_secs(960))
        );
    }
}
