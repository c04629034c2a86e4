//! The library's one error type. Variants name the operation that failed and carry its
//! identifiers; the cause stays attached as `#[source]`.

use crate::types::{ByteRange, PartNumber};

/// A boxed cause from an adapter (SSH, SFTP, S3, Lambda, I/O).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with gzship's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in gzship.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the user or on the wire is malformed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being validated ("part number", "task", ...).
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// A setting (a flag or a `GZSHIP_*` variable) is missing or malformed.
    #[error("setting {name}: {reason}")]
    Setting {
        /// The setting's environment variable name (`GZSHIP_PART_MEMORY`).
        name: &'static str,
        /// What is wrong and what to give instead.
        reason: String,
    },

    /// A `sftp://` or `s3://` URL does not parse.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Which part is wrong.
        reason: String,
    },

    /// The planner refuses a job it cannot run within S3's or the invoker's limits.
    #[error("cannot plan a job for {size} bytes: {reason}")]
    Plan {
        /// Source size in bytes.
        size: u64,
        /// What limit would be broken and what to change.
        reason: String,
    },

    /// A path or destination is outside what the configuration allows.
    #[error("{what} {value:?} is not allowed: {reason}")]
    NotAllowed {
        /// "source path" or "destination".
        what: &'static str,
        /// The refused value.
        value: String,
        /// The configured allow-list, in words.
        reason: String,
    },

    /// TCP connect or SSH handshake to the source server failed.
    #[error("connect to ssh server {addr}")]
    SshConnect {
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// The server's host key is not the one expected.
    #[error("host key of {addr} is not trusted: the server presented {presented}; {expected}")]
    HostKey {
        /// `host:port`.
        addr: String,
        /// The fingerprint the server presented (`SHA256:...`).
        presented: String,
        /// What was expected, in words.
        expected: String,
    },

    /// The server refused every credential offered.
    #[error("authenticate as {user:?} to {addr} with {method}: the server refused it")]
    SshAuth {
        /// `host:port`.
        addr: String,
        /// Login name.
        user: String,
        /// "private key" or "password".
        method: &'static str,
    },

    /// Stat of the source file failed.
    #[error("stat {path}")]
    SftpStat {
        /// Remote path.
        path: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// Listing a directory of the source server failed (missing, not a directory, no access).
    #[error("list the directory {path}")]
    SftpList {
        /// Remote directory.
        path: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// Reading a range of the source failed.
    #[error("read {range} of {path}")]
    SftpRead {
        /// Remote path.
        path: String,
        /// The range being read.
        range: ByteRange,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// The source is not a regular file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// Remote path.
        path: String,
    },

    /// The source changed (size or mtime) since the job was planned, or is shorter than a range.
    #[error("{path} changed while it was being shipped: {detail}")]
    SourceChanged {
        /// Remote path.
        path: String,
        /// What differs, with both values.
        detail: String,
    },

    /// An S3 operation failed.
    #[error("{op} s3://{bucket}/{key}")]
    S3 {
        /// The operation in words ("create multipart upload of", "upload part 7 of", ...).
        op: String,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// S3's error code (`NoSuchUpload`, `EntityTooSmall`, ...), when the store answered with
        /// one; `None` for a failure to reach it or to read its reply.
        code: Option<String>,
        /// Whether retrying the same request can help.
        retryable: bool,
        /// The cause: the SDK error, or the local store's refusal.
        #[source]
        source: BoxError,
    },

    /// A task produced more parts than its window holds (a planner bug, or a lying bound).
    #[error("task needs part {needed} but its window ends at part {last}")]
    PartWindowExceeded {
        /// The part number that would be used.
        needed: u32,
        /// The window's last part.
        last: PartNumber,
    },

    /// Compression failed.
    #[error("compress block at offset {offset}")]
    Compress {
        /// Source offset of the block.
        offset: u64,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A task failed (the master's view of a worker error).
    #[error("task {index} ({range})")]
    Task {
        /// Task index in the plan.
        index: u32,
        /// The task's range.
        range: ByteRange,
        /// The worker's error.
        #[source]
        source: Box<Error>,
    },

    /// A task's report does not match its task, or the reports together do not make a legal
    /// object.
    #[error("{} inconsistent: {reason}", reports_of(*.index))]
    BadReport {
        /// The task whose report is wrong; `None` when the fault lies between reports (part
        /// numbers that do not ascend across tasks, ...).
        index: Option<u32>,
        /// What is wrong.
        reason: String,
    },

    /// Invoking a worker failed before it could report.
    #[error("invoke worker for task {index}")]
    Invoke {
        /// Task index.
        index: u32,
        /// Whether another attempt can help.
        retryable: bool,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A remote worker reported an error (as a type and message, over the wire).
    #[error("worker failed with {error_type}: {message}")]
    Remote {
        /// Stable error type (see [`Error::error_type`]).
        error_type: String,
        /// The worker's message.
        message: String,
        /// Whether the worker said a retry can help.
        retryable: bool,
    },

    /// Local I/O (the local store, key files, ...).
    #[error("{op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file involved.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The worker's spool directory has no room for the parts it must hold on disk.
    #[error(
        "spooling parts of {part_size} bytes needs {needed} bytes free in {dir}, which has \
         {available}: give the worker more temporary storage (on Lambda, the function's \
         EphemeralStorage, up to 10240 MB) or more part_memory"
    )]
    SpoolSpace {
        /// The spool directory.
        dir: String,
        /// The plan's part size.
        part_size: u64,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },

    /// The job was cancelled (a sibling failed, or the caller gave up).
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why.
        reason: String,
    },

    /// Another unfinished job already writes the destination: two jobs writing one key would
    /// race to complete it.
    #[error(
        "an unfinished job already writes {destination}: its record is {job} (resume it, or \
         abort it to start over)"
    )]
    JobExists {
        /// The destination.
        destination: String,
        /// The URL of the other job's record.
        job: String,
    },

    /// A scan's job found its destination already holding an object of this very source
    /// (size and mtime recorded in its metadata): another scan shipped it first.
    #[error("{destination} already holds this source ({source_url}): another run shipped it")]
    AlreadyShipped {
        /// The destination.
        destination: String,
        /// The source.
        source_url: String,
    },

    /// A task gzship spawned panicked: a bug, which another attempt would run into again.
    #[error("{what} panicked: {message}")]
    Panicked {
        /// What the task was doing ("the source reader of task 3", ...).
        what: String,
        /// The panic's message, or what it carried instead of one.
        message: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }

    /// A local I/O failure: `op` names what was attempted on `path`.
    pub fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// The failure of a spawned task doing `what`, from its [`JoinError`](tokio::task::JoinError):
    /// [`Error::Panicked`] with the panic's message if it panicked, else [`Error::Cancelled`]
    /// (the runtime dropped it, as when it shuts down).
    pub fn from_join(what: impl Into<String>, err: tokio::task::JoinError) -> Error {
        let what = what.into();
        match err.try_into_panic() {
            Ok(payload) => Error::Panicked {
                what,
                message: panic_message(payload.as_ref()),
            },
            Err(_) => Error::Cancelled {
                reason: format!("{what} was cancelled before it ended"),
            },
        }
    }

    /// S3's error code of a failed S3 operation (also inside a failed [`Error::Task`]), when
    /// the store answered with one: classify by this, never by message text.
    pub fn s3_code(&self) -> Option<&str> {
        match self {
            Error::S3 { code, .. } => code.as_deref(),
            Error::Task { source, .. } => source.s3_code(),
            _ => None,
        }
    }

    /// Whether repeating the failed operation (or task) can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::SshConnect { .. } => true,
            // Unless the server answered that it does not implement the request or that the
            // path does not exist: asking again gets the same answer.
            Error::SftpRead { source, .. } | Error::SftpStat { source, .. } => {
                !crate::source::sftp::caused_by_final_answer(source.as_ref())
            }
            Error::S3 { retryable, .. }
            | Error::Invoke { retryable, .. }
            | Error::Remote { retryable, .. } => *retryable,
            Error::Task { source, .. } => source.is_retryable(),
            // A bug: the same input runs into it again.
            Error::Panicked { .. } => false,
            _ => false,
        }
    }

    /// A stable name for the error's kind, used as the Lambda `error_type` and in JSON reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::Invalid { .. } | Error::InvalidUrl { .. } => "InvalidInput",
            Error::Setting { .. } => "Config",
            Error::Plan { .. } => "PlanRejected",
            Error::NotAllowed { .. } => "NotAllowed",
            Error::SshConnect { .. } => "SshConnect",
            Error::HostKey { .. } => "HostKeyRejected",
            Error::SshAuth { .. } => "SshAuth",
            Error::SftpStat { .. } => "SftpStat",
            Error::SftpList { .. } => "SftpList",
            Error::SftpRead { .. } => "SftpRead",
            Error::NotAFile { .. } => "NotAFile",
            Error::SourceChanged { .. } => "SourceChanged",
            Error::S3 { .. } => "S3",
            Error::PartWindowExceeded { .. } => "PartWindowExceeded",
            Error::Compress { .. } => "Compress",
            Error::Task { source, .. } => source.error_type(),
            Error::BadReport { .. } => "BadReport",
            Error::Invoke { .. } => "Invoke",
            Error::Remote { .. } => "Remote",
            Error::Io { .. } => "Io",
            Error::SpoolSpace { .. } => "SpoolSpace",
            Error::Cancelled { .. } => "Cancelled",
            Error::JobExists { .. } => "JobExists",
            Error::AlreadyShipped { .. } => "AlreadyShipped",
            Error::Panicked { .. } => "Panicked",
        }
    }
}

/// The subject of a [`Error::BadReport`] message.
fn reports_of(index: Option<u32>) -> String {
    match index {
        Some(index) => format!("the report of task {index} is"),
        None => "the task reports are".to_owned(),
    }
}

/// The message of a panic's payload: `panic!` carries a `&str` or a `String`;
/// `std::panic::panic_any` may carry anything.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Formats an error with its whole chain of causes: `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_task_is_a_bug_not_a_cancellation() {
        let joined = tokio::spawn(async { panic!("index 9 out of range") })
            .await
            .unwrap_err();
        let err = Error::from_join("the source reader of task 3", joined);
        assert!(matches!(err, Error::Panicked { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the source reader of task 3 panicked: index 9 out of range"
        );
        assert_eq!(err.error_type(), "Panicked");
        assert!(!err.is_retryable());

        // A formatted message is a `String`; `panic_any` may carry anything.
        let part = 7;
        let joined = tokio::spawn(async move { panic!("part {part} is missing") })
            .await
            .unwrap_err();
        let err = Error::from_join("upload", joined);
        assert_eq!(err.to_string(), "upload panicked: part 7 is missing");
        let joined = tokio::spawn(async { std::panic::panic_any(42_u8) })
            .await
            .unwrap_err();
        let err = Error::from_join("upload", joined);
        assert_eq!(
            err.to_string(),
            "upload panicked: a panic without a message"
        );
    }

    #[test]
    fn bad_reports_name_a_task_only_when_one_is_at_fault() {
        let one = Error::BadReport {
            index: Some(3),
            reason: "it uploaded no part".into(),
        };
        assert_eq!(
            one.to_string(),
            "the report of task 3 is inconsistent: it uploaded no part"
        );
        let all = Error::BadReport {
            index: None,
            reason: "part numbers do not ascend at part 7".into(),
        };
        assert_eq!(
            all.to_string(),
            "the task reports are inconsistent: part numbers do not ascend at part 7"
        );
    }

    #[tokio::test]
    async fn an_aborted_task_is_a_cancellation() {
        let handle = tokio::spawn(std::future::pending::<()>());
        handle.abort();
        let err = Error::from_join("upload of part 2", handle.await.unwrap_err());
        assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "cancelled: upload of part 2 was cancelled before it ended"
        );
        assert_eq!(err.error_type(), "Cancelled");
    }
}
