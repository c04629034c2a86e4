//! gzship's SFTP v3 client over one SSH channel, for the requests gzship makes: INIT,
//! `limits@openssh.com`, OPEN, OPENDIR, READDIR, STAT, FSTAT, READ and CLOSE.
//!
//! Why not russh-sftp's `RawSftpSession`: it reads every answer into a zeroed buffer of the
//! packet's size and then copies a READ's data into a second buffer; with 255 KiB answers that
//! was about 5% of a worker's CPU (memset, memcpy and the page faults of those buffers, issue
//! 15). Here a READ answer is handed on as slices of the SSH channel's own data buffers, with
//! no copy or zeroing between the SSH layer and the block the worker copies them into.
//! russh-sftp's protocol types still encode every request and decode every other answer.
//!
//! Requests may be sent from many tasks at once; answers are matched to them by request id.
//! A request whose future is dropped (a timeout) forgets its id; its answer, if one comes, is
//! dropped. When the channel ends, every waiting request fails with the reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf as _, Bytes, BytesMut};
use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::extensions::{LIMITS, LimitsExtension};
use russh_sftp::protocol::{
    Attrs, Close, Extended, FileAttributes, Fstat, Handle, Init, Name, Open, OpenDir, OpenFlags,
    Packet, Read, ReadDir, Stat, Status, StatusCode, Version,
};
use tokio::sync::oneshot;
use tracing::debug;

/// `SSH_FXP_DATA`: the one answer decoded here rather than by russh-sftp.
const SSH_FXP_DATA: u8 = 103;
/// A DATA packet up to its data: type (1), request id (4), data length (4).
const DATA_HEAD: usize = 9;

/// One SFTP session on an SSH channel. Dropping it stops reading the channel.
pub(super) struct Session {
    write: ChannelWriteHalf<Msg>,
    waiting: Arc<Waiting>,
    next_id: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Session {
    /// Sends INIT on `channel` (the sftp subsystem started) and waits for VERSION. Answers
    /// longer than `max_packet_len` bytes end the session.
    pub async fn start(
        channel: Channel<Msg>,
        max_packet_len: u32,
    ) -> Result<(Session, Version), SftpError> {
        let (mut read, write) = channel.split();
        write
            .data_bytes(Bytes::try_from(Packet::Init(Init::default()))?)
            .await
            .map_err(|e| SftpError::IO(format!("send INIT: {e}")))?;
        let mut framer = Framer::new(max_packet_len);
        let mut frames = Vec::new();
        while frames.is_empty() {
            match read.wait().await {
                Some(ChannelMsg::Data { data }) => framer.feed(data, &mut frames)?,
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                    return Err(SftpError::IO(
                        "the server closed the sftp channel before answering INIT".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        let mut frames = frames.into_iter();
        let version = match frames.next() {
            Some(Frame::Packet(Packet::Version(v))) => v,
            _ => return Err(SftpError::UnexpectedPacket),
        };
        if frames.next().is_some() {
            // Nothing was asked but INIT.
            return Err(SftpError::UnexpectedPacket);
        }
        let waiting = Arc::new(Waiting::default());
        let reader = tokio::spawn(read_answers(read, framer, waiting.clone()));
        Ok((
            Session {
                write,
                waiting,
                next_id: AtomicU32::new(1),
                reader,
            },
            version,
        ))
    }

    /// The server's limits (`limits@openssh.com`; ask only when VERSION announced it).
    pub async fn limits(&self) -> Result<LimitsExtension, SftpError> {
        let request = |id: u32| -> Packet {
            Extended {
                id,
                request: LIMITS.to_owned(),
                data: Vec::new(),
            }
            .into()
        };
        let reply = self.ask(request, |answer: Packet| match answer {
            Packet::ExtendedReply(reply) => Ok(reply),
            other => Err(not_ok(other)),
        });
        let data = reply.await?.data;
        Ok(russh_sftp::de::from_bytes::<LimitsExtension>(
            &mut Bytes::from(data),
        )?)
    }

    pub async fn open(
        &self,
        path: &str,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, SftpError> {
        let filename = path.to_owned();
        let request = |id: u32| -> Packet {
            Open {
                id,
                filename,
                pflags,
                attrs,
            }
            .into()
        };
        self.ask(request, handle).await
    }

    pub async fn opendir(&self, path: &str) -> Result<Handle, SftpError> {
        let path = path.to_owned();
        self.ask(|id| OpenDir { id, path }.into(), handle).await
    }

    /// The next entries of an open directory; the end is the error `Status(Eof)`.
    pub async fn readdir(&self, handle: &str) -> Result<Name, SftpError> {
        let handle = handle.to_owned();
        let names = |answer: Packet| match answer {
            Packet::Name(n) => Ok(n),
            other => Err(not_ok(other)),
        };
        self.ask(|id| ReadDir { id, handle }.into(), names).await
    }

    pub async fn stat(&self, path: &str) -> Result<Attrs, SftpError> {
        let path = path.to_owned();
        self.ask(|id| Stat { id, path }.into(), attrs).await
    }

    pub async fn fstat(&self, handle: &str) -> Result<Attrs, SftpError> {
        let handle = handle.to_owned();
        self.ask(|id| Fstat { id, handle }.into(), attrs).await
    }

    pub async fn close(&self, handle: &str) -> Result<Status, SftpError> {
        let handle = handle.to_owned();
        let ok = |answer: Packet| match answer {
            Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(s),
            other => Err(not_ok(other)),
        };
        self.ask(|id| Close { id, handle }.into(), ok).await
    }

    /// Up to `len` bytes at `offset`, as the pieces they arrived in (slices of the channel's
    /// buffers, not copied); the end of the file is the error `Status(Eof)`.
    pub async fn read(&self, handle: &str, offset: u64, len: u32) -> Result<Vec<Bytes>, SftpError> {
        let id = self.id();
        let request = Read {
            id,
            handle: handle.to_owned(),
            offset,
            len,
        };
        match self.request(id, request.into()).await? {
            Frame::Data { data, .. } => Ok(data),
            Frame::Packet(other) => Err(not_ok(other)),
        }
    }

    /// Ends the session: the channel is closed; waiting requests fail.
    pub async fn close_session(&self) {
        let _ = self.write.close().await;
    }

    fn id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends the request `make` builds with a new id (any but READ) and returns what `want`
    /// makes of the answer (the one it expects, or [`not_ok`] of another).
    async fn ask<T>(
        &self,
        make: impl FnOnce(u32) -> Packet,
        want: impl FnOnce(Packet) -> Result<T, SftpError>,
    ) -> Result<T, SftpError> {
        let id = self.id();
        match self.request(id, make(id)).await? {
            Frame::Packet(p) => want(p),
            Frame::Data { .. } => Err(SftpError::UnexpectedPacket),
        }
    }

    async fn request(&self, id: u32, request: Packet) -> Result<Frame, SftpError> {
        let answer = self.waiting.expect(id)?;
        // Forgets the id however this future ends (answered, failed, or dropped on a timeout).
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        self.write
            .data_bytes(Bytes::try_from(request)?)
            .await
            .map_err(|e| SftpError::IO(format!("send an sftp request: {e}")))?;
        answer
            .await
            .map_err(|_| SftpError::IO(self.waiting.ended()))
    }
}

/// A HANDLE answer.
fn handle(answer: Packet) -> Result<Handle, SftpError> {
    match answer {
        Packet::Handle(h) => Ok(h),
        other => Err(not_ok(other)),
    }
}

/// An ATTRS answer.
fn attrs(answer: Packet) -> Result<Attrs, SftpError> {
    match answer {
        Packet::Attrs(a) => Ok(a),
        other => Err(not_ok(other)),
    }
}

/// An error for an answer that is not the one asked for: the server's status, or a protocol
/// violation.
fn not_ok(answer: Packet) -> SftpError {
    match answer {
        Packet::Status(s) => SftpError::Status(s),
        _ => SftpError::UnexpectedPacket,
    }
}

/// Requests waiting for their answers, by request id.
#[derive(Default)]
struct Waiting {
    state: Mutex<WaitState>,
}

#[derive(Default)]
struct WaitState {
    by_id: HashMap<u32, oneshot::Sender<Frame>>,
    /// Why the session ended, once it has.
    ended: Option<String>,
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitState> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expect(&self, id: u32) -> Result<oneshot::Receiver<Frame>, SftpError> {
        let mut state = self.lock();
        if let Some(why) = &state.ended {
            return Err(SftpError::IO(why.clone()));
        }
        let (tx, rx) = oneshot::channel();
        state.by_id.insert(id, tx);
        Ok(rx)
    }

    fn answer(&self, frame: Frame) {
        let Some(id) = frame.request_id() else {
            debug!("sftp answer without a request id ignored");
            return;
        };
        match self.lock().by_id.remove(&id) {
            // The receiver may be gone (timed out) since: the answer is dropped.
            Some(tx) => {
                let _ = tx.send(frame);
            }
            None => debug!(id, "sftp answer to a request no longer waited for"),
        }
    }

    fn end(&self, why: String) {
        let mut state = self.lock();
        state.ended = Some(why);
        // Dropping the senders wakes every waiting request.
        state.by_id.clear();
    }

    fn ended(&self) -> String {
        self.lock()
            .ended
            .clone()
            .unwrap_or_else(|| "the sftp session ended".into())
    }
}

struct Forget<'a> {
    waiting: &'a Waiting,
    id: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiting.lock().by_id.remove(&self.id);
    }
}

/// Reads the channel until it ends, handing each answer to its request.
async fn read_answers(mut read: ChannelReadHalf, mut framer: Framer, waiting: Arc<Waiting>) {
    let mut frames = Vec::new();
    let why = loop {
        match read.wait().await {
            Some(ChannelMsg::Data { data }) => {
                if let Err(e) = framer.feed(data, &mut frames) {
                    break format!("the server sent a malformed sftp packet: {e}");
                }
                for frame in frames.drain(..) {
                    waiting.answer(frame);
                }
            }
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                break "the sftp channel was closed".to_owned();
            }
            // stderr of the sftp server, exit status, window changes: nothing to answer.
            Some(_) => {}
        }
    };
    debug!(%why, "sftp session ended");
    waiting.end(why);
}

/// A complete answer.
#[derive(Debug)]
enum Frame {
    /// DATA: the data as the pieces it arrived in.
    Data { id: u32, data: Vec<Bytes> },
    /// Any other packet, decoded by russh-sftp.
    Packet(Packet),
}

impl Frame {
    fn request_id(&self) -> Option<u32> {
        match self {
            Frame::Data { id, .. } => Some(*id),
            Frame::Packet(p) => match p {
                Packet::Status(s) => Some(s.id),
                Packet::Handle(h) => Some(h.id),
                Packet::Name(n) => Some(n.id),
                Packet::Attrs(a) => Some(a.id),
                Packet::ExtendedReply(r) => Some(r.id),
                _ => None,
            },
        }
    }
}

/// Cuts SFTP packets out of the channel's data, whatever the pieces it arrives in. A DATA
/// packet's data is kept as slices of those pieces; every other packet is gathered whole and
/// decoded.
struct Framer {
    max_len: u32,
    /// The packet being gathered: its length field and type and, for DATA, up to its data
    /// (`DATA_HEAD` bytes after the length); for any other packet, all of it.
    head: BytesMut,
    /// The DATA packet whose data is being taken, once its head is complete.
    data: Option<DataInProgress>,
}

struct DataInProgress {
    id: u32,
    pieces: Vec<Bytes>,
    /// Data bytes still to come.
    left: usize,
    /// Bytes after the data, inside the packet, still to skip.
    skip: usize,
}

impl Framer {
    fn new(max_len: u32) -> Framer {
        Framer {
            max_len,
            head: BytesMut::new(),
            data: None,
        }
    }

    /// Takes one piece of the channel's data; complete answers are pushed to `out`.
    fn feed(&mut self, mut piece: Bytes, out: &mut Vec<Frame>) -> Result<(), SftpError> {
        loop {
            if let Some(d) = &mut self.data {
                let n = d.left.min(piece.len());
                if n > 0 {
                    d.pieces.push(piece.split_to(n));
                    d.left -= n;
                }
                let n = d.skip.min(piece.len());
                piece.advance(n);
                d.skip -= n;
                if d.left > 0 || d.skip > 0 {
                    return Ok(());
                }
                let d = self.data.take().expect("checked above");
                out.push(Frame::Data {
                    id: d.id,
                    data: d.pieces,
                });
                continue;
            }
            // The length and the type first, then as much as this packet needs gathered.
            if !self.gather(&mut piece, 5) {
                return Ok(());
            }
            let len = u32::from_be_bytes(self.head[..4].try_into().expect("4 bytes"));
            if len > self.max_len {
                return Err(SftpError::UnexpectedBehavior(format!(
                    "an sftp packet of {len} bytes, more than the {} allowed",
                    self.max_len
                )));
            }
            let len = len as usize;
            if self.head[4] == SSH_FXP_DATA {
                if len < DATA_HEAD {
                    return Err(SftpError::UnexpectedBehavior(format!(
                        "a DATA packet of {len} bytes"
                    )));
                }
                if !self.gather(&mut piece, 4 + DATA_HEAD) {
                    return Ok(());
                }
                let word = |at: usize| {
                    u32::from_be_bytes(self.head[at..at + 4].try_into().expect("4 bytes"))
                };
                let (id, data_len) = (word(5), word(9) as usize);
                if data_len > len - DATA_HEAD {
                    return Err(SftpError::UnexpectedBehavior(format!(
                        "a DATA packet of {len} bytes claims {data_len} bytes of data"
                    )));
                }
                self.head.clear();
                self.data = Some(DataInProgress {
                    id,
                    pieces: Vec::new(),
                    left: data_len,
                    skip: len - DATA_HEAD - data_len,
                });
                continue;
            }
            if !self.gather(&mut piece, 4 + len) {
                return Ok(());
            }
            let mut packet = self.head.split().freeze();
            packet.advance(4);
            out.push(Frame::Packet(Packet::try_from(&mut packet)?));
        }
    }

    /// Moves bytes of `piece` into `head` until it holds `upto` bytes; whether it does.
    fn gather(&mut self, piece: &mut Bytes, upto: usize) -> bool {
        let n = upto.saturating_sub(self.head.len()).min(piece.len());
        self.head.extend_from_slice(&piece.split_to(n));
        self.head.len() >= upto
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use russh_sftp::protocol::Data;

    fn encode(p: Packet) -> Vec<u8> {
        Bytes::try_from(p).expect("encodes").to_vec()
    }

    fn status(id: u32, code: StatusCode) -> Packet {
        Packet::Status(Status {
            id,
            status_code: code,
            error_message: "msg".into(),
            language_tag: "en".into(),
        })
    }

    /// Answers of each kind gzship reads, DATA of several sizes among them.
    fn answers(data_sizes: &[usize]) -> (Vec<u8>, Vec<(u32, Vec<u8>)>) {
        let mut wire = encode(status(1, StatusCode::Ok));
        let mut data = Vec::new();
        for (i, &size) in data_sizes.iter().enumerate() {
            let id = 10 + i as u32;
            let bytes: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
            wire.extend(encode(Packet::Data(Data {
                id,
                data: bytes.clone(),
            })));
            data.push((id, bytes));
            wire.extend(encode(Packet::Handle(Handle {
                id: 100 + i as u32,
                handle: format!("h{i}"),
            })));
        }
        wire.extend(encode(Packet::Attrs(Attrs {
            id: 2,
            attrs: FileAttributes::empty(),
        })));
        wire.extend(encode(status(3, StatusCode::Eof)));
        (wire, data)
    }

    fn feed_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, SftpError> {
        let mut framer = Framer::new(1 << 20);
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
            let end = cut.clamp(at, wire.len());
            framer.feed(Bytes::copy_from_slice(&wire[at..end]), &mut out)?;
            at = end;
        }
        assert!(
            framer.head.is_empty() && framer.data.is_none(),
            "nothing left over"
        );
        Ok(out)
    }

    fn check(frames: &[Frame], sizes: &[usize], data: &[(u32, Vec<u8>)]) {
        assert_eq!(frames.len(), 3 + 2 * sizes.len(), "{frames:?}");
        let mut datas = frames.iter().filter_map(|f| match f {
            Frame::Data { id, data } => Some((*id, data.concat())),
            Frame::Packet(_) => None,
        });
        for want in data {
            assert_eq!(datas.next().as_ref(), Some(want));
        }
        assert!(matches!(
            frames.last(),
            Some(Frame::Packet(Packet::Status(s))) if s.id == 3 && s.status_code == StatusCode::Eof
        ));
        assert_eq!(
            frames.iter().filter_map(Frame::request_id).count(),
            frames.len()
        );
    }

    #[test]
    fn answers_in_one_piece_and_byte_by_byte() {
        let sizes = [0, 1, 5000, 65_536];
        let (wire, data) = answers(&sizes);
        check(&feed_in_pieces(&wire, &[]).unwrap(), &sizes, &data);
        let every: Vec<usize> = (0..wire.len()).collect();
        check(&feed_in_pieces(&wire, &every).unwrap(), &sizes, &data);
    }

    #[test]
    fn data_is_not_copied() {
        let (wire, _) = answers(&[100_000]);
        let piece = Bytes::from(wire);
        let mut out = Vec::new();
        Framer::new(1 << 20).feed(piece.clone(), &mut out).unwrap();
        let Frame::Data { data, .. } = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(data.len(), 1);
        let range = piece.as_ptr_range();
        assert!(range.contains(&data[0].as_ptr()), "a slice of the piece");
    }

    #[test]
    fn malformed_packets_are_refused() {
        let too_long = [0u8, 0x10, 0, 1, 101];
        let e = Framer::new(1 << 20)
            .feed(Bytes::copy_from_slice(&too_long), &mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("more than the 1048576 allowed"),
            "{e}"
        );
        // DATA of 9 bytes claiming 10 bytes of data.
        let lying = [0u8, 0, 0, 9, SSH_FXP_DATA, 0, 0, 0, 1, 0, 0, 0, 10];
        let e = Framer::new(1 << 20)
            .feed(Bytes::copy_from_slice(&lying), &mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("claims 10 bytes"), "{e}");
        let short = [0u8, 0, 0, 4, SSH_FXP_DATA, 0, 0, 0];
        let e = Framer::new(1 << 20)
            .feed(Bytes::copy_from_slice(&short), &mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("a DATA packet of 4 bytes"), "{e}");
    }

    #[test]
    fn bytes_after_the_data_are_skipped() {
        // SFTP v6 servers may add an end-of-file flag after the data.
        // Length 13: type, id 7, data length 3, "abc", then the flag.
        let mut wire = vec![0u8, 0, 0, 13, SSH_FXP_DATA, 0, 0, 0, 7, 0, 0, 0, 3];
        wire.extend(b"abc\x01");
        wire.extend(encode(status(8, StatusCode::Ok)));
        let frames = feed_in_pieces(&wire, &[14, 16]).unwrap();
        assert!(matches!(&frames[0], Frame::Data { id: 7, data } if data.concat() == b"abc"));
        assert_eq!(frames[1].request_id(), Some(8));
    }

    proptest! {
        #[test]
        fn any_pieces_give_the_same_answers(
            sizes in proptest::collection::vec(0usize..70_000, 0..5),
            cuts in proptest::collection::vec(0usize..400_000, 0..40),
        ) {
            let (wire, data) = answers(&sizes);
            let mut cuts = cuts;
            cuts.sort_unstable();
            check(&feed_in_pieces(&wire, &cuts).unwrap(), &sizes, &data);
        }
    }
}
