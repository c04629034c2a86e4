//! The TCP stream under an SSH connection, and how often reading it wakes the SSH session.
//!
//! OpenSSH sends channel data in packets of at most 32 KiB, and the kernel reports the socket
//! readable as each one arrives: ~32,000 wakeups of a tokio thread per GiB read, and on a
//! machine whose cores all compress, each one preempts a compression thread. While a range
//! streams, its reader raises the socket's low-water mark ([`ReadBatching::set`], which sets
//! `SO_RCVLOWAT`): the kernel then signals the socket only once that many bytes are queued,
//! and the session decrypts them all in one go. The mark delays bytes, never withholds them:
//! while it is raised, bytes below it that stop coming (the last answers of a range, a small
//! message from the server) are read after a tick: [`TICK`], doubling while ticks find nothing
//! (a reader held back by compression or uploads asks for nothing) up to [`LONGEST_TICK`].
//!
//! Measured on 2 cores of an AMD EPYC (KVM guest), 1 GiB of logs from OpenSSH on 127.0.0.1,
//! `gzship run --tasks 1` pinned to one core, with and without a 256 KiB mark alternately,
//! three runs: context switches per job 25-32 k -> 13.1-13.4 k, CPU over compression alone's
//! 1.095-1.114x -> 1.045-1.071x, throughput 0.879-0.892x -> 0.912-0.936x of compression
//! alone's; ticks that double while they find nothing then took the switches to 10.1-10.4 k
//! (a reader held back by compression had been woken every millisecond). On two cores within
//! the noise (bench/results/2026-12-01-issue15-read-batching.md).

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, setsockopt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tracing::debug;

// nix names no `SO_RCVLOWAT`; its macro for socket options defines it (the expansion refers to
// `libc` by that name).
use nix::libc;
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
sockopt_impl!(
    /// `SO_RCVLOWAT`: the bytes that must be queued before the socket reads as readable.
    RcvLowat,
    Both,
    libc::SOL_SOCKET,
    libc::SO_RCVLOWAT,
    i32
);

/// How long bytes below a raised mark wait before they are read anyway (tokio's timers count
/// whole milliseconds).
const TICK: Duration = Duration::from_millis(1);

/// The longest tick, reached after ticks that found nothing: at most 8 ms of delay for bytes
/// that arrive after a pause, a wakeup per 8 ms while the connection has nothing to read.
const LONGEST_TICK: Duration = Duration::from_millis(8);

/// The low-water mark a connection's reader asks of its socket; the socket applies it at its
/// next read (while a mark is raised, at the latest when the current tick ends: at most
/// [`LONGEST_TICK`]).
#[derive(Debug, Clone, Default)]
pub(super) struct ReadBatching(Arc<AtomicU32>);

impl ReadBatching {
    /// Wakes the session once `bytes` are queued; 0 lowers the mark back to every arrival.
    pub fn set(&self, bytes: u32) {
        self.0.store(bytes, Ordering::Relaxed);
    }

    fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An SSH connection's TCP stream (see the module docs). Writes go straight through.
#[derive(Debug)]
pub(super) struct SshSocket {
    stream: TcpStream,
    batching: ReadBatching,
    /// The mark in force on the socket; 0: the kernel's default of one byte.
    applied: u32,
    /// While a mark is raised: when to read whatever is queued below it.
    tick: Option<Pin<Box<Sleep>>>,
    /// The next tick's length: [`TICK`], doubled by each tick that found nothing.
    tick_len: Duration,
}

impl SshSocket {
    pub fn new(stream: TcpStream, batching: ReadBatching) -> Self {
        SshSocket {
            stream,
            batching,
            applied: 0,
            tick: None,
            tick_len: TICK,
        }
    }

    /// Sets the mark the reader asked for, if it changed. A kernel that refuses leaves the
    /// socket signalling every arrival, which costs wakeups, not bytes.
    fn apply(&mut self) {
        let wanted = self.batching.get();
        if wanted == self.applied {
            return;
        }
        let mark = i32::try_from(wanted.max(1)).unwrap_or(i32::MAX);
        if let Err(e) = setsockopt(&self.stream, RcvLowat, &mark) {
            debug!(mark, error = %e, "could not set SO_RCVLOWAT on the ssh socket");
        }
        self.applied = wanted;
        if wanted == 0 {
            self.untick();
        }
    }

    /// Bytes came (or the mark is down): the next pause starts at the shortest tick.
    fn untick(&mut self) {
        self.tick = None;
        self.tick_len = TICK;
    }
}

impl AsyncRead for SshSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.apply();
        loop {
            if this.applied > 0 {
                // Whatever is queued, below the mark or not: tokio only learns of bytes once
                // the kernel signals the mark.
                match recv(
                    this.stream.as_raw_fd(),
                    buf.initialize_unfilled(),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(n) => {
                        buf.advance(n);
                        this.untick();
                        return Poll::Ready(Ok(()));
                    }
                    Err(Errno::EAGAIN) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Poll::Ready(Err(e.into())),
                }
            }
            if let Poll::Ready(read) = Pin::new(&mut this.stream).poll_read(cx, buf) {
                this.untick();
                return Poll::Ready(read);
            }
            if this.applied == 0 {
                return Poll::Pending;
            }
            let len = this.tick_len;
            let tick = this
                .tick
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(len)));
            ready!(tick.as_mut().poll(cx));
            this.tick = None;
            // Found nothing unless the read above now succeeds, which resets it.
            this.tick_len = (len * 2).min(LONGEST_TICK);
            this.apply();
        }
    }
}

impl AsyncWrite for SshSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::getsockopt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (SshSocket, ReadBatching, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let batching = ReadBatching::default();
        let socket = SshSocket::new(client.unwrap(), batching.clone());
        (socket, batching, server.unwrap().0)
    }

    /// A hang here is the failure: bounded so that it fails instead of stalling the suite.
    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("bytes below the mark were withheld")
    }

    #[tokio::test]
    async fn bytes_below_a_raised_mark_are_read_and_the_mark_follows_the_reader() {
        let (mut socket, batching, mut server) = pair().await;
        let lowat = |s: &SshSocket| getsockopt(&s.stream, RcvLowat).unwrap();
        let mut buf = [0u8; 64];

        // The kernel's default until a mark is asked for.
        server.write_all(b"hello").await.unwrap();
        within(socket.read_exact(&mut buf[..5])).await.unwrap();
        assert_eq!((&buf[..5], lowat(&socket)), (&b"hello"[..], 1));

        // Raised: a small message still arrives whole, in pieces read one after another, and
        // an exchange (the server waits for the client's answer) goes on.
        batching.set(256 * 1024);
        for round in 0..3u8 {
            server.write_all(&[round; 40]).await.unwrap();
            within(socket.read_exact(&mut buf[..16])).await.unwrap();
            within(socket.read_exact(&mut buf[16..40])).await.unwrap();
            assert_eq!(buf[..40], [round; 40]);
            assert_eq!(lowat(&socket), 256 * 1024);
            socket.write_all(&[round]).await.unwrap();
            let mut answer = [0u8; 1];
            server.read_exact(&mut answer).await.unwrap();
            assert_eq!(answer, [round]);
        }

        // Bytes above the mark, and the end of the stream, come through as well.
        let big = vec![7u8; 600 * 1024];
        let sender = tokio::spawn(async move {
            server.write_all(&big).await.unwrap();
            server
        });
        let mut got = vec![0u8; 600 * 1024];
        within(socket.read_exact(&mut got)).await.unwrap();
        assert!(got.iter().all(|&b| b == 7));
        let server = sender.await.unwrap();

        // Lowered again: applied at the next read.
        batching.set(0);
        drop(server);
        let mut rest = Vec::new();
        within(socket.read_to_end(&mut rest)).await.unwrap();
        assert_eq!((rest.len(), lowat(&socket)), (0, 1));
    }
}
