//! Reading one range: pipelined READs over one or more connections, delivered strictly in
//! order, with the file checked against the planner's stat before the first byte and after the
//! last, and resumption at the first undelivered byte when a connection is lost.
//!
//! The file is checked with FSTAT on its handle, or with STAT on its path where the server
//! answers FSTAT "operation unsupported" (paramiko's default handles, some appliances), as
//! rclone does by default. Handles are closed (SFTP CLOSE) at the end of the range and after a
//! failure the connection survived; a lost connection is only dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use std::sync::atomic::Ordering;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::source::SourceStat;
use crate::types::ByteRange;

use super::connect::{Connection, Shared, answered_in_time, is_eof, is_unsupported, stat_of};

/// A file opened on one connection.
#[derive(Debug)]
struct OpenFile {
    conn: Connection,
    handle: String,
}

impl OpenFile {
    /// Closes the handle (SFTP CLOSE), waiting at most `timeout` for the answer, then the
    /// connection: kept for the source's next request (see `Shared::done`) when `reuse` says
    /// no request is outstanding on it and the CLOSE was answered, closed otherwise. Servers
    /// keep unclosed handles until the connection ends, and some log each one (ProFTPD:
    /// "aborting 1 unclosed file handle").
    async fn close(self, shared: &Arc<Shared>, timeout: Duration, reuse: bool) {
        self.conn.batching.set(0);
        let closed =
            match tokio::time::timeout(timeout, self.conn.sftp.close(self.handle.as_str())).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    debug!(error = %e, "sftp close of a read handle failed");
                    false
                }
                Err(_) => {
                    debug!(?timeout, "sftp close of a read handle got no answer");
                    false
                }
            };
        shared.done(self.conn, reuse && closed).await;
    }
}

/// The most bytes a reading connection's socket gathers before waking the SSH session (see
/// `socket`). Measured on one core, 1 GiB from OpenSSH on 127.0.0.1: 64 KiB saved nothing,
/// 256 KiB (about one 255 KiB READ answer) halved the context switches and cut 3-5% of the
/// job's CPU.
const READ_BATCH: u32 = 256 * 1024;

/// The low-water mark for a connection that keeps `in_flight` READs of `read_size` bytes
/// outstanding: a quarter of those bytes, so that answers still on their way normally reach it,
/// at most [`READ_BATCH`]; none (0) below one OpenSSH packet of 32 KiB, where it would save
/// nothing.
fn read_batch(read_size: u32, in_flight: usize) -> u32 {
    let quarter = u64::from(read_size).saturating_mul(in_flight as u64) / 4;
    let mark = quarter.min(u64::from(READ_BATCH)) as u32;
    if mark < 32 * 1024 { 0 } else { mark }
}

/// Why a READ (or the closing check of the file) failed in a way a new connection may cure,
/// unless the server does not implement the request ([`ReadFailure::is_unsupported`]).
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadFailure {
    #[error("sftp request")]
    Sftp(#[source] SftpError),
    #[error("no answer to an sftp request within {0:?}")]
    Timeout(Duration),
}

impl ReadFailure {
    fn is_unsupported(&self) -> bool {
        matches!(self, ReadFailure::Sftp(e) if is_unsupported(e))
    }
}

/// Why the attributes of the open file could not be had.
#[derive(Debug, thiserror::Error)]
enum AttrsFailure {
    #[error("fstat the opened file")]
    Fstat(#[source] ReadFailure),
    #[error("stat the file by its path (the server does not implement fstat)")]
    Stat(#[source] ReadFailure),
}

impl AttrsFailure {
    fn inner(&self) -> &ReadFailure {
        match self {
            AttrsFailure::Fstat(f) | AttrsFailure::Stat(f) => f,
        }
    }

    fn into_inner(self) -> ReadFailure {
        match self {
            AttrsFailure::Fstat(f) | AttrsFailure::Stat(f) => f,
        }
    }
}

/// Reconnecting did not get the range read.
#[derive(Debug, thiserror::Error)]
#[error("connection lost at byte {at}, {attempts} reconnects did not help")]
struct ReconnectsExhausted {
    at: u64,
    attempts: u32,
    #[source]
    last: ReadFailure,
}

/// Why opening the file failed.
#[derive(Debug, thiserror::Error)]
enum OpenFailure {
    #[error("open the file")]
    Open(#[source] SftpError),
    #[error("open the file")]
    OpenTimeout(#[source] ReadFailure),
    #[error("the server's attributes lack the size")]
    NoSize,
    #[error("the server does not implement READ")]
    ReadUnsupported(#[source] SftpError),
    #[error("the server sent {got} bytes for a READ of {asked}")]
    TooMuch { got: usize, asked: u32 },
}

struct Outcome {
    offset: u64,
    len: u32,
    file: Arc<OpenFile>,
    /// The data as the pieces it arrived in.
    result: std::result::Result<Vec<Bytes>, ReadFailure>,
}

/// What is read: kept apart from the reader's futures (which are not `Sync`) so that it can be
/// borrowed across awaits.
#[derive(Debug)]
struct Target {
    shared: Arc<Shared>,
    path: String,
    range: ByteRange,
    expect: SourceStat,
}

/// The state of one `read_range` stream.
pub(super) struct RangeReader {
    target: Target,
    files: Vec<Arc<OpenFile>>,
    // Covers exactly [delivered, next_request), in offset order.
    inflight: FuturesOrdered<BoxFuture<'static, Outcome>>,
    /// Pieces of the last READ answer not yet handed on.
    ready: VecDeque<Bytes>,
    next_request: u64,
    delivered: u64,
    turn: usize,
    reconnects: u32,
    finished: bool,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeReader")
            .field("path", &self.target.path)
            .field("range", &self.target.range)
            .field("delivered", &self.delivered)
            .field("in_flight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

impl RangeReader {
    /// Opens the file on connections of its own (idle ones of the source first, see
    /// `Shared::first`) and checks it against `expect`; nothing is read yet.
    pub async fn open(
        shared: Arc<Shared>,
        path: String,
        range: ByteRange,
        expect: SourceStat,
    ) -> Result<RangeReader> {
        let target = Target {
            shared,
            path,
            range,
            expect,
        };
        let files = target.open_files(range.start()).await?;
        Ok(RangeReader {
            target,
            files,
            inflight: FuturesOrdered::new(),
            ready: VecDeque::new(),
            next_request: range.start(),
            delivered: range.start(),
            turn: 0,
            reconnects: 0,
            finished: false,
        })
    }

    /// The next chunk in order, an error (after which the stream ends), or `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        if let Some(piece) = self.ready.pop_front() {
            return Some(Ok(piece));
        }
        if self.finished {
            return None;
        }
        match self.step().await {
            Ok(Some(pieces)) => {
                self.ready = pieces.into();
                self.ready.pop_front().map(Ok)
            }
            Ok(None) => {
                self.finished = true;
                // Every READ was answered: the connections are in good order.
                self.close(true).await;
                None
            }
            Err(e) => {
                self.finished = true;
                // The connections that failed were dropped already (see `reconnect`); these
                // still answer, so their handles are closed.
                self.close(false).await;
                Some(Err(e))
            }
        }
    }

    /// The next READ answer's data in order (never empty), or `None` at the end.
    async fn step(&mut self) -> Result<Option<Vec<Bytes>>> {
        loop {
            if self.delivered == self.target.range.end() {
                return Ok(None);
            }
            self.top_up();
            let out = self
                .inflight
                .next()
                .await
                .expect("requests cover [delivered, end) and that is not empty");
            debug_assert_eq!(out.offset, self.delivered);
            match out.result {
                Ok(data) => {
                    let got: usize = data.iter().map(Bytes::len).sum();
                    if got as u64 > u64::from(out.len) {
                        return Err(self.target.read_error(OpenFailure::TooMuch {
                            got,
                            asked: out.len,
                        }));
                    }
                    if got == 0 {
                        return Err(self.target.short(out.offset));
                    }
                    if got < out.len as usize {
                        // A short answer (the server's limit, or a file that shrank): ask for
                        // the rest before anything queued behind it.
                        let rest = out.len - got as u32;
                        let fut = read(
                            out.file.clone(),
                            out.offset + got as u64,
                            rest,
                            self.target.shared.config.tuning.request_timeout,
                        );
                        self.inflight.push_front(fut);
                    }
                    self.delivered += got as u64;
                    self.reconnects = 0;
                    if self.delivered == self.target.range.end() {
                        // Hold the last bytes back until the file is known not to have changed
                        // (its small answer read at once, not after a tick).
                        for file in &self.files {
                            file.conn.batching.set(0);
                        }
                        self.verify_end().await?;
                    }
                    return Ok(Some(data));
                }
                Err(ReadFailure::Sftp(e)) if is_eof(&e) => {
                    return Err(self.target.short(out.offset));
                }
                Err(ReadFailure::Sftp(e)) if is_unsupported(&e) => {
                    return Err(self.target.read_error(OpenFailure::ReadUnsupported(e)));
                }
                Err(failure) => self.reconnect(failure).await?,
            }
        }
    }

    /// Keeps `requests_in_flight` READs per connection outstanding; the consumer not polling
    /// means no new requests, which bounds memory.
    fn top_up(&mut self) {
        let t = &self.target.shared.config.tuning;
        let limit = t.requests_in_flight * self.files.len();
        while self.inflight.len() < limit && self.next_request < self.target.range.end() {
            let file = self.files[self.turn % self.files.len()].clone();
            self.turn += 1;
            let len =
                u64::from(file.conn.read_size).min(self.target.range.end() - self.next_request);
            let len = u32::try_from(len).expect("len is at most read_size, a u32");
            self.inflight
                .push_back(read(file, self.next_request, len, t.request_timeout));
            self.next_request += u64::from(len);
        }
    }

    async fn verify_end(&mut self) -> Result<()> {
        let Some(file) = self.files.first().cloned() else {
            return Ok(());
        };
        match self.target.attrs(&file).await {
            Ok(attrs) => self.target.check(&attrs),
            Err(failure) if failure.inner().is_unsupported() => {
                Err(self.target.read_error(failure))
            }
            // Reconnecting opens and checks the file again, which is the same check.
            Err(failure) => self.reconnect(failure.into_inner()).await,
        }
    }

    async fn reconnect(&mut self, failure: ReadFailure) -> Result<()> {
        self.inflight = FuturesOrdered::new();
        for f in std::mem::take(&mut self.files) {
            // The connection is lost or hung: a CLOSE would fail or wait for nothing, and the
            // server drops the handle with the connection.
            if let Some(f) = Arc::into_inner(f) {
                f.conn.close().await;
            }
        }
        self.reconnects += 1;
        let t = &self.target.shared.config.tuning;
        if self.reconnects > t.reconnect_attempts {
            return Err(self.target.read_error(ReconnectsExhausted {
                at: self.delivered,
                attempts: t.reconnect_attempts,
                last: failure,
            }));
        }
        let delay = t.backoff.delay(self.reconnects);
        warn!(
            addr = %self.target.shared.addr,
            path = %self.target.path,
            range = %self.target.range,
            resume_at = self.delivered,
            attempt = self.reconnects,
            of = t.reconnect_attempts,
            retry_in = ?delay,
            error = %crate::error::chain(&failure),
            "sftp read failed; reconnecting"
        );
        tokio::time::sleep(delay).await;
        self.files = self.target.open_files(self.delivered).await?;
        self.next_request = self.delivered;
        Ok(())
    }

    /// Closes every handle, together, each CLOSE bounded by the request timeout, and then
    /// the connections, or keeps them for the source's next request (`reuse`).
    async fn close(&mut self, reuse: bool) {
        self.inflight = FuturesOrdered::new();
        let shared = &self.target.shared;
        let timeout = shared.config.tuning.request_timeout;
        let closes = std::mem::take(&mut self.files)
            .into_iter()
            .filter_map(Arc::into_inner)
            .map(|f| f.close(shared, timeout, reuse));
        futures::future::join_all(closes).await;
    }
}

impl Target {
    /// Opens the file on `connections` connections (fewer for a small range; idle ones of the
    /// source first), and checks it against `expect` and the range.
    async fn open_files(&self, delivered: u64) -> Result<Vec<Arc<OpenFile>>> {
        let t = &self.shared.config.tuning;
        let per_conn = u64::from(t.request_size) * t.requests_in_flight as u64;
        let wanted = self.range.end() - delivered;
        let n = (wanted.div_ceil(per_conn.max(1)) as usize).clamp(1, t.connections);
        let opens = (0..n).map(|_| self.open_one());
        let mut files = Vec::with_capacity(n);
        let mut failed = None;
        for result in futures::future::join_all(opens).await {
            match result {
                Ok(file) => files.push(file),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            let timeout = t.request_timeout;
            let closes = files
                .into_iter()
                .map(|f| f.close(&self.shared, timeout, false));
            futures::future::join_all(closes).await;
            return Err(e);
        }
        for file in &files {
            file.conn
                .batching
                .set(read_batch(file.conn.read_size, t.requests_in_flight));
        }
        debug!(
            addr = %self.shared.addr,
            path = %self.path,
            connections = n,
            read_size = files[0].conn.read_size,
            "opened for reading"
        );
        Ok(files.into_iter().map(Arc::new).collect())
    }

    async fn open_one(&self) -> Result<OpenFile> {
        let timeout = self.shared.config.tuning.request_timeout;
        let path = self.path.as_str();
        let (conn, opened) = self
            .shared
            .first(
                |conn| {
                    Box::pin(async move {
                        let open = conn
                            .sftp
                            .open(path, OpenFlags::READ, FileAttributes::empty());
                        let got = tokio::time::timeout(timeout, open).await;
                        (conn, got)
                    })
                },
                answered_in_time,
            )
            .await?;
        let handle = match opened {
            Ok(Ok(h)) => h.handle,
            Ok(Err(SftpError::Status(s))) if s.status_code == StatusCode::NoSuchFile => {
                // An answer, and no handle open: the connection serves the next request.
                self.shared.done(conn, true).await;
                return Err(Error::SourceChanged {
                    path: self.path.clone(),
                    detail: "it no longer exists".into(),
                });
            }
            Ok(Err(e)) => {
                // Some servers refuse to open what is not a regular file (gzship-sftpd answers
                // FAILURE for a directory, where OpenSSH opens it and fstat tells): ask what the
                // path is, so that a directory is NotAFile, not a read failure to retry.
                let stat = tokio::time::timeout(timeout, conn.sftp.stat(&self.path)).await;
                let not_a_file = matches!(&stat, Ok(Ok(attrs))
                    if stat_of(&attrs.attrs).is_some_and(|now| !now.is_file));
                let in_order = matches!(e, SftpError::Status(_)) && answered_in_time(&stat);
                self.shared.done(conn, in_order).await;
                if not_a_file {
                    return Err(Error::NotAFile {
                        path: self.path.clone(),
                    });
                }
                return Err(self.read_error(OpenFailure::Open(e)));
            }
            Err(_) => {
                return Err(
                    self.read_error(OpenFailure::OpenTimeout(ReadFailure::Timeout(timeout)))
                );
            }
        };
        let file = OpenFile { conn, handle };
        let checked = match self.attrs(&file).await {
            Ok(attrs) => self.check(&attrs),
            Err(failure) => Err(self.read_error(failure)),
        };
        match checked {
            Ok(()) => Ok(file),
            Err(e) => {
                file.close(&self.shared, timeout, false).await;
                Err(e)
            }
        }
    }

    /// The attributes of the open file: FSTAT on its handle, or STAT on its path once the
    /// server answered FSTAT "operation unsupported". STAT names the path, not the open file: a
    /// file renamed over the path in between would be checked instead of the one being read,
    /// and would then have to match the planned size (and mtime) to go unnoticed.
    async fn attrs(&self, file: &OpenFile) -> std::result::Result<FileAttributes, AttrsFailure> {
        let timeout = self.shared.config.tuning.request_timeout;
        let ask = |r: std::result::Result<std::result::Result<_, SftpError>, _>| match r {
            Ok(Ok(attrs)) => Ok(attrs),
            Ok(Err(e)) => Err(ReadFailure::Sftp(e)),
            Err(_) => Err(ReadFailure::Timeout(timeout)),
        };
        if !self.shared.no_fstat.load(Ordering::Relaxed) {
            let fstat = tokio::time::timeout(timeout, file.conn.sftp.fstat(file.handle.as_str()));
            match ask(fstat.await) {
                Ok(a) => return Ok(a.attrs),
                Err(f) if f.is_unsupported() => {
                    if !self.shared.no_fstat.swap(true, Ordering::Relaxed) {
                        info!(
                            addr = %self.shared.addr,
                            "the server does not implement fstat: files are checked with stat \
                             on their path"
                        );
                    }
                }
                Err(f) => return Err(AttrsFailure::Fstat(f)),
            }
        }
        let stat = tokio::time::timeout(timeout, file.conn.sftp.stat(&self.path));
        ask(stat.await).map(|a| a.attrs).map_err(AttrsFailure::Stat)
    }

    fn check(&self, attrs: &FileAttributes) -> Result<()> {
        let now = stat_of(attrs).ok_or_else(|| self.read_error(OpenFailure::NoSize))?;
        check_against(&self.path, self.range, &self.expect, &now)
    }

    fn short(&self, at: u64) -> Error {
        Error::SourceChanged {
            path: self.path.clone(),
            detail: format!(
                "it ends at byte {at}, inside the range {} being read (it had {} bytes)",
                self.range, self.expect.size
            ),
        }
    }

    fn read_error(&self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::SftpRead {
            path: self.path.clone(),
            range: self.range,
            source: Box::new(source),
        }
    }
}

/// Whether the file `now` is still the file the job was planned on, and holds `range`.
pub(super) fn check_against(
    path: &str,
    range: ByteRange,
    expect: &SourceStat,
    now: &SourceStat,
) -> Result<()> {
    let changed = |detail: String| {
        Err(Error::SourceChanged {
            path: path.to_owned(),
            detail,
        })
    };
    if !now.is_file {
        return Err(Error::NotAFile {
            path: path.to_owned(),
        });
    }
    if let Some(detail) = expect.change_to(now) {
        return changed(detail);
    }
    if range.end() > now.size {
        return changed(format!(
            "it has {} bytes, fewer than the end of range {}",
            now.size, range
        ));
    }
    Ok(())
}

fn read(
    file: Arc<OpenFile>,
    offset: u64,
    len: u32,
    timeout: Duration,
) -> BoxFuture<'static, Outcome> {
    Box::pin(async move {
        let result = match tokio::time::timeout(
            timeout,
            file.conn.sftp.read(file.handle.as_str(), offset, len),
        )
        .await
        {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(e)) => Err(ReadFailure::Sftp(e)),
            Err(_) => Err(ReadFailure::Timeout(timeout)),
        };
        Outcome {
            offset,
            len,
            file,
            result,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(size: u64, mtime: u64) -> SourceStat {
        SourceStat {
            size,
            mtime: Some(mtime),
            is_file: true,
        }
    }

    #[test]
    fn read_batch_is_a_quarter_of_the_bytes_in_flight_within_bounds() {
        assert_eq!(read_batch(261_120, 16), READ_BATCH);
        assert_eq!(read_batch(261_120, 2), 130_560);
        assert_eq!(read_batch(32 * 1024, 4), 32 * 1024);
        assert_eq!(read_batch(32 * 1024, 3), 0);
        assert_eq!(read_batch(u32::MAX, usize::MAX), READ_BATCH);
    }

    #[test]
    fn checks_name_both_values() {
        let r = ByteRange::new(0, 10).unwrap();
        assert!(check_against("/f", r, &stat(10, 5), &stat(10, 5)).is_ok());
        let e = check_against("/f", r, &stat(10, 5), &stat(9, 5)).unwrap_err();
        assert!(matches!(e, Error::SourceChanged { .. }));
        assert!(e.to_string().contains("9 bytes, expected 10"), "{e}");
        let e = check_against("/f", r, &stat(10, 5), &stat(10, 6)).unwrap_err();
        assert!(e.to_string().contains("mtime is 6, expected 5"), "{e}");
        let e = check_against(
            "/f",
            ByteRange::new(0, 11).unwrap(),
            &stat(10, 5),
            &stat(10, 5),
        )
        .unwrap_err();
        assert!(e.to_string().contains("fewer than the end"), "{e}");
        // Without an mtime on either side, the size alone tells.
        let no_mtime = SourceStat {
            mtime: None,
            ..stat(10, 5)
        };
        assert!(check_against("/f", r, &no_mtime, &stat(10, 6)).is_ok());
        assert!(check_against("/f", r, &stat(10, 5), &no_mtime).is_ok());
        let e = check_against("/f", r, &no_mtime, &stat(11, 5)).unwrap_err();
        assert!(e.to_string().contains("11 bytes, expected 10"), "{e}");
        let dir = SourceStat {
            is_file: false,
            ..stat(10, 5)
        };
        assert!(matches!(
            check_against("/f", r, &stat(10, 5), &dir),
            Err(Error::NotAFile { .. })
        ));
    }
}
