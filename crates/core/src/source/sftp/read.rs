//! Reading one range: pipelined READs over one or more connections, delivered strictly in
//! order, with the file checked against the planner's stat before the first byte and after the
//! last, and resumption at the first undelivered byte when a connection is lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::source::SourceStat;
use crate::types::ByteRange;

use super::connect::{Connection, Shared, connect, is_eof, stat_of};

/// A file opened on one connection.
#[derive(Debug)]
struct OpenFile {
    conn: Connection,
    handle: String,
}

/// Why a READ (or the closing fstat) failed in a way a new connection may cure.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadFailure {
    #[error("sftp request")]
    Sftp(#[source] SftpError),
    #[error("no answer to an sftp request within {0:?}")]
    Timeout(Duration),
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
    #[error("fstat the opened file")]
    Fstat(#[source] SftpError),
    #[error("fstat the opened file")]
    FstatTimeout(#[source] ReadFailure),
    #[error("the server's attributes lack the size or mtime")]
    NoSizeOrMtime,
    #[error("the server sent {got} bytes for a READ of {asked}")]
    TooMuch { got: usize, asked: u32 },
}

struct Outcome {
    offset: u64,
    len: u32,
    file: Arc<OpenFile>,
    result: std::result::Result<Vec<u8>, ReadFailure>,
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
    /// Connects, opens the file and checks it against `expect`; nothing is read yet.
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
            next_request: range.start(),
            delivered: range.start(),
            turn: 0,
            reconnects: 0,
            finished: false,
        })
    }

    /// The next chunk in order, an error (after which the stream ends), or `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        if self.finished {
            return None;
        }
        match self.step().await {
            Ok(Some(chunk)) => Some(Ok(chunk)),
            Ok(None) => {
                self.finished = true;
                self.close().await;
                None
            }
            Err(e) => {
                self.finished = true;
                self.inflight = FuturesOrdered::new();
                self.files.clear();
                Some(Err(e))
            }
        }
    }

    async fn step(&mut self) -> Result<Option<Bytes>> {
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
                    let got = data.len();
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
                        // Hold the last bytes back until the file is known not to have changed.
                        self.verify_end().await?;
                    }
                    return Ok(Some(Bytes::from(data)));
                }
                Err(ReadFailure::Sftp(e)) if is_eof(&e) => {
                    return Err(self.target.short(out.offset));
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
        let timeout = self.target.shared.config.tuning.request_timeout;
        match tokio::time::timeout(timeout, file.conn.sftp.fstat(file.handle.as_str())).await {
            Ok(Ok(attrs)) => self.target.check(&attrs.attrs),
            // Reconnecting opens and checks the file again, which is the same check.
            Ok(Err(e)) => self.reconnect(ReadFailure::Sftp(e)).await,
            Err(_) => self.reconnect(ReadFailure::Timeout(timeout)).await,
        }
    }

    async fn reconnect(&mut self, failure: ReadFailure) -> Result<()> {
        self.inflight = FuturesOrdered::new();
        for f in std::mem::take(&mut self.files) {
            // Requests of a lost connection fail fast; close what may still be open.
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

    async fn close(&mut self) {
        self.inflight = FuturesOrdered::new();
        for f in std::mem::take(&mut self.files) {
            if let Some(f) = Arc::into_inner(f) {
                f.conn.close().await;
            }
        }
    }
}

impl Target {
    /// Opens `connections` connections (fewer for a small range) and the file on each, and
    /// checks the file against `expect` and the range.
    async fn open_files(&self, delivered: u64) -> Result<Vec<Arc<OpenFile>>> {
        let t = &self.shared.config.tuning;
        let per_conn = u64::from(t.request_size) * t.requests_in_flight as u64;
        let wanted = self.range.end() - delivered;
        let n = (wanted.div_ceil(per_conn.max(1)) as usize).clamp(1, t.connections);
        let opens = (0..n).map(|_| self.open_one());
        let files = futures::future::try_join_all(opens).await?;
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
        let conn = connect(&self.shared).await?;
        let timeout = self.shared.config.tuning.request_timeout;
        let handle = match tokio::time::timeout(
            timeout,
            conn.sftp
                .open(self.path.as_str(), OpenFlags::READ, FileAttributes::empty()),
        )
        .await
        {
            Ok(Ok(h)) => h.handle,
            Ok(Err(SftpError::Status(s))) if s.status_code == StatusCode::NoSuchFile => {
                return Err(Error::SourceChanged {
                    path: self.path.clone(),
                    detail: "it no longer exists".into(),
                });
            }
            Ok(Err(e)) => {
                // Some servers refuse to open what is not a regular file (gzship-sftpd answers
                // FAILURE for a directory, where OpenSSH opens it and fstat tells): ask what the
                // path is, so that a directory is NotAFile, not a read failure to retry.
                let stat = tokio::time::timeout(timeout, conn.sftp.stat(self.path.as_str())).await;
                if let Ok(Ok(attrs)) = stat
                    && stat_of(&attrs.attrs).is_some_and(|now| !now.is_file)
                {
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
        let attrs = match tokio::time::timeout(timeout, conn.sftp.fstat(handle.as_str())).await {
            Ok(Ok(a)) => a.attrs,
            Ok(Err(e)) => return Err(self.read_error(OpenFailure::Fstat(e))),
            Err(_) => {
                return Err(
                    self.read_error(OpenFailure::FstatTimeout(ReadFailure::Timeout(timeout)))
                );
            }
        };
        self.check(&attrs)?;
        Ok(OpenFile { conn, handle })
    }

    fn check(&self, attrs: &FileAttributes) -> Result<()> {
        let now = stat_of(attrs).ok_or_else(|| self.read_error(OpenFailure::NoSizeOrMtime))?;
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
    if now.size != expect.size {
        return changed(format!(
            "its size is {} bytes, expected {}",
            now.size, expect.size
        ));
    }
    if now.mtime != expect.mtime {
        return changed(format!(
            "its mtime is {}, expected {}",
            now.mtime, expect.mtime
        ));
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
            Ok(Ok(data)) => Ok(data.data),
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
            mtime,
            is_file: true,
        }
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
