//! Entry points for the fuzz targets in `crates/fuzz` (feature `fuzzing`); not part of the API.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::server::{self, Shared};
use crate::{Config, Storage};

/// Serves one connection of a client that sent `requests` (raw HTTP/1.1, pipelined requests
/// allowed) and then closed its side; returns what the server wrote back. The server keeps
/// bodies in memory and starts with the bucket `fuzz` holding one multipart upload of the key
/// `key`, whose id replaces every `UPLOADID` in `requests` (ids are not predictable). Needs a
/// tokio runtime.
pub async fn http_session(requests: &[u8]) -> io::Result<Vec<u8>> {
    let config = Config {
        storage: Storage::Memory,
        buckets: vec!["fuzz".to_owned()],
        ..Config::default()
    };
    let shared = Arc::new(Shared::new(config, SocketAddr::from(([127, 0, 0, 1], 9)))?);
    let created = exchange(
        &shared,
        b"POST /fuzz/key?uploads HTTP/1.1\r\nhost: s3\r\ncontent-length: 0\r\n\r\n".to_vec(),
    )
    .await;
    let created = String::from_utf8_lossy(&created);
    let id = created
        .split_once("<UploadId>")
        .and_then(|(_, rest)| rest.split_once("</UploadId>"))
        .map(|(id, _)| id.to_owned())
        .ok_or_else(|| io::Error::other(format!("no upload created: {created}")))?;
    Ok(exchange(&shared, replace(requests, b"UPLOADID", id.as_bytes())).await)
}

async fn exchange(shared: &Arc<Shared>, requests: Vec<u8>) -> Vec<u8> {
    let written = Arc::new(Mutex::new(Vec::new()));
    let conn = Replay {
        requests,
        at: 0,
        written: written.clone(),
    };
    server::serve_connection(conn, shared.clone(), true).await;
    std::mem::take(&mut *written.lock().unwrap_or_else(|e| e.into_inner()))
}

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// A connection whose client sent `requests` and then half-closed; replies are collected.
struct Replay {
    requests: Vec<u8>,
    at: usize,
    written: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = buf.remaining().min(self.requests.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.requests[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
