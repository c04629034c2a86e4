//! gzship-s3lite: a lean S3-compatible server for gzship's throughput benchmarks and tests.
//!
//! moto (the correctness server in gzship-testkit) handles about 85 MB/s of uploads and keeps
//! every byte in Python objects; a benchmark against it measures moto. This server speaks just
//! the part of the S3 REST protocol that gzship's `S3Store` uses, on hyper, and by default
//! throws part bodies away after checksumming them, so it costs a fraction of a core per GB/s.
//!
//! What it implements, path-style only (`http://host:port/bucket/key`), any or no signature
//! accepted:
//! - CreateBucket, HeadBucket;
//! - CreateMultipartUpload (content type, `x-amz-meta-*`, `x-amz-checksum-algorithm`);
//! - UploadPart: the body is read at full speed; the ETag is a CRC32C-based tag (cheap) or the
//!   MD5 (as S3, [`EtagKind::Md5`]); `x-amz-checksum-crc32c` is checked when sent (`BadDigest`);
//!   part numbers 1..=10,000 and parts of at most 5 GiB (gzship-core's
//!   [`MAX_PARTS`](gzship_core::types::MAX_PARTS) and
//!   [`MAX_PART_SIZE`](gzship_core::types::MAX_PART_SIZE)), gaps allowed;
//! - CompleteMultipartUpload, refused by S3's rules as gzship-core's
//!   [`check_complete`](gzship_core::store::rules::check_complete) states them (the local store
//!   calls it too): parts ascending (`InvalidPartOrder`), known with matching ETags
//!   (`InvalidPart`), every part but the last at least 5 MiB (`EntityTooSmall`, with S3's XML
//!   error); the object gets S3's composite CRC32C (`<crc>-<parts>`);
//! - AbortMultipartUpload, ListMultipartUploads, ListParts (with paging);
//! - HeadObject (with `x-amz-checksum-mode: ENABLED`), GetObject and DeleteObject;
//! - PutObject of small objects (gzship's job records, at most 64 MiB; kept in memory, or in
//!   the directory, whatever the storage mode, since they are read back) and ListObjectsV2
//!   (with paging).
//!
//! Replies are S3's XML, which aws-sdk-s3's deserializers read. Where bodies go is
//! [`Storage`]: discarded (benchmarks), kept in memory (tests) or in a directory (to check a
//! large object with real decoders).
//!
//! Module map: `server` (listener, routing, handlers), `state` (buckets, uploads, objects),
//! `xml` (replies and the Complete request), [`put`] (a client: stdin to a multipart upload,
//! the `put` subcommand of the binary, for the benchmark's `ssh cat | pigz | upload` row).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use gzship_s3lite::{Config, Server, Storage};
//! let server = Server::start(Config { storage: Storage::Memory, ..Config::default() }).await?;
//! println!("S3 at {}", server.endpoint_url());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod put;
mod server;
mod state;
mod xml;

/// Where part and object bodies go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Storage {
    /// Bodies are checksummed and dropped: HeadObject works, GetObject answers
    /// `NotImplemented`. For benchmarks, so they measure the client and not a disk.
    #[default]
    Discard,
    /// Bodies are kept in memory. For tests with small objects.
    Memory,
    /// Parts are written to files under this directory and completed objects to
    /// `DIR/BUCKET/KEY`, so a large object can be checked with `gzip -t` and friends.
    Dir(PathBuf),
}

/// How part ETags are computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EtagKind {
    /// From the CRC32C and size of the body (which is computed anyway): costs nothing extra.
    /// Clients must treat ETags as opaque, as S3's documentation says.
    #[default]
    Crc32c,
    /// The hex MD5 of the body, as S3 gives for unencrypted parts. About 1.5 ns per byte of one
    /// core: it competes with the client on a small machine.
    Md5,
}

/// Server settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Where bodies go. Default: discarded.
    pub storage: Storage,
    /// How part ETags are made. Default: from the CRC32C.
    pub etag: EtagKind,
    /// Buckets that exist from the start (CreateBucket makes more).
    pub buckets: Vec<String>,
}

/// Serves S3 on `listener` until `shutdown` resolves. Connections already open finish the
/// request they are serving in the background.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let shared = Arc::new(server::Shared::new(config, listener.local_addr()?)?);
    server::serve(listener, shared, shutdown).await
}

/// A server running on the current tokio runtime; stopped when dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl Server {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start(config: Config) -> io::Result<Server> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Binds `addr` and starts serving.
    pub async fn bind(addr: SocketAddr, config: Config) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, config, async move {
            let _ = stopped.await;
        }));
        Ok(Server {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `S3Config::endpoint_url` (with path-style addressing).
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits for the listener to close.
    pub async fn stop(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(res) => res,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
