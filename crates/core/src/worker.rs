//! The worker: one task in, its parts uploaded, a task report out.
//!
//! Pipeline, every stage concurrent and every queue bounded:
//! ```text
//! Source::read_range -> blocks of block_size -> compress (compress_parallelism blocks at
//! once, on the blocking pool: every core) -> members in source order -> PartAssembler ->
//! UploadPart (uploads_in_flight at once) -> TaskReport
//! ```
//! Peak memory is about `compress_parallelism * 2 * block_size` plus the source's reads in
//! flight plus the parts: `(uploads + 1) * (part_size + 5 MiB)` while that fits `part_memory`
//! (256 MiB by default: parts up to about 120 MiB, sources up to about 1 TiB), else the parts go
//! to temporary files in `spool_dir` and only a few MiB of them stay in memory
//! ([`WorkerTuning::part_storage`]). It grows neither with the range nor with the part size.
//! On the first error every stage stops (dropping the pipeline drops the SFTP stream and
//! aborts the uploads in flight) and the error names the stage that failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::assemble::{Part, PartAssembler, SPOOL_PREFIX};
use crate::error::{Error, Result};
use crate::gzip::{self, BlockCompressor, Level, Member};
use crate::source::Source;
use crate::store::{MultipartStore, UploadedPart};
use crate::types::{MIB, MIN_PART_SIZE};
use crate::wire::{Task, TaskReport};

/// Worker knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTuning {
    /// Blocks compressed at once. Default: twice the number of cores, so every core stays busy
    /// while finished members wait for a slower one ahead of them (members leave in source
    /// order). Each costs about two blocks of memory. Measured on 2 cores, 1 task over 1 GiB of
    /// logs: 3 in flight 310-319 MB/s, 4 320-334, 5 340 (+20 MiB). Too low: cores idle; too
    /// high: memory.
    pub compress_parallelism: usize,
    /// UploadPart requests in flight. Default 4. Each holds one part (in memory, or spooled
    /// when parts are big). Too low on a high-latency link: uploads lag compression; too high:
    /// memory (or spool space), and throttling by S3.
    pub uploads_in_flight: usize,
    /// Memory for parts: the part being cut plus those uploading. Fewer uploads run at once
    /// when `uploads_in_flight + 1` parts of the plan's part size would not fit (the planner
    /// raises the part size for sources over about 150 GiB); when not even two fit (parts over
    /// about 120 MiB at the default 256 MiB), parts are spooled to `spool_dir` instead. Too low:
    /// parts go to disk or upload one at a time; too high: a worker outgrows its memory.
    pub part_memory: u64,
    /// Where parts too big for `part_memory` are spooled, one temporary file per part, deleted
    /// once uploaded (or on failure). Default: the system's temporary directory (`/tmp` on
    /// Lambda, whose size is the function's EphemeralStorage). A task checks before it starts
    /// that the directory has room for `uploads + 1` parts (at least one, then uploads are
    /// sequential) and fails with [`Error::SpoolSpace`] otherwise.
    pub spool_dir: PathBuf,
    /// The most of `spool_dir` the tasks of this process may use together; `None` (the
    /// default): its free space. For a disk shared with other work.
    pub spool_limit: Option<u64>,
}

/// How a worker holds the parts it cuts ([`WorkerTuning::part_storage`]).
#[derive(Debug)]
pub struct PartStorage {
    /// UploadPart requests at once.
    pub uploads: usize,
    /// The spool directory, when parts go to disk; `None`: in memory.
    pub spool: Option<PathBuf>,
    /// Whether each part must finish uploading before the next is cut (the spool has room for
    /// one part only).
    pub sequential: bool,
    /// The spool space this task counts on, held back from the other tasks of this process
    /// until the storage is dropped.
    reservation: Option<SpoolReservation>,
}

/// File system slack per spooled part, on top of the part's `part_size + MIN_PART_SIZE`.
const SPOOL_SLACK: u64 = 16 * MIB;

/// Spool bytes counted on by the tasks running in this process, per directory: the CLI's
/// in-process tasks share one spool directory, and each must see the others' needs, not only
/// the bytes they have written so far.
static SPOOL_RESERVED: std::sync::Mutex<BTreeMap<PathBuf, u64>> =
    std::sync::Mutex::new(BTreeMap::new());

fn reserved() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, u64>> {
    SPOOL_RESERVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A share of a spool directory, returned when dropped.
#[derive(Debug)]
struct SpoolReservation {
    dir: PathBuf,
    bytes: u64,
}

impl Drop for SpoolReservation {
    fn drop(&mut self) {
        let mut map = reserved();
        if let Some(n) = map.get_mut(&self.dir) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                map.remove(&self.dir);
            }
        }
    }
}

impl Default for WorkerTuning {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        WorkerTuning {
            compress_parallelism: 2 * cores,
            uploads_in_flight: 4,
            part_memory: 256 * MIB,
            spool_dir: std::env::temp_dir(),
            spool_limit: None,
        }
    }
}

impl WorkerTuning {
    /// How to hold parts of `part_size`: in memory with up to `uploads_in_flight` uploads when
    /// at least two parts fit `part_memory`, else spooled to `spool_dir` with as many uploads
    /// as its free space allows (see [`spool_storage`](Self::spool_storage)).
    pub fn part_storage(&self, part_size: u64) -> Result<PartStorage> {
        if let Some(uploads) = self.uploads_in_memory(part_size) {
            return Ok(PartStorage {
                uploads,
                spool: None,
                sequential: false,
                reservation: None,
            });
        }
        let free = available_space(&self.spool_dir)?;
        let free = self.spool_limit.map_or(free, |limit| free.min(limit));
        self.reserve_spool(part_size, free)
    }

    /// Uploads at once when parts of `part_size` are held in memory: one part is being cut
    /// while the others upload, and all must fit `part_memory`; `None` when not even two fit
    /// (the parts are then spooled).
    pub fn uploads_in_memory(&self, part_size: u64) -> Option<usize> {
        let fit = (self.part_memory / (part_size + MIN_PART_SIZE)) as usize;
        (fit >= 2).then(|| self.uploads_in_flight.min(fit - 1))
    }

    /// [`spool_storage`](Self::spool_storage) on what `free` leaves after the reservations of
    /// the other tasks of this process, and reserves this task's share until the returned
    /// storage is dropped.
    fn reserve_spool(&self, part_size: u64, free: u64) -> Result<PartStorage> {
        let mut map = reserved();
        let others = map.get(&self.spool_dir).copied().unwrap_or(0);
        let mut storage = self.spool_storage(part_size, free.saturating_sub(others))?;
        let parts = if storage.sequential {
            1
        } else {
            storage.uploads as u64 + 1
        };
        let bytes = parts * spool_slot(part_size);
        *map.entry(self.spool_dir.clone()).or_default() += bytes;
        storage.reservation = Some(SpoolReservation {
            dir: self.spool_dir.clone(),
            bytes,
        });
        Ok(storage)
    }

    /// Spooled storage for parts of `part_size` given `free` bytes in `spool_dir`: one part is
    /// being cut while the others upload, so `uploads` is one less than the parts that fit;
    /// room for one part only means sequential uploads; none is [`Error::SpoolSpace`].
    pub fn spool_storage(&self, part_size: u64, free: u64) -> Result<PartStorage> {
        let slot = spool_slot(part_size);
        let fit = (free / slot) as usize;
        if fit == 0 {
            return Err(Error::SpoolSpace {
                dir: self.spool_dir.display().to_string(),
                part_size,
                needed: slot,
                available: free,
            });
        }
        Ok(PartStorage {
            uploads: self.uploads_in_flight.min(fit.saturating_sub(1)).max(1),
            spool: Some(self.spool_dir.clone()),
            sequential: fit == 1,
            reservation: None,
        })
    }

    /// Checks the knobs are usable.
    pub fn validate(&self) -> Result<()> {
        if self.compress_parallelism == 0 || self.uploads_in_flight == 0 {
            return Err(Error::invalid(
                "worker tuning",
                "compress_parallelism and uploads_in_flight must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Counters a caller may watch while tasks run (for a progress bar).
#[derive(Debug, Default)]
pub struct Progress {
    /// Size of the source, once the master has stat'ed it.
    pub total_bytes: AtomicU64,
    /// Source bytes compressed so far.
    pub source_bytes: AtomicU64,
    /// Compressed bytes uploaded so far.
    pub uploaded_bytes: AtomicU64,
}

/// Runs one task: reads its range from `source`, compresses it and uploads its parts to
/// `store`. Does not complete or abort the upload: that is the master's job.
pub async fn run<S: Source, M: MultipartStore + Clone + 'static>(
    task: &Task,
    source: &S,
    store: &M,
    tuning: &WorkerTuning,
    progress: Option<&Progress>,
) -> Result<TaskReport> {
    task.validate()?;
    tuning.validate()?;
    let started = Instant::now();
    tracing::info!(
        job = %task.job_id, task = task.index, range = %task.range, window = %task.window,
        "task started"
    );

    // Room for the parts first: a task that cannot hold them fails before it connects.
    let storage = tuning.part_storage(task.part_size)?;
    let mut assembler = match &storage.spool {
        None => PartAssembler::new(task.window, task.part_size, task.is_last)?,
        Some(dir) => PartAssembler::spooled(task.window, task.part_size, task.is_last, dir)?,
    };
    if let Some(dir) = &storage.spool {
        tracing::info!(
            job = %task.job_id, task = task.index, part_size = task.part_size,
            spool = %dir.display(), uploads = storage.uploads, sequential = storage.sequential,
            "parts spooled to disk"
        );
    }
    let chunks = source
        .read_range(&task.source.path, task.range, task.source_stat)
        .await?;
    let level = task.level;
    // The reader runs as its own task, blocks ahead of compression, so that the SFTP READ
    // pipeline keeps going while every compression slot is busy (polled only on demand, it
    // would stall and refill after each block). Dropping `reader` stops it.
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_BLOCKS);
    let mut reader = JoinSet::new();
    reader.spawn(read_ahead(
        blocks(chunks, task.range.start(), task.block_size as usize),
        tx,
    ));
    let mut members = tokio_stream_of(rx)
        .map_ok(move |(offset, block)| compress(level, offset, block))
        .try_buffered(tuning.compress_parallelism)
        .boxed();

    let mut uploads = Uploads::new(store.clone(), task, storage.uploads, progress);
    let mut crc32 = 0u32;
    let mut bytes_read = 0u64;
    let mut member_count = 0u64;
    while let Some(member) = members.next().await {
        let member = member?;
        crc32 = gzip::crc32_combine(crc32, member.crc32, member.input_len);
        bytes_read += member.input_len;
        member_count += 1;
        if let Some(p) = progress {
            p.source_bytes
                .fetch_add(member.input_len, Ordering::Relaxed);
        }
        let parts;
        (assembler, parts) = push(assembler, member.bytes).await?;
        for part in parts {
            uploads.start(part).await?;
            if storage.sequential {
                uploads.wait_all().await?;
            }
        }
    }
    // Close the SFTP stream before the last uploads finish.
    drop(members);
    // The reader has ended (the channel closed); a panic there would otherwise look like a
    // short source.
    while let Some(ended) = reader.join_next().await {
        if let Err(e) = ended {
            return Err(Error::Cancelled {
                reason: format!(
                    "the SFTP reader of task {} ended abnormally: {e}",
                    task.index
                ),
            });
        }
    }
    if bytes_read != task.range.len() {
        return Err(Error::SourceChanged {
            path: task.source.path.clone(),
            detail: format!(
                "the source gave {bytes_read} bytes for range {} of {} bytes",
                task.range,
                task.range.len()
            ),
        });
    }
    if task.range.is_empty() {
        // An empty source: the object is one empty gzip member.
        assembler.push(&gzip::EMPTY_MEMBER)?;
        member_count += 1;
    }
    let tail = blocking(move || assembler.finish()).await?;
    uploads.start(tail.part).await?;
    let parts = uploads.finish().await?;

    let report = TaskReport {
        index: task.index,
        range: task.range,
        bytes_read,
        compressed_bytes: parts.iter().map(|p| p.size).sum(),
        crc32,
        members: member_count + tail.padding_members,
        seconds: started.elapsed().as_secs_f64(),
        parts,
    };
    tracing::info!(
        job = %task.job_id, task = task.index, parts = report.parts.len(),
        bytes_read, compressed_bytes = report.compressed_bytes, seconds = report.seconds,
        "task done"
    );
    Ok(report)
}

/// Blocks read ahead of compression: each is `block_size` of memory.
const READ_AHEAD_BLOCKS: usize = 2;

/// Sends `blocks` into `tx` until they end, fail, or the receiver is gone.
async fn read_ahead(
    blocks: impl Stream<Item = Result<(u64, Bytes)>> + Send,
    tx: tokio::sync::mpsc::Sender<Result<(u64, Bytes)>>,
) {
    let mut blocks = std::pin::pin!(blocks);
    while let Some(block) = blocks.next().await {
        let failed = block.is_err();
        if tx.send(block).await.is_err() || failed {
            return;
        }
    }
}

/// The receiving end of the reader's channel as a stream.
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// Cuts a stream of chunks into blocks of `block_size` bytes (the last may be shorter), each
/// with its source offset.
fn blocks(
    chunks: crate::source::ByteStream,
    start: u64,
    block_size: usize,
) -> impl Stream<Item = Result<(u64, Bytes)>> + Send {
    struct State {
        chunks: crate::source::ByteStream,
        pending: BytesMut,
        offset: u64,
        done: bool,
    }
    let state = State {
        chunks,
        pending: BytesMut::with_capacity(block_size),
        offset: start,
        done: false,
    };
    futures::stream::try_unfold(state, move |mut st| async move {
        while !st.done && st.pending.len() < block_size {
            match st.chunks.next().await {
                Some(chunk) => st.pending.extend_from_slice(&chunk?),
                None => st.done = true,
            }
        }
        if st.pending.is_empty() {
            return Ok(None);
        }
        let take = st.pending.len().min(block_size);
        let block = st.pending.split_to(take).freeze();
        if st.pending.capacity() < block_size {
            st.pending.reserve(block_size);
        }
        let offset = st.offset;
        st.offset += take as u64;
        Ok(Some(((offset, block), st)))
    })
}

/// Disk one spooled part may take: the final part of a task is up to `part_size +
/// MIN_PART_SIZE - 1` bytes; the others are `part_size`.
pub fn spool_slot(part_size: u64) -> u64 {
    part_size + MIN_PART_SIZE + SPOOL_SLACK
}

/// Feeds one member to the assembler on the blocking pool (a spooling assembler writes files).
async fn push(mut assembler: PartAssembler, member: Bytes) -> Result<(PartAssembler, Vec<Part>)> {
    blocking(move || {
        let parts = assembler.push(&member)?;
        Ok((assembler, parts))
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Cancelled {
            reason: format!("part assembly ended abnormally: {e}"),
        })?
}

/// Bytes free for an unprivileged writer in the file system holding `dir`.
pub fn available_space(dir: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| Error::io("check free space of spool directory", dir, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Deletes spooled part files left in `dir` by a worker that was killed (a Lambda timeout
/// leaves /tmp to the next invocation). Only for a directory no running task uses; returns how
/// many files were deleted.
pub fn clear_spool(dir: &Path) -> Result<usize> {
    let io = |op, e| Error::io(op, dir, e);
    let mut deleted = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("list spool directory", e)),
    };
    let mut failed = None;
    for entry in entries {
        let entry = entry.map_err(|e| io("list spool directory", e))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(SPOOL_PREFIX)
        {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => deleted += 1,
                // Keep deleting the others; report the first failure.
                Err(e) => failed = failed.or(Some(e)),
            }
        }
    }
    match failed {
        Some(e) => Err(io("delete stale spool file in", e)),
        None => Ok(deleted),
    }
}

thread_local! {
    /// One libdeflate compressor per blocking-pool thread, reused across blocks and tasks.
    static COMPRESSOR: std::cell::RefCell<Option<BlockCompressor>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses one block on tokio's blocking pool.
async fn compress(level: Level, offset: u64, block: Bytes) -> Result<Member> {
    tokio::task::spawn_blocking(move || {
        COMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            let compressor = match slot.as_mut() {
                Some(c) if c.level() == level => c,
                _ => slot.insert(BlockCompressor::new(level)),
            };
            compressor.compress(&block, offset)
        })
    })
    .await
    .map_err(|e| Error::Compress {
        offset,
        source: Box::new(e),
    })?
}

/// The upload stage: at most `limit` UploadPart requests in flight; the first failure stops
/// the task (dropping the set aborts the others).
struct Uploads<'a, M> {
    store: M,
    task: &'a Task,
    in_flight: JoinSet<Result<UploadedPart>>,
    allowed: Arc<Semaphore>,
    done: Vec<UploadedPart>,
    progress: Option<&'a Progress>,
}

impl<'a, M: MultipartStore + Clone + 'static> Uploads<'a, M> {
    fn new(store: M, task: &'a Task, limit: usize, progress: Option<&'a Progress>) -> Self {
        Uploads {
            store,
            task,
            in_flight: JoinSet::new(),
            allowed: Arc::new(Semaphore::new(limit)),
            done: Vec::new(),
            progress,
        }
    }

    /// Starts uploading `part` once a slot is free, surfacing any failure so far.
    async fn start(&mut self, part: Part) -> Result<()> {
        loop {
            self.collect_finished()?;
            if let Ok(permit) = self.allowed.clone().try_acquire_owned() {
                let store = self.store.clone();
                let dest = self.task.destination.clone();
                let upload_id = self.task.upload_id.clone();
                self.in_flight.spawn(async move {
                    let uploaded = store
                        .upload_part(&dest, &upload_id, part.number, part.data)
                        .await;
                    // The part (and its spool file) is gone once the upload has ended.
                    drop(permit);
                    uploaded
                });
                return Ok(());
            }
            match self.in_flight.join_next().await {
                Some(res) => self.record(res)?,
                None => {
                    return Err(Error::Cancelled {
                        reason: "no upload slot became free".into(),
                    });
                }
            }
        }
    }

    fn collect_finished(&mut self) -> Result<()> {
        while let Some(res) = self.in_flight.try_join_next() {
            self.record(res)?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        res: std::result::Result<Result<UploadedPart>, tokio::task::JoinError>,
    ) -> Result<()> {
        let part = res.map_err(|e| Error::Cancelled {
            reason: format!("upload task ended abnormally: {e}"),
        })??;
        if let Some(p) = self.progress {
            p.uploaded_bytes.fetch_add(part.size, Ordering::Relaxed);
        }
        self.done.push(part);
        Ok(())
    }

    /// Waits for the uploads in flight (surfacing the first failure).
    async fn wait_all(&mut self) -> Result<()> {
        while let Some(res) = self.in_flight.join_next().await {
            self.record(res)?;
        }
        Ok(())
    }

    /// Waits for every upload; returns the parts in ascending order.
    async fn finish(mut self) -> Result<Vec<UploadedPart>> {
        while let Some(res) = self.in_flight.join_next().await {
            self.record(res)?;
        }
        self.done.sort_by_key(|p| p.number);
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuning(part_memory: u64) -> WorkerTuning {
        WorkerTuning {
            compress_parallelism: 3,
            uploads_in_flight: 4,
            part_memory,
            spool_dir: PathBuf::from("/spool"),
            spool_limit: None,
        }
    }

    #[test]
    fn small_parts_stay_in_memory_with_fewer_uploads_as_they_grow() {
        let t = tuning(256 * MIB);
        let s = t.part_storage(16 * MIB).unwrap();
        assert_eq!((s.uploads, s.spool, s.sequential), (4, None, false));
        // 256 / 63 = 4 parts fit: one being cut, three uploading.
        assert_eq!(t.part_storage(58 * MIB).unwrap().uploads, 3);
        // Two fit: one upload.
        let s = t.part_storage(120 * MIB).unwrap();
        assert_eq!((s.uploads, s.spool), (1, None));
    }

    #[test]
    fn big_parts_are_spooled_with_uploads_set_by_free_space() {
        let t = tuning(256 * MIB);
        let slot = 1024 * MIB + MIN_PART_SIZE + SPOOL_SLACK;
        let s = t.spool_storage(1024 * MIB, 10 * slot).unwrap();
        assert_eq!(s.spool.as_deref(), Some(Path::new("/spool")));
        assert_eq!((s.uploads, s.sequential), (4, false));
        let s = t.spool_storage(1024 * MIB, 3 * slot).unwrap();
        assert_eq!((s.uploads, s.sequential), (2, false));
        // Room for one part: cut it, upload it, then cut the next.
        let s = t.spool_storage(1024 * MIB, 2 * slot - 1).unwrap();
        assert_eq!((s.uploads, s.sequential), (1, true));
        // S3's largest parts fit Lambda's largest /tmp (10,240 MiB), sequentially at worst.
        let s = t
            .spool_storage(5 * 1024 * MIB - MIN_PART_SIZE, 10_240 * MIB)
            .unwrap();
        assert!(s.sequential);
    }

    #[test]
    fn tasks_of_one_process_share_the_spool() {
        let t = WorkerTuning {
            spool_dir: PathBuf::from("/spool-shared-by-two-tasks"),
            ..tuning(0)
        };
        let slot = spool_slot(1024 * MIB);
        let a = t.reserve_spool(1024 * MIB, 6 * slot).unwrap();
        assert_eq!((a.uploads, a.sequential), (4, false));
        // Five slots are the first task's: the second sees one.
        let b = t.reserve_spool(1024 * MIB, 6 * slot).unwrap();
        assert!(b.sequential);
        let err = t.reserve_spool(1024 * MIB, 6 * slot).unwrap_err();
        assert!(matches!(err, Error::SpoolSpace { .. }), "{err}");
        drop(a);
        drop(b);
        let c = t.reserve_spool(1024 * MIB, 6 * slot).unwrap();
        assert_eq!(c.uploads, 4, "reservations were not returned");
    }

    #[test]
    fn no_room_for_one_part_is_a_clear_error() {
        let t = tuning(0);
        let err = t.spool_storage(1024 * MIB, 512 * MIB).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::SpoolSpace { .. }), "{msg}");
        assert!(
            msg.contains("/spool") && msg.contains("EphemeralStorage"),
            "{msg}"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn free_space_is_read_from_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_space(dir.path()).unwrap() > 0);
        let err = available_space(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("spool directory"), "{err}");
    }

    #[test]
    fn clear_spool_deletes_only_spool_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{SPOOL_PREFIX}abc")), b"x").unwrap();
        std::fs::write(dir.path().join("keep.txt"), b"y").unwrap();
        assert_eq!(clear_spool(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep.txt").exists());
        assert_eq!(clear_spool(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn clear_spool_keeps_deleting_past_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        // remove_file fails on a directory; the files beside it still go.
        std::fs::create_dir(dir.path().join(format!("{SPOOL_PREFIX}dir"))).unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(format!("{SPOOL_PREFIX}{name}")), b"x").unwrap();
        }
        let err = clear_spool(dir.path()).unwrap_err();
        assert!(err.to_string().contains("delete stale spool file"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
