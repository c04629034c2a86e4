//! Directory listing (OPENDIR, READDIR until EOF, STAT of each symlink) and the probe of one
//! file (OPEN for reading, FSTAT), for scans of a remote directory.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tracing::debug;

use crate::error::{Error, Result};
use crate::source::{DirEntry, EntryKind, SourceStat};

use super::connect::{Connection, Shared, is_eof, stat_of};

/// Why a listing or a probe failed (the cause of [`Error::SftpList`] or [`Error::SftpStat`]).
#[derive(Debug, thiserror::Error)]
enum ListFailure {
    #[error("{0}")]
    Sftp(&'static str, #[source] SftpError),
    #[error("{0}: no answer within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the server's attributes lack the size or mtime")]
    Incomplete,
}

/// Whether the connection is in good order after a listing or a probe: it ended with the
/// server's answers (a status answer included), not a lost or silent connection.
fn answered<T>(result: &std::result::Result<T, ListFailure>) -> bool {
    matches!(
        result,
        Ok(_) | Err(ListFailure::Sftp(_, SftpError::Status(_)) | ListFailure::Incomplete)
    )
}

/// Runs `work`, a listing or a probe, on a connection of the source's (`Shared::first`), and
/// keeps the connection for the next request if `work` left it in order.
async fn on_connection<'a, T>(
    shared: &Arc<Shared>,
    work: impl Fn(Connection) -> BoxFuture<'a, (Connection, (Answer<T>, bool))>,
) -> Result<Answer<T>> {
    let (conn, (result, in_order)) = shared.first(work, |(got, _)| answered(got)).await?;
    shared.done(conn, in_order && answered(&result)).await;
    Ok(result)
}

/// What a listing or a probe got.
type Answer<T> = std::result::Result<T, ListFailure>;

/// Runs one SFTP request with the request timeout; `what` names it in the error.
async fn request<T>(
    timeout: Duration,
    what: &'static str,
    call: impl Future<Output = std::result::Result<T, SftpError>>,
) -> std::result::Result<T, ListFailure> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ListFailure::Timeout(what, timeout))?
        .map_err(|e| ListFailure::Sftp(what, e))
}

/// Lists `dir` on one connection of its own.
pub(super) async fn list(shared: &Arc<Shared>, dir: &str) -> Result<Vec<DirEntry>> {
    let timeout = shared.config.tuning.request_timeout;
    let result = on_connection(shared, |conn| {
        Box::pin(async move {
            let mut in_order = true;
            let got = list_on(&conn, timeout, dir, &mut in_order).await;
            (conn, (got, in_order))
        })
    })
    .await?;
    let entries = result.map_err(|e| Error::SftpList {
        path: dir.to_owned(),
        source: Box::new(e),
    })?;
    debug!(addr = %shared.addr, dir, entries = entries.len(), "listed");
    Ok(entries)
}

/// Lists `dir` on `conn`; clears `in_order` when a request whose failure does not fail the
/// listing (the CLOSE, a symlink's STAT) got no answer, or failed: its handle may be open.
async fn list_on(
    conn: &Connection,
    timeout: Duration,
    dir: &str,
    in_order: &mut bool,
) -> std::result::Result<Vec<DirEntry>, ListFailure> {
    let handle = request(timeout, "open the directory", conn.sftp.opendir(dir))
        .await?
        .handle;
    let mut raw = Vec::new();
    let read = loop {
        match request(
            timeout,
            "read the directory",
            conn.sftp.readdir(handle.as_str()),
        )
        .await
        {
            Ok(name) => raw.extend(name.files),
            Err(ListFailure::Sftp(_, e)) if is_eof(&e) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // The handle is closed either way; a failed close loses nothing but the connection.
    if request(timeout, "close the directory", conn.sftp.close(&handle))
        .await
        .is_err()
    {
        *in_order = false;
    }
    read?;
    let mut entries = Vec::with_capacity(raw.len());
    for file in raw {
        if file.filename == "." || file.filename == ".." {
            continue;
        }
        let kind = if file.attrs.is_symlink() {
            let target = format!("{}/{}", dir.trim_end_matches('/'), file.filename);
            match request(
                timeout,
                "stat the symlink's target",
                conn.sftp.stat(&target),
            )
            .await
            {
                Ok(attrs) => kind_of(&attrs.attrs),
                Err(e) => {
                    // A broken link is an answer; silence or a lost channel is not.
                    if !matches!(e, ListFailure::Sftp(_, SftpError::Status(_))) {
                        *in_order = false;
                    }
                    EntryKind::Other(format!("a symlink that cannot be followed: {e}"))
                }
            }
        } else {
            kind_of(&file.attrs)
        };
        entries.push(DirEntry {
            name: file.filename,
            kind,
        });
    }
    Ok(entries)
}

fn kind_of(attrs: &FileAttributes) -> EntryKind {
    if attrs.is_dir() {
        return EntryKind::Dir;
    }
    match stat_of(attrs) {
        Some(stat) if stat.is_file => EntryKind::File(stat),
        Some(_) => EntryKind::Other("not a regular file".into()),
        None => EntryKind::Other("the server's attributes lack the size or mtime".into()),
    }
}

/// Opens `path` for reading and stats the open file, on one connection of its own.
pub(super) async fn probe(shared: &Arc<Shared>, path: &str) -> Result<SourceStat> {
    let timeout = shared.config.tuning.request_timeout;
    let result = on_connection(shared, |conn| {
        Box::pin(async move {
            let mut in_order = true;
            let got = probe_on(&conn, timeout, path, &mut in_order).await;
            (conn, (got, in_order))
        })
    })
    .await?;
    result.map_err(|e| Error::SftpStat {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// Probes `path` on `conn`; clears `in_order` as [`list_on`] does when the CLOSE failed.
async fn probe_on(
    conn: &Connection,
    timeout: Duration,
    path: &str,
    in_order: &mut bool,
) -> std::result::Result<SourceStat, ListFailure> {
    let open = conn
        .sftp
        .open(path, OpenFlags::READ, FileAttributes::empty());
    let handle = request(timeout, "open the file for reading", open)
        .await?
        .handle;
    let attrs = request(
        timeout,
        "fstat the opened file",
        conn.sftp.fstat(handle.as_str()),
    )
    .await;
    if request(timeout, "close the file", conn.sftp.close(&handle))
        .await
        .is_err()
    {
        *in_order = false;
    }
    stat_of(&attrs?.attrs).ok_or(ListFailure::Incomplete)
}
