//! The handlers' error: gzship's [`Error`] plus what only a Lambda function can get wrong (its
//! environment, its secret), and its conversion to the runtime's [`Diagnostic`] in the wire
//! format of [`gzship_core::invoke::wire_error`].

use gzship_core::Error;
use gzship_core::error::BoxError;
use gzship_core::invoke::wire_error::{self, FunctionError};
use lambda_runtime::Diagnostic;

/// Why a handler failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// An error of the engine (bad input, SFTP, S3, a failed task, ...).
    #[error(transparent)]
    Core(#[from] Error),

    /// A configuration variable is missing or malformed.
    #[error("environment variable {name}: {reason}")]
    Config {
        /// The variable.
        name: &'static str,
        /// What is wrong and what to set.
        reason: String,
    },

    /// Fetching the SSH credential from Secrets Manager failed.
    #[error("get secret {secret_id} from secrets manager")]
    SecretFetch {
        /// The secret's name or ARN.
        secret_id: String,
        /// Whether another attempt can help (throttling, network).
        retryable: bool,
        /// The SDK error.
        #[source]
        source: BoxError,
    },

    /// Handing a job to the state machine (StartExecution) failed.
    #[error("start an execution of state machine {state_machine}")]
    StartExecution {
        /// The state machine's ARN.
        state_machine: String,
        /// Whether another attempt can help (throttling, network).
        retryable: bool,
        /// The SDK error.
        #[source]
        source: BoxError,
    },

    /// Sending a scanned file's job to the arrival queue (SendMessage) failed.
    #[error("send the job of {destination} to the arrival queue {queue}")]
    Enqueue {
        /// The queue's URL.
        queue: String,
        /// The job's destination.
        destination: String,
        /// Whether another attempt can help (throttling, network).
        retryable: bool,
        /// The SDK error.
        #[source]
        source: BoxError,
    },

    /// Sending a failed job's message to the dead-letter queue (SendMessage) failed.
    #[error("send SQS message {message_id} to the dead-letter queue {queue}")]
    DeadLetter {
        /// The queue's URL.
        queue: String,
        /// The message's id in the arrival queue.
        message_id: String,
        /// Whether another attempt can help (throttling, network).
        retryable: bool,
        /// The SDK error.
        #[source]
        source: BoxError,
    },

    /// The secret does not hold a credential in a known form. Never carries the secret's text.
    #[error("secret {secret_id} does not hold an ssh credential: {reason}")]
    SecretFormat {
        /// The secret's name or ARN.
        secret_id: String,
        /// What is wrong, without any of the secret's content.
        reason: String,
    },
}

impl HandlerError {
    /// Whether retrying the same invocation can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            HandlerError::Core(e) => e.is_retryable(),
            HandlerError::SecretFetch { retryable, .. }
            | HandlerError::StartExecution { retryable, .. }
            | HandlerError::Enqueue { retryable, .. }
            | HandlerError::DeadLetter { retryable, .. } => *retryable,
            HandlerError::Config { .. } | HandlerError::SecretFormat { .. } => false,
        }
    }

    /// A stable name for the error's kind (without the retryability prefix).
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Core(e) => e.error_type(),
            HandlerError::Config { .. } => "Config",
            HandlerError::SecretFetch { .. } => "SecretFetch",
            HandlerError::SecretFormat { .. } => "SecretFormat",
            HandlerError::StartExecution { .. } => "StartExecution",
            HandlerError::Enqueue { .. } => "Enqueue",
            HandlerError::DeadLetter { .. } => "DeadLetter",
        }
    }

    /// The Lambda `errorType`: `Retryable.{kind}` or `Fatal.{kind}`, which the master's Lambda
    /// invoker decodes back; a failed task keeps its worker's type.
    pub fn error_type(&self) -> String {
        match self {
            HandlerError::Core(e) => wire_error::error_type_of(e),
            _ => wire_error::encode_error_type(self.kind(), self.is_retryable()),
        }
    }

    /// The error as it crosses the wire.
    pub fn to_function_error(&self) -> FunctionError {
        match self {
            HandlerError::Core(e) => FunctionError::of(e),
            _ => FunctionError::new(
                self.kind(),
                self.is_retryable(),
                gzship_core::error::chain(self),
            ),
        }
    }
}

/// Every `Retryable.*` error type a function can fail with: gzship's
/// ([`wire_error::RETRYABLE_NAMES`]) and the handlers' own. The state machine's `Retry`
/// (`infra/statemachine.asl.json`) lists exactly these; a test checks it.
pub fn retryable_error_types() -> Vec<String> {
    wire_error::RETRYABLE_NAMES
        .iter()
        .copied()
        .chain(["SecretFetch", "StartExecution"])
        .map(|name| wire_error::encode_error_type(name, true))
        .collect()
}

impl From<HandlerError> for Diagnostic {
    fn from(err: HandlerError) -> Diagnostic {
        let FunctionError {
            error_type,
            error_message,
        } = err.to_function_error();
        Diagnostic {
            error_type,
            error_message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_carry_a_stable_type_and_the_whole_chain() {
        let err = HandlerError::Core(Error::SftpStat {
            path: "/data/f".into(),
            source: "connection reset by peer".into(),
        });
        let d = Diagnostic::from(err);
        assert_eq!(d.error_type, "Retryable.SftpStat");
        assert_eq!(d.error_message, "stat /data/f: connection reset by peer");
        let d = Diagnostic::from(HandlerError::SecretFormat {
            secret_id: "gzship/ssh".into(),
            reason: "neither private_key nor password is set".into(),
        });
        assert_eq!(d.error_type, "Fatal.SecretFormat");
    }

    /// A worker's panic reaches the master as `Fatal.Panicked`, and the master's own failure
    /// reports it the same way: not retried, and not taken for a cancellation.
    #[test]
    fn panics_cross_both_functions_as_fatal() {
        let panicked = Error::Panicked {
            what: "part assembly".into(),
            message: "attempt to subtract with overflow".into(),
        };
        let d = Diagnostic::from(HandlerError::Core(panicked));
        assert_eq!(d.error_type, "Fatal.Panicked");
        assert_eq!(
            d.error_message,
            "part assembly panicked: attempt to subtract with overflow"
        );
        let body = serde_json::json!({"errorType": d.error_type, "errorMessage": d.error_message});
        let remote = wire_error::remote_error("Unhandled", body.to_string().as_bytes());
        assert!(!remote.is_retryable());
        let failed_task = HandlerError::Core(Error::Task {
            index: 2,
            range: gzship_core::ByteRange::new(0, 10).expect("a valid range"),
            source: Box::new(remote),
        });
        assert_eq!(failed_task.error_type(), "Fatal.Panicked");
        assert_eq!(Diagnostic::from(failed_task).error_type, "Fatal.Panicked");
    }
}
