//! Where the bytes come from: the [`Source`] trait and its SFTP adapter.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::types::ByteRange;

pub mod sftp;

/// What `stat` says of the source file. The master plans on it and every worker checks the file
/// still matches it before (and after) reading, so a file that changes mid-job fails the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
    /// Whether it is a regular file (not a directory, device or socket).
    pub is_file: bool,
}

/// A stream of byte chunks, in order.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A remote file server.
///
/// Contract:
/// - `stat` does not follow the caller's expectations; it reports what is there now.
/// - `read_range` yields exactly `range.len()` bytes, in order, in chunks of any size, then ends.
///   It never yields a byte twice or skips one, even when it reconnects after a dropped
///   connection. Before yielding anything it checks the file against `expect` (size and mtime);
///   if the file is shorter than the range, or changed, the stream ends with
///   [`Error::SourceChanged`](crate::Error::SourceChanged) instead of yielding wrong bytes.
/// - Dropping the stream cancels outstanding reads and closes the connection.
/// - Implementations are cheap to share (`&self`); each `read_range` may open its own connections.
pub trait Source: Send + Sync {
    /// Stats `path`.
    fn stat(&self, path: &str) -> impl Future<Output = Result<SourceStat>> + Send;

    /// Streams the bytes of `range` of `path`, which must still match `expect`.
    fn read_range(
        &self,
        path: &str,
        range: ByteRange,
        expect: SourceStat,
    ) -> impl Future<Output = Result<ByteStream>> + Send;
}
