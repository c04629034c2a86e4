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
    /// Modification time, seconds since the Unix epoch; `None` where the server sends none
    /// (some appliance servers), and then a change to the file is told by its size alone.
    /// Absent from JSON when `None`, so records and tasks with an mtime read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<u64>,
    /// Whether it is a regular file (not a directory, device or socket).
    pub is_file: bool,
}

impl SourceStat {
    /// What tells `now`, a later stat of the same path, from this one, in words ("its size
    /// is 10 bytes, expected 9"); `None` when it may be the same file. Mtimes count only when
    /// both stats carry one. The type is left to the caller, which has its own error for a
    /// path that is no longer a regular file.
    pub fn change_to(&self, now: &SourceStat) -> Option<String> {
        if now.size != self.size {
            return Some(format!(
                "its size is {} bytes, expected {}",
                now.size, self.size
            ));
        }
        match (self.mtime, now.mtime) {
            (Some(was), Some(is)) if was != is => {
                Some(format!("its mtime is {is}, expected {was}"))
            }
            _ => None,
        }
    }

    /// "mtime 1700000000", or "no mtime" where the server sent none: for messages.
    pub fn mtime_words(&self) -> String {
        match self.mtime {
            Some(t) => format!("mtime {t}"),
            None => "no mtime".to_owned(),
        }
    }
}

/// One entry of a listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name in its directory (no `/`).
    pub name: String,
    /// What it is, symlinks followed.
    pub kind: EntryKind,
}

/// What a directory entry is, symlinks followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file, or a symlink to one, and its stat.
    File(SourceStat),
    /// A directory, or a symlink to one.
    Dir,
    /// Anything else (a device, a socket, a symlink that cannot be followed): why it is not a
    /// file.
    Other(String),
}

/// A stream of byte chunks, in order.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A remote file server.
///
/// Contract:
/// - `stat` does not follow the caller's expectations; it reports what is there now.
/// - `read_range` yields exactly `range.len()` bytes, in order, in chunks of any size, then ends.
///   It never yields a byte twice or skips one, even when it reconnects after a dropped
///   connection. Before yielding anything it checks the file against `expect` (size, and mtime
///   where the server sends one: [`SourceStat::change_to`]); if the file is shorter than the
///   range, or changed, the stream ends with
///   [`Error::SourceChanged`](crate::Error::SourceChanged) instead of yielding wrong bytes.
/// - Dropping the stream cancels outstanding reads and closes the connection.
/// - Implementations are cheap to share (`&self`); each call may open connections of its own,
///   and may keep them, after the call, for the next (the SFTP source: 5 s, or until dropped).
pub trait Source: Send + Sync {
    /// Stats `path`.
    fn stat(&self, path: &str) -> impl Future<Output = Result<SourceStat>> + Send;

    /// Lists the directory `dir`: every entry but `.` and `..`, in the server's order, each
    /// symlink followed. Fails if `dir` is missing or not a directory.
    fn list(&self, dir: &str) -> impl Future<Output = Result<Vec<DirEntry>>> + Send;

    /// Opens `path` for reading and stats it: a second stat that also tells whether the file
    /// can be read (a scan checks each file so before shipping it).
    fn probe(&self, path: &str) -> impl Future<Output = Result<SourceStat>> + Send;

    /// Streams the bytes of `range` of `path`, which must still match `expect`.
    fn read_range(
        &self,
        path: &str,
        range: ByteRange,
        expect: SourceStat,
    ) -> impl Future<Output = Result<ByteStream>> + Send;
}
