//! The SFTP v3 engine behind one `sftp` subsystem channel: read-only, confined to a [`Root`].
//!
//! russh-sftp's own server loop answers one request at a time. A client that pipelines 64
//! READs would then wait for each positioned read in turn, so this engine decodes requests with
//! russh-sftp's protocol types but runs READs concurrently: each READ goes to a blocking thread
//! (`pread`, no shared file cursor) and its reply is queued for the single writer as soon as it is
//! ready. Replies may therefore come out of request order, which SFTP allows (clients match
//! them by request id). Every other request is answered in order, inline.
//!
//! Memory per session is bounded: at most `max_reads_in_flight` READ buffers exist at once, and
//! a READ's permit is released only after its reply has been queued.

use std::collections::{HashMap, VecDeque};
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use russh::server::Msg;
use russh::{Channel, ChannelWriteHalf};
use russh_sftp::extensions::{self, LimitsExtension};
use russh_sftp::protocol::{
    Attrs, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::MAX_READ_LEN;
use crate::root::{Root, VirtualPath};

/// The largest request accepted, as OpenSSH's `SFTP_MAX_MSG_LENGTH`. A client that sends more
/// is broken or hostile; the session ends.
const MAX_REQUEST_LEN: u32 = 256 * 1024;
/// Entries per READDIR reply, as OpenSSH.
const READDIR_BATCH: usize = 100;
/// Replies other than READs that may wait for the writer; READ replies are bounded by permits.
const CONTROL_REPLIES_QUEUED: usize = 16;

const SSH_FXP_INIT: u8 = 1;
const SSH_FXP_OPEN: u8 = 3;
const SSH_FXP_SYMLINK: u8 = 20;
const SSH_FXP_DATA: u8 = 103;
const SSH_FXP_EXTENDED: u8 = 200;
/// `u32 length, u8 type, u32 id, u32 data length` before a DATA reply's payload.
const DATA_HEADER_LEN: usize = 13;

/// Per-session limits, copied from the server configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_reads_in_flight: usize,
    pub(crate) max_open_handles: usize,
}

/// Serves SFTP on `channel` until the client closes it or `stop` fires (the channel or the
/// connection closed, or the server shuts down).
pub(crate) async fn serve(
    channel: Channel<Msg>,
    root: Arc<Root>,
    limits: Limits,
    stop: CancellationToken,
) {
    let (mut read_half, write_half) = channel.split();
    let reads = limits.max_reads_in_flight.max(1);
    let (replies, queued) = mpsc::channel(reads + CONTROL_REPLIES_QUEUED);
    let writer = tokio::spawn(write_replies(write_half, queued, stop.clone()));

    let mut session = Session::new(root, limits, replies);
    let mut requests = read_half.make_reader();
    tokio::select! {
        ended = session.run(&mut requests) => match ended {
            Ok(()) => debug!("sftp session ended by the client"),
            Err(e) => debug!("sftp session ended: {e}"),
        },
        () = stop.cancelled() => debug!("sftp session stopped"),
    }
    // In-flight READs hold their own sender; the writer drains them, then closes the channel.
    drop(session);
    if let Err(e) = writer.await {
        warn!("sftp reply writer failed: {e}");
    }
}

/// Runs one session over `requests`, the bytes a client sent, and returns the replies in the
/// order they were queued: the fuzz target of the packet handling (`crates/fuzz`).
#[cfg(feature = "fuzzing")]
pub(crate) async fn replay(root: Arc<Root>, limits: Limits, mut requests: &[u8]) -> Vec<Bytes> {
    let (replies, mut queued) =
        mpsc::channel(limits.max_reads_in_flight.max(1) + CONTROL_REPLIES_QUEUED);
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(reply) = queued.recv().await {
            out.push(reply);
        }
        out
    });
    let mut session = Session::new(root, limits, replies);
    let _ = session.run(&mut requests).await;
    // In-flight READs hold their own sender; the collector ends when the last one is sent.
    drop(session);
    collect.await.unwrap_or_default()
}

/// Sends queued replies in the order they became ready, then EOF and CLOSE on the channel.
/// Returning early drops `queued`, which fails the sends of pending READs.
async fn write_replies(
    channel: ChannelWriteHalf<Msg>,
    mut queued: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) {
    loop {
        let reply = tokio::select! {
            reply = queued.recv() => match reply {
                Some(reply) => reply,
                None => break,
            },
            () = stop.cancelled() => return,
        };
        // `data_bytes` slices the reply into SSH packets without copying it. It waits while the
        // client's window is full, so it must also give way to `stop`.
        tokio::select! {
            sent = channel.data_bytes(reply) => if sent.is_err() {
                return;
            },
            () = stop.cancelled() => return,
        }
    }
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

/// A reply could not be queued because the writer is gone (connection closed).
#[derive(Debug)]
struct WriterGone;

/// Why the request loop ended early.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("read an sftp request: {0}")]
    Io(#[from] io::Error),
    #[error("sftp request of {0} bytes is over the {MAX_REQUEST_LEN} byte limit")]
    TooLong(u32),
    #[error("the connection closed while replies were pending")]
    WriterGone,
}

impl From<WriterGone> for SessionEnd {
    fn from(_: WriterGone) -> Self {
        SessionEnd::WriterGone
    }
}

enum OpenHandle {
    File {
        file: Arc<std::fs::File>,
        path: String,
    },
    Dir {
        entries: VecDeque<File>,
    },
}

struct Session {
    root: Arc<Root>,
    limits: Limits,
    replies: mpsc::Sender<Bytes>,
    /// Permits for READs being served; see the module docs.
    reads: Arc<Semaphore>,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
}

/// An SFTP error reply: status code plus a lowercase message that says what was attempted.
struct Refusal {
    code: StatusCode,
    message: String,
}

impl Refusal {
    fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// Maps a file system error on `what` (e.g. "open /a.log") to the closest status code.
    fn io(what: &str, e: &io::Error) -> Self {
        let code = match e.kind() {
            io::ErrorKind::NotFound => StatusCode::NoSuchFile,
            io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
            _ => StatusCode::Failure,
        };
        Refusal::new(code, format!("{what}: {e}"))
    }

    fn read_only(what: &str) -> Self {
        Refusal::new(
            StatusCode::PermissionDenied,
            format!("{what}: the server is read-only"),
        )
    }

    fn escape(path: &str) -> Self {
        Refusal::new(
            StatusCode::PermissionDenied,
            format!("resolve {path:?}: the path leads outside the served directory"),
        )
    }

    fn bad_handle(handle: &str) -> Self {
        Refusal::new(
            StatusCode::Failure,
            format!("use handle {handle:?}: not open"),
        )
    }

    fn into_packet(self, id: u32) -> Packet {
        Packet::Status(Status {
            id,
            status_code: self.code,
            error_message: self.message,
            language_tag: "en-US".to_owned(),
        })
    }
}

type Reply = Result<Packet, Refusal>;

impl Session {
    fn new(root: Arc<Root>, limits: Limits, replies: mpsc::Sender<Bytes>) -> Session {
        Session {
            root,
            limits,
            replies,
            reads: Arc::new(Semaphore::new(limits.max_reads_in_flight.max(1))),
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    /// Refuses a new handle (`what` says for what) once `max_open_handles` are open.
    fn check_handle_room(&self, what: &str) -> Result<(), Refusal> {
        if self.handles.len() >= self.limits.max_open_handles {
            return Err(Refusal::new(
                StatusCode::Failure,
                format!("{what}: {} handles already open", self.handles.len()),
            ));
        }
        Ok(())
    }

    async fn run<R: AsyncRead + Unpin>(&mut self, requests: &mut R) -> Result<(), SessionEnd> {
        loop {
            let len = match requests.read_u32().await {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if len > MAX_REQUEST_LEN {
                return Err(SessionEnd::TooLong(len));
            }
            let mut buf = vec![0; len as usize];
            requests.read_exact(&mut buf).await?;
            self.dispatch(Bytes::from(buf)).await?;
        }
    }

    async fn dispatch(&mut self, request: Bytes) -> Result<(), WriterGone> {
        let kind = request.first().copied().unwrap_or(0);
        let id = request_id(&request);
        let packet = match Packet::try_from(&mut request.clone()) {
            Ok(packet) => packet,
            Err(e) => {
                let known = (SSH_FXP_OPEN..=SSH_FXP_SYMLINK).contains(&kind)
                    || kind == SSH_FXP_INIT
                    || kind == SSH_FXP_EXTENDED;
                let refusal = if known {
                    Refusal::new(StatusCode::BadMessage, format!("decode request: {e}"))
                } else {
                    Refusal::new(
                        StatusCode::OpUnsupported,
                        format!("sftp request type {kind} is not supported"),
                    )
                };
                return self.send(refusal.into_packet(id)).await;
            }
        };
        let reply = match packet {
            Packet::Init(init) => {
                debug!(version = init.version, "sftp init");
                let mut version = Version::new();
                version
                    .extensions
                    .insert(extensions::LIMITS.to_owned(), "1".to_owned());
                Ok(version.into())
            }
            Packet::Read(read) => {
                return self
                    .read(read.id, &read.handle, read.offset, read.len)
                    .await;
            }
            Packet::Open(open) => self.open(open.id, &open.filename, open.pflags).await,
            Packet::Close(close) => self.close(close.id, &close.handle),
            Packet::Stat(stat) => self.stat(stat.id, &stat.path, true).await,
            Packet::Lstat(lstat) => self.stat(lstat.id, &lstat.path, false).await,
            Packet::Fstat(fstat) => self.fstat(fstat.id, &fstat.handle).await,
            Packet::RealPath(realpath) => realpath_reply(realpath.id, &realpath.path),
            Packet::OpenDir(opendir) => self.opendir(opendir.id, &opendir.path).await,
            Packet::ReadDir(readdir) => self.readdir(readdir.id, &readdir.handle),
            Packet::Extended(extended) => self.extended(extended.id, &extended.request),
            Packet::Write(_) => Err(Refusal::read_only("write")),
            Packet::SetStat(_) | Packet::FSetStat(_) => Err(Refusal::read_only("set attributes")),
            Packet::Remove(_) => Err(Refusal::read_only("remove")),
            Packet::MkDir(_) => Err(Refusal::read_only("make a directory")),
            Packet::RmDir(_) => Err(Refusal::read_only("remove a directory")),
            Packet::Rename(_) => Err(Refusal::read_only("rename")),
            Packet::Symlink(_) => Err(Refusal::read_only("make a symlink")),
            Packet::ReadLink(_) => Err(Refusal::new(
                StatusCode::OpUnsupported,
                "read a symlink: not supported",
            )),
            // Replies sent by a confused client.
            Packet::Version(_)
            | Packet::Status(_)
            | Packet::Handle(_)
            | Packet::Data(_)
            | Packet::Name(_)
            | Packet::Attrs(_)
            | Packet::ExtendedReply(_) => Err(Refusal::new(
                StatusCode::BadMessage,
                format!("sftp packet type {kind} is a reply, not a request"),
            )),
        };
        self.send(reply.unwrap_or_else(|refusal| refusal.into_packet(id)))
            .await
    }

    async fn send(&self, packet: Packet) -> Result<(), WriterGone> {
        let bytes = match Bytes::try_from(packet) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Only oversized fields fail to encode; nothing this server builds does.
                warn!("encode an sftp reply: {e}");
                return Ok(());
            }
        };
        self.replies.send(bytes).await.map_err(|_| WriterGone)
    }

    /// Starts a positioned read on a blocking thread and returns once it holds a permit, so at
    /// most `max_reads_in_flight` reads (and their buffers) exist at once.
    async fn read(
        &mut self,
        id: u32,
        handle: &str,
        offset: u64,
        len: u32,
    ) -> Result<(), WriterGone> {
        let (file, path) = match self.handles.get(handle) {
            Some(OpenHandle::File { file, path }) => (Arc::clone(file), path.clone()),
            Some(OpenHandle::Dir { .. }) | None => {
                return self.send(Refusal::bad_handle(handle).into_packet(id)).await;
            }
        };
        let permit = Arc::clone(&self.reads)
            .acquire_owned()
            .await
            .map_err(|_| WriterGone)?;
        let replies = self.replies.clone();
        let len = len.min(MAX_READ_LEN) as usize;
        tokio::task::spawn_blocking(move || {
            let reply = match read_at(&file, id, offset, len) {
                Ok(Some(data)) => data,
                Ok(None) => status(id, StatusCode::Eof, "read: end of file"),
                Err(e) => {
                    let refusal = Refusal::io(&format!("read {path} at offset {offset}"), &e);
                    encode(refusal.into_packet(id))
                }
            };
            // A closed writer means the connection is gone; the reply has nowhere to go.
            let _ = replies.blocking_send(reply);
            drop(permit);
        });
        Ok(())
    }

    async fn open(&mut self, id: u32, filename: &str, flags: OpenFlags) -> Reply {
        let what = format!("open {filename}");
        if flags.intersects(
            OpenFlags::WRITE
                | OpenFlags::APPEND
                | OpenFlags::CREATE
                | OpenFlags::TRUNCATE
                | OpenFlags::EXCLUDE,
        ) {
            return Err(Refusal::read_only(&what));
        }
        let path = VirtualPath::parse(filename).map_err(|_| Refusal::escape(filename))?;
        self.check_handle_room(&what)?;
        let root = Arc::clone(&self.root);
        let file = blocking(move || {
            let local = root.resolve(&path)?;
            let file = std::fs::File::open(local)?;
            if file.metadata()?.is_file() {
                Ok(file)
            } else {
                Err(io::Error::other("not a regular file"))
            }
        })
        .await
        .map_err(|e| Refusal::io(&what, &e))?;
        let handle = self.new_handle(OpenHandle::File {
            file: Arc::new(file),
            path: filename.to_owned(),
        });
        Ok(Handle { id, handle }.into())
    }

    fn close(&mut self, id: u32, handle: &str) -> Reply {
        // In-flight READs keep their own reference to the file and finish normally.
        self.handles
            .remove(handle)
            .ok_or_else(|| Refusal::bad_handle(handle))?;
        Ok(Packet::Status(Status {
            id,
            status_code: StatusCode::Ok,
            error_message: "closed".to_owned(),
            language_tag: "en-US".to_owned(),
        }))
    }

    async fn stat(&self, id: u32, path: &str, follow: bool) -> Reply {
        let what = format!("stat {path}");
        let parsed = VirtualPath::parse(path).map_err(|_| Refusal::escape(path))?;
        let root = Arc::clone(&self.root);
        let meta = blocking(move || {
            if follow {
                std::fs::metadata(root.resolve(&parsed)?)
            } else {
                std::fs::symlink_metadata(root.resolve_parent(&parsed)?)
            }
        })
        .await
        .map_err(|e| Refusal::io(&what, &e))?;
        Ok(Attrs {
            id,
            attrs: attributes(&meta),
        }
        .into())
    }

    async fn fstat(&self, id: u32, handle: &str) -> Reply {
        let Some(OpenHandle::File { file, path }) = self.handles.get(handle) else {
            return Err(Refusal::bad_handle(handle));
        };
        let what = format!("stat {path}");
        let file = Arc::clone(file);
        let meta = blocking(move || file.metadata())
            .await
            .map_err(|e| Refusal::io(&what, &e))?;
        Ok(Attrs {
            id,
            attrs: attributes(&meta),
        }
        .into())
    }

    async fn opendir(&mut self, id: u32, path: &str) -> Reply {
        let what = format!("list {path}");
        let parsed = VirtualPath::parse(path).map_err(|_| Refusal::escape(path))?;
        self.check_handle_room(&what)?;
        let root = Arc::clone(&self.root);
        // Directories here are small (generated demo data), so the listing is read at once.
        let entries = blocking(move || {
            let mut entries = VecDeque::new();
            for entry in std::fs::read_dir(root.resolve(&parsed)?)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                let name = entry.file_name().to_string_lossy().into_owned();
                entries.push_back(File::new(name, attributes(&meta)));
            }
            Ok(entries)
        })
        .await
        .map_err(|e| Refusal::io(&what, &e))?;
        let handle = self.new_handle(OpenHandle::Dir { entries });
        Ok(Handle { id, handle }.into())
    }

    fn readdir(&mut self, id: u32, handle: &str) -> Reply {
        let Some(OpenHandle::Dir { entries }) = self.handles.get_mut(handle) else {
            return Err(Refusal::bad_handle(handle));
        };
        if entries.is_empty() {
            return Err(Refusal::new(StatusCode::Eof, "list: no more entries"));
        }
        let take = entries.len().min(READDIR_BATCH);
        let files = entries.drain(..take).collect();
        Ok(Name { id, files }.into())
    }

    fn extended(&self, id: u32, request: &str) -> Reply {
        if request != extensions::LIMITS {
            return Err(Refusal::new(
                StatusCode::OpUnsupported,
                format!("extension {request:?} is not supported"),
            ));
        }
        let limits = LimitsExtension {
            max_packet_len: u64::from(MAX_REQUEST_LEN),
            max_read_len: u64::from(MAX_READ_LEN),
            // Writes are refused anyway; OpenSSH reports the same figure as for reads.
            max_write_len: u64::from(MAX_READ_LEN),
            max_open_handles: self.limits.max_open_handles as u64,
        };
        let data = russh_sftp::ser::to_bytes(&limits)
            .map_err(|e| Refusal::new(StatusCode::Failure, format!("encode limits: {e}")))?;
        Ok(ExtendedReply {
            id,
            data: data.to_vec(),
        }
        .into())
    }

    fn new_handle(&mut self, handle: OpenHandle) -> String {
        let name = self.next_handle.to_string();
        self.next_handle += 1;
        self.handles.insert(name.clone(), handle);
        name
    }
}

fn realpath_reply(id: u32, path: &str) -> Reply {
    let parsed = VirtualPath::parse(path).map_err(|_| Refusal::escape(path))?;
    Ok(Name {
        id,
        files: vec![File::dummy(parsed.display())],
    }
    .into())
}

/// Runs blocking file system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// Reads up to `len` bytes at `offset` straight into an encoded DATA reply; `None` at end of
/// file. Loops over short reads so a reply is short only at end of file: clients such as
/// russh-sftp's `File` treat a short reply as the end of what they may read ahead.
fn read_at(file: &std::fs::File, id: u32, offset: u64, len: usize) -> io::Result<Option<Bytes>> {
    // Offsets past i64::MAX fail in pread with EINVAL; no file is that long, so it is EOF.
    if offset > i64::MAX as u64 {
        return Ok(None);
    }
    let mut buf = vec![0u8; DATA_HEADER_LEN + len];
    let mut filled = 0;
    while filled < len {
        let at = offset.saturating_add(filled as u64);
        match file.read_at(&mut buf[DATA_HEADER_LEN + filled..], at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if filled == 0 && len > 0 {
        return Ok(None);
    }
    buf.truncate(DATA_HEADER_LEN + filled);
    Ok(Some(encode_data(buf, id)))
}

/// Fills in the header of a DATA reply whose payload already follows `DATA_HEADER_LEN` bytes
/// of room, so the payload is never copied.
fn encode_data(mut buf: Vec<u8>, id: u32) -> Bytes {
    let payload = (buf.len() - DATA_HEADER_LEN) as u32;
    let packet = (buf.len() - 4) as u32;
    buf[0..4].copy_from_slice(&packet.to_be_bytes());
    buf[4] = SSH_FXP_DATA;
    buf[5..9].copy_from_slice(&id.to_be_bytes());
    buf[9..13].copy_from_slice(&payload.to_be_bytes());
    Bytes::from(buf)
}

fn status(id: u32, code: StatusCode, message: &str) -> Bytes {
    encode(Refusal::new(code, message).into_packet(id))
}

fn encode(packet: Packet) -> Bytes {
    Bytes::try_from(packet).unwrap_or_default()
}

/// The request id of a raw request (the `u32` after the type byte), or 0 if it is too short.
fn request_id(request: &Bytes) -> u32 {
    let mut rest = request.slice(request.len().min(1)..);
    rest.try_get_u32().unwrap_or(0)
}

fn attributes(meta: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(meta.len()),
        uid: Some(meta.uid()),
        user: None,
        gid: Some(meta.gid()),
        group: None,
        // The mode carries the file type bits too (regular file, directory, symlink).
        permissions: Some(meta.mode()),
        atime: Some(u32::try_from(meta.atime()).unwrap_or(0)),
        mtime: Some(u32::try_from(meta.mtime()).unwrap_or(0)),
    }
}
