//! SFTP adapter of [`Source`]: russh (SSH) and gzship's own SFTP v3 client (`session`) on
//! russh-sftp's protocol types.
//!
//! - [`SftpConfig`]: server, user, [`SshAuth`] (private key or password), [`HostKeyPolicy`]
//!   (pinned fingerprint, known_hosts, or an explicit and loud accept-any) and [`SftpTuning`].
//! - [`SftpSource`]: `stat` and `read_range`. Each call runs on connections of its own: ones
//!   an earlier call of the same source is done with (kept idle for 5 s, so the local runner's
//!   first task reads on its master's stat connection and later tasks on the earlier tasks'),
//!   or new ones. A `read_range` keeps many READs in flight (russh-sftp's `File` keeps only a
//!   few), delivers bytes in order, resumes after a lost connection at the first byte not yet
//!   delivered, and fails with [`Error::SourceChanged`] rather than yield bytes of a changed
//!   file.
//!
//! Module map: `config` (the types above), `known_hosts` (OpenSSH known_hosts matching),
//! `connect` (handshake, host key, login, retries, idle connections), `session` (the SFTP
//! requests and answers on one channel, READ data handed on without a copy), `read` (the
//! pipelined range reader), `socket` (the TCP stream, which wakes the SSH session once per
//! 256 KiB while a range streams), `list` (directory listings and probes, for scans).

use std::fmt;
use std::sync::Arc;

use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::source::{ByteStream, DirEntry, Source, SourceStat};
use crate::types::ByteRange;

mod config;
mod connect;
mod known_hosts;
mod list;
mod read;
mod session;
mod socket;

pub use config::{HostKeyPolicy, OPENSSH_MAX_READ, SftpConfig, SftpTuning, SshAuth, SshCipher};
pub use known_hosts::{KnownHosts, Verdict};

pub(crate) use connect::caused_by_final_answer;
use connect::{Shared, answered_in_time, stat_of};
use read::RangeReader;

/// Reads files of one SFTP server. Cheap to share: clone it or put it behind a reference.
#[derive(Clone)]
pub struct SftpSource {
    shared: Arc<Shared>,
}

impl fmt::Debug for SftpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpSource")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl SftpSource {
    /// Validates `config` and decodes the private key (once; an encrypted key is slow to
    /// decode). Makes no connection.
    pub fn new(config: SftpConfig) -> Result<Self> {
        Ok(SftpSource {
            shared: Arc::new(Shared::new(config)?),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SftpConfig {
        &self.shared.config
    }

    /// Closes, politely, the connections kept idle for the next request, and waits for that.
    /// Idle connections close on their own 5 s after their last use, and when the source is
    /// dropped (in the background); a caller about to end, such as a Lambda handler whose
    /// sandbox may be frozen before background work runs, calls this last.
    pub async fn close_idle(&self) {
        self.shared.close_idle().await;
    }
}

/// Why a stat failed (the cause of [`Error::SftpStat`]).
#[derive(Debug, thiserror::Error)]
enum StatFailure {
    #[error("sftp stat request")]
    Sftp(#[source] russh_sftp::client::error::Error),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the server's attributes lack the size")]
    NoSize,
}

impl Source for SftpSource {
    async fn stat(&self, path: &str) -> Result<SourceStat> {
        let timeout = self.shared.config.tuning.request_timeout;
        let (conn, result) = self
            .shared
            .first(
                |conn| {
                    Box::pin(async move {
                        let got = tokio::time::timeout(timeout, conn.sftp.stat(path)).await;
                        (conn, got)
                    })
                },
                answered_in_time,
            )
            .await?;
        self.shared.done(conn, answered_in_time(&result)).await;
        let fail = |source: StatFailure| Error::SftpStat {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let attrs = result
            .map_err(|_| fail(StatFailure::Timeout(timeout)))?
            .map_err(|e| fail(StatFailure::Sftp(e)))?;
        let stat = stat_of(&attrs.attrs).ok_or_else(|| fail(StatFailure::NoSize))?;
        debug!(addr = %self.shared.addr, path, ?stat, "stat");
        if stat.mtime.is_none() && stat.is_file {
            warn!(
                addr = %self.shared.addr,
                path,
                "the server sends no modification time: a change to the file during the job \
                 is detected by its size alone (an in-place rewrite of the same size is not)"
            );
        }
        Ok(stat)
    }

    async fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        list::list(&self.shared, dir).await
    }

    async fn probe(&self, path: &str) -> Result<SourceStat> {
        list::probe(&self.shared, path).await
    }

    async fn read_range(
        &self,
        path: &str,
        range: ByteRange,
        expect: SourceStat,
    ) -> Result<ByteStream> {
        if !expect.is_file {
            return Err(Error::NotAFile {
                path: path.to_owned(),
            });
        }
        let reader = RangeReader::open(self.shared.clone(), path.to_owned(), range, expect).await?;
        Ok(Box::pin(futures::stream::unfold(
            reader,
            |mut reader| async move {
                let item = reader.next_chunk().await?;
                Some((item, reader))
            },
        )))
    }
}
