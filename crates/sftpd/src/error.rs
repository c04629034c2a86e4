//! [`Error`]: why a server could not start.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why [`SftpServer::start`](crate::SftpServer::start) failed. Errors inside a running server
/// (a client's bad packet, a failed read) go to that client as SFTP status codes and to
/// `tracing`, never here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The root directory is missing or unreadable.
    #[error("open the served root directory {path}")]
    Root {
        /// The configured root.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The root exists but is not a directory.
    #[error("serve {path}: the root is not a directory")]
    RootNotDirectory {
        /// The configured root.
        path: PathBuf,
    },
    /// Neither a password nor an authorized key was configured, so nobody could log in.
    #[error("start the sftp server: no password and no authorized key for user {user:?}")]
    NoCredentials {
        /// The configured user.
        user: String,
    },
    /// The listening socket could not be bound.
    #[error("listen on {addr}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}
