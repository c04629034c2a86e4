//! How a worker's error crosses the Lambda wire, both ways: the worker's handler encodes it as
//! a [`FunctionError`] (the body of the runtime's `Diagnostic`), the Lambda invoker decodes the
//! body of a failed invoke back into an [`Error::Remote`]. One module owns the format, so the
//! two sides cannot drift.
//!
//! The format:
//! - `errorType` is the error's stable name ([`Error::error_type`]) behind [`RETRYABLE_PREFIX`]
//!   or [`FATAL_PREFIX`]: `Retryable.SftpRead`, `Fatal.SourceChanged`, `Fatal.Panicked`, ... so
//!   the master knows whether to retry without reading the message. A failed task keeps its
//!   worker's name: a master reports `Retryable.SftpRead`, not `Task` or `Remote`.
//! - `errorMessage` is the error's whole chain ([`chain`]).
//! - Lambda's own failures (`Sandbox.Timedout`, `Runtime.ExitError`, ...) arrive in the same
//!   body without a prefix, and count as not retryable. A body that is not such JSON at all is
//!   named after Lambda's `FunctionError` header (`Lambda.Unhandled`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, chain};

/// Prefix of an `errorType` when another attempt can help.
pub const RETRYABLE_PREFIX: &str = "Retryable.";
/// Prefix of an `errorType` when another attempt cannot help.
pub const FATAL_PREFIX: &str = "Fatal.";

/// The names ([`Error::error_type`]) of gzship's errors that can be retryable, so that a
/// Step Functions `Retry` (which has no wildcards) can list every `Retryable.{name}`: SSH and
/// SFTP failures, S3 and invoke errors the SDK classifies as transient. A handler's own
/// retryable errors (the Lambda crate's `SecretFetch`) are added there.
pub const RETRYABLE_NAMES: &[&str] = &["SshConnect", "SftpStat", "SftpRead", "S3", "Invoke"];

/// A function's error as Lambda carries it: the JSON body of the runtime's `Diagnostic`, and of
/// a failed invoke's answer. Unknown fields are accepted: the body is Lambda's, and its own
/// failures may add some (a `stackTrace`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionError {
    /// `Retryable.{name}` or `Fatal.{name}`; Lambda's own type otherwise.
    #[serde(default)]
    pub error_type: String,
    /// The error's whole chain.
    #[serde(default)]
    pub error_message: String,
}

impl FunctionError {
    /// How a handler reports `err`.
    pub fn of(err: &Error) -> FunctionError {
        let (name, retryable) = name_of(err);
        FunctionError::new(name, retryable, chain(err))
    }

    /// An error whose stable name is `name` (as [`Error::error_type`]), whose retryability is
    /// `retryable` and whose whole chain is `message`: for the handlers' own errors (their
    /// environment, their secret), which gzship's [`Error`] does not hold.
    pub fn new(name: &str, retryable: bool, message: impl Into<String>) -> FunctionError {
        FunctionError {
            error_type: encode_error_type(name, retryable),
            error_message: message.into(),
        }
    }

    /// The worker's error as the master sees it: [`Error::Remote`], retryable as the worker
    /// said.
    pub fn into_error(self) -> Error {
        let (error_type, retryable) = decode_error_type(&self.error_type);
        Error::Remote {
            error_type,
            message: self.error_message,
            retryable,
        }
    }

    /// The error in a body that is a function error (JSON with an `errorType`), if it is one.
    pub fn parse(body: &[u8]) -> Option<FunctionError> {
        serde_json::from_slice::<FunctionError>(body)
            .ok()
            .filter(|e| !e.error_type.is_empty())
    }
}

/// The Lambda `errorType` of `err`: [`FunctionError::of`]'s, without building the message (for
/// logs).
pub fn error_type_of(err: &Error) -> String {
    let (name, retryable) = name_of(err);
    encode_error_type(name, retryable)
}

/// The name and retryability `err` crosses the wire with: a failed task's own, and a remote
/// worker's as it reported them.
fn name_of(err: &Error) -> (&str, bool) {
    match err {
        Error::Task { source, .. } => name_of(source),
        Error::Remote {
            error_type,
            retryable,
            ..
        } => (error_type, *retryable),
        _ => (err.error_type(), err.is_retryable()),
    }
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

/// The worker's error from a failed invoke's body; `function_error` is Lambda's
/// `FunctionError` header (`Unhandled` or `Handled`), which names the error when the body does
/// not. A body without a message is quoted instead.
pub fn remote_error(function_error: &str, body: &[u8]) -> Error {
    let parsed = serde_json::from_slice::<FunctionError>(body).ok();
    let error_type = parsed
        .as_ref()
        .map(|p| p.error_type.clone())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| format!("Lambda.{function_error}"));
    let error_message = parsed
        .map(|p| p.error_message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| excerpt(body));
    FunctionError {
        error_type,
        error_message,
    }
    .into_error()
}

/// The start of a body, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
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
    use crate::ByteRange;

    /// Every kind of error that can be retryable is listed in [`RETRYABLE_NAMES`].
    #[test]
    fn retryable_names_cover_every_retryable_kind() {
        let range = ByteRange::new(0, 1).unwrap();
        let retryable = [
            Error::SshConnect {
                addr: "h:22".into(),
                source: "reset".into(),
            },
            Error::SftpStat {
                path: "/f".into(),
                source: "reset".into(),
            },
            Error::SftpRead {
                path: "/f".into(),
                range,
                source: "reset".into(),
            },
            Error::Invoke {
                index: 0,
                retryable: true,
                source: "throttled".into(),
            },
        ];
        for err in &retryable {
            assert!(err.is_retryable(), "{err:?}");
            assert!(RETRYABLE_NAMES.contains(&err.error_type()), "{err:?}");
        }
        assert!(RETRYABLE_NAMES.contains(&"S3"));
    }

    #[test]
    fn error_types_round_trip_with_retryability() {
        let read = Error::SftpRead {
            path: "/f".into(),
            range: ByteRange::new(0, 1).unwrap(),
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

    /// What a worker's handler encodes, the master decodes: name, retryability and message.
    #[test]
    fn errors_cross_the_wire_and_back() {
        let range = ByteRange::new(0, 10).unwrap();
        let cases = [
            Error::SftpRead {
                path: "/f".into(),
                range,
                source: "connection reset by peer".into(),
            },
            Error::Panicked {
                what: "the source reader of task 3".into(),
                message: "index 9 out of range".into(),
            },
            Error::Cancelled {
                reason: "the job was stopped".into(),
            },
            Error::BadReport {
                index: None,
                reason: "part numbers do not ascend at part 7".into(),
            },
        ];
        for err in cases {
            let body = serde_json::to_vec(&FunctionError::of(&err)).unwrap();
            let back = remote_error("Unhandled", &body);
            let Error::Remote {
                error_type,
                message,
                retryable,
            } = &back
            else {
                panic!("{back:?}");
            };
            assert_eq!(error_type, err.error_type(), "{err}");
            assert_eq!(*retryable, err.is_retryable(), "{err}");
            assert_eq!(message, &chain(&err));
            // A master that fails with the remote error reports the worker's own type.
            let failed = Error::Task {
                index: 3,
                range,
                source: Box::new(back),
            };
            assert_eq!(error_type_of(&failed), error_type_of(&err));
        }
        let panicked = FunctionError::of(&Error::Panicked {
            what: "part assembly".into(),
            message: "oops".into(),
        });
        assert_eq!(panicked.error_type, "Fatal.Panicked");
        assert_eq!(panicked.error_message, "part assembly panicked: oops");
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
        // Lambda's body may carry more than the two fields.
        let err = remote_error(
            "Unhandled",
            br#"{"errorType":"Runtime.ExitError","errorMessage":"exit status 101","trace":[]}"#,
        );
        assert!(err.to_string().contains("exit status 101"), "{err}");
    }

    #[test]
    fn only_bodies_with_an_error_type_parse_as_function_errors() {
        let parsed = FunctionError::parse(br#"{"errorType":"Fatal.NotAllowed"}"#).unwrap();
        assert_eq!(parsed.error_message, "");
        assert!(FunctionError::parse(br#"{"errorMessage":"x"}"#).is_none());
        assert!(FunctionError::parse(b"<html>").is_none());
        assert!(FunctionError::parse(br#"{"index":0}"#).is_none());
    }
}
