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

/// Bytes one receive may take from the kernel at most: one batch ([`ReadBatching`]).
const RECEIVE_BUFFER: usize = 256 * 1024;

/// An SSH connection's TCP stream (see the module docs). Writes go straight through.
///
/// Reads go through a buffer of [`RECEIVE_BUFFER`] bytes: the SSH session reads each packet
/// in two (its first 4 or 16 bytes, which give its length, then the rest), and straight from
/// the socket that was two `recv` calls per 32 KiB packet, for a copy of each packet from a
/// buffer still in cache. Measured on 2 cores of an AMD EPYC, 1 GiB of logs: `recvfrom` calls
/// per job 70 k -> 8 k, gzship's CPU outside compression 3-7% lower, 0.5-1% of all of it
/// (bench/results/2026-12-08-issue15-receive-buffer.md).
#[derive(Debug)]
pub(super) struct SshSocket {
    stream: TcpStream,
    batching: ReadBatching,
    /// Received bytes the session has not read yet: `received[read..filled]`.
    received: Box<[u8]>,
    read: usize,
    filled: usize,
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
            received: vec![0; RECEIVE_BUFFER].into_boxed_slice(),
            read: 0,
            filled: 0,
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
        if this.read == this.filled {
            if buf.remaining() >= RECEIVE_BUFFER {
                // As big as the buffer: no gain in going through it.
                return this.poll_receive(cx, buf);
            }
            let mut received = std::mem::take(&mut this.received);
            let mut into = ReadBuf::new(&mut received);
            let polled = this.poll_receive(cx, &mut into);
            let filled = into.filled().len();
            this.received = received;
            ready!(polled)?;
            (this.read, this.filled) = (0, filled);
        }
        let n = buf.remaining().min(this.filled - this.read);
        buf.put_slice(&this.received[this.read..this.read + n]);
        this.read += n;
        Poll::Ready(Ok(()))
    }
}

impl SshSocket {
    /// One receive from the socket into `buf`, whatever is queued, the mark applied: ready
    /// with nothing added at the end of the stream.
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self;
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
        let mut server = sender.await.unwrap();

        // Read the way the SSH session reads, a packet's first 4 bytes then the rest, the
        // mark raised: what one receive took beyond a read is served from the buffer, reads
        // bigger than the buffer go past it, and every byte arrives once, in order.
        let packets: Vec<u8> = (0..8_000u32).flat_map(|i| (i % 251) as u8..=255).collect();
        let sent = packets.clone();
        let sender = tokio::spawn(async move {
            server.write_all(&sent).await.unwrap();
            server
        });
        let mut got = Vec::new();
        for body in [28, 32 * 1024 - 4, 300 * 1024, 5, 1] {
            let mut head = [0u8; 4];
            within(socket.read_exact(&mut head)).await.unwrap();
            let mut rest = vec![0u8; body];
            within(socket.read_exact(&mut rest)).await.unwrap();
            got.extend_from_slice(&head);
            got.extend_from_slice(&rest);
        }
        let mut tail = vec![0u8; packets.len() - got.len()];
        within(socket.read_exact(&mut tail)).await.unwrap();
        got.extend_from_slice(&tail);
        assert!(
            got == packets,
            "bytes lost, reordered or repeated between reads"
        );
        let server = sender.await.unwrap();

        // Lowered again: applied at the next read.
        batching.set(0);
        drop(server);
        let mut rest = Vec::new();
        within(socket.read_to_end(&mut rest)).await.unwrap();
        assert_eq!((rest.len(), lowat(&socket)), (0, 1));
    }
}
