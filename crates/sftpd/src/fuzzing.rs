//! Entry points for the fuzz targets in `crates/fuzz` (feature `fuzzing`); not part of the API.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::root::Root;
use crate::sftp::{self, Limits};

/// Serves one SFTP session on the directory `dir` to a client that sent `requests` (length-
/// prefixed SFTP packets, as on the channel) and then closed; returns the encoded replies.
/// Needs a tokio runtime (READs and file system work run on its blocking threads).
pub async fn sftp_session(dir: &Path, requests: &[u8]) -> io::Result<Vec<Bytes>> {
    let root = Arc::new(Root::new(dir)?);
    let limits = Limits {
        max_reads_in_flight: 4,
        max_open_handles: 8,
    };
    Ok(sftp::replay(root, limits, requests).await)
}
