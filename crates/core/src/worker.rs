//! The worker: one task in, its parts uploaded, a task report out.
//!
//! Pipeline, every stage concurrent and every queue bounded:
//! ```text
//! Source::read_range -> blocks of block_size -> compress (compress_parallelism blocks at
//! once, on the blocking pool, one per core of the process at a time) -> members in source
//! order -> PartAssembler -> UploadPart (uploads_in_flight at once) -> TaskReport
//! ```
//! Peak memory is about `(2 * compress_parallelism + 4) * block_size` (blocks read ahead or
//! waiting for a core, members waiting for their turn; members are as big as blocks only for
//! incompressible data) plus one compressor per core plus the source's reads in flight plus
//! the parts: `(uploads + 1) * (part_size + 5 MiB)` while that fits `part_memory`
//! (256 MiB by default: parts up to about 120 MiB, sources up to about 1 TiB), else the parts go
//! to temporary files in the spool directory and only a few MiB of them stay in memory
//! ([`SpoolBudget::part_storage`], [`crate::spool`]). It grows neither with the range nor with
//! the part size.
//! On the first error every stage stops (dropping the pipeline drops the SFTP stream and
//! aborts the uploads in flight) and the error names the stage that failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::task::JoinSet;

use crate::assemble::{BufferPool, Part, PartAssembler, PartSink};
use crate::error::{Error, Result};
use crate::gzip::{self, BlockCompressor, Level, Member};
use crate::source::Source;
use crate::spool::SpoolBudget;
use crate::store::{MultipartStore, UploadedPart};
use crate::types::{MIB, MIN_PART_SIZE};
use crate::wire::{Task, TaskReport};

/// Turns transparent huge pages off for this process (the flag is the whole process's, on
/// Linux); a binary that runs tasks calls it first.
///
/// A task's memory is its block and part buffers, allocated once and reused (first touch is
/// most of their cost), and mimalloc backs them with 2 MiB pages where the system allows
/// (`madvise`). Measured on 2 cores of an AMD EPYC (KVM guest), 1 GiB of logs, alternating
/// builds: peak RSS 1 task 126 -> 102 MiB, 4 tasks 195 -> 170, pinned to one core 106 -> 86;
/// system time a third lower (five times the page faults, each far cheaper), user time
/// unchanged; fresh memory first touched at 0.32-0.38 GB/s in 2 MiB pages against 1.1-1.4
/// GB/s in 4 KiB pages (bench/results/2026-11-30-issue15-slots-pages.md). A kernel that
/// refuses leaves them on, which costs memory, not correctness: logged at debug.
pub fn disable_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "transparent huge pages stay on");
    }
}

/// The cores this process may run on (2 when unknown): the compression slots, and twice the
/// default `compress_parallelism`.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The async runtime of a process that runs tasks (the CLI, a Lambda worker): its worker
/// threads do the I/O (SSH decryption, READ handling, part assembly's hand-offs, uploads),
/// while compression runs on the blocking pool, one block per core at a time. One I/O thread
/// per two cores, at least one: tokio's default of one per core put two I/O threads beside
/// the two compressing ones on 2 cores, and woke both, each preempting a compressor. Measured
/// on 2 cores of an AMD EPYC, 1 GiB of logs, alternating builds, medians of 5: 1 task 218 ->
/// 223 MB/s, 4 tasks 224 -> 228 (2.02x the `ssh cat | pigz -p2` pipeline), sshd's CPU per GiB
/// 1.22 -> 1.09 and 1.07 -> 1.01, gzship's own unchanged
/// (bench/results/2026-12-08-issue15-io-threads.md). The I/O side costs about an eighth of
/// what compressing costs at level 6, and about 30% at level 1 (2.3 times cheaper to
/// compress), so one thread per two cores keeps up at any level, with room for uploads (only
/// 2 cores measured). `TOKIO_WORKER_THREADS`, when set, decides instead; a value that is no
/// number of threads (1 or more) is an error that names it.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match std::env::var_os("TOKIO_WORKER_THREADS") {
        None => io_threads(cores()),
        Some(set) => set
            .to_str()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "TOKIO_WORKER_THREADS is {set:?}: it must be a number of threads, 1 or more"
                    ),
                )
            })?,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(threads)
        .build()
}

/// The runtime's I/O threads on `cores` cores (see [`runtime`]).
fn io_threads(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// Worker knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTuning {
    /// Blocks a task hands to compression at once: compressing, or waiting for one of the
    /// process's compression slots (one per core, shared by every task). Default: twice the
    /// number of cores, so every core stays busy while finished members wait for a slower one
    /// ahead of them (members leave in source order). Each costs a block of memory. Measured
    /// on 2 cores, 1 task over 1 GiB of logs: 3 in flight 310-319 MB/s, 4 320-334, 5 340 (+20
    /// MiB). Too low: cores idle; too high: memory.
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
    /// sequential) and fails with [`Error::SpoolSpace`] otherwise. Read by
    /// [`spool_budget`](Self::spool_budget), whose budget the tasks then use.
    pub spool_dir: PathBuf,
    /// The most of `spool_dir` the tasks sharing one [`SpoolBudget`] (a CLI job, a Lambda
    /// worker process) may use together; `None` (the default): its free space. For a disk
    /// shared with other work.
    pub spool_limit: Option<u64>,
}

impl Default for WorkerTuning {
    fn default() -> Self {
        WorkerTuning {
            compress_parallelism: 2 * cores(),
            uploads_in_flight: 4,
            part_memory: 256 * MIB,
            spool_dir: std::env::temp_dir(),
            spool_limit: None,
        }
    }
}

impl WorkerTuning {
    /// The budget of `spool_dir` (capped by `spool_limit`) for the tasks of one runner: make it
    /// once per CLI job or Lambda worker process, and pass it to every [`run`].
    pub fn spool_budget(&self) -> SpoolBudget {
        SpoolBudget::new(self.spool_dir.clone(), self.spool_limit)
    }

    /// Uploads at once when parts of `part_size` are held in memory: one part is being cut
    /// while the others upload, and all must fit `part_memory`; `None` when not even two fit
    /// (the parts are then spooled).
    pub fn uploads_in_memory(&self, part_size: u64) -> Option<usize> {
        let fit = (self.part_memory / (part_size + MIN_PART_SIZE)) as usize;
        (fit >= 2).then(|| self.uploads_in_flight.min(fit - 1))
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
///
/// Parts too big for `tuning.part_memory` are spooled within `spool`, the budget shared by the
/// tasks of whoever runs them ([`WorkerTuning::spool_budget`]); its directory and limit are
/// the ones used.
#[tracing::instrument(name = "task", skip_all, fields(job = %task.job_id, task = task.index))]
pub async fn run<S: Source, M: MultipartStore + Clone + 'static>(
    task: &Task,
    source: &S,
    store: &M,
    tuning: &WorkerTuning,
    spool: &SpoolBudget,
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
    let storage = spool.part_storage(tuning, task.part_size)?;
    let mut assembler = PartAssembler::with_sink(
        task.window,
        task.part_size,
        task.is_last,
        storage.sink(task.part_size),
    )?;
    if let Some(dir) = storage.spool_dir() {
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
    // Blocks alive at once: those compressing, those in the channel, one waiting to be sent
    // and one being filled; each goes back to the pool once compressed.
    let block_buffers = BufferPool::new(
        task.block_size as usize,
        tuning.compress_parallelism + READ_AHEAD_BLOCKS + 2,
    );
    let mut reader = JoinSet::new();
    reader.spawn(read_ahead(
        blocks(
            chunks,
            task.range.start(),
            task.block_size as usize,
            block_buffers,
        ),
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
    // CPU time the compressors spent on this task's blocks: against the process's CPU, what
    // everything else costs (the "task done" line).
    let mut compress_cpu = std::time::Duration::ZERO;
    while let Some(member) = members.next().await {
        let (member, cpu) = member?;
        compress_cpu += cpu;
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
    // End the SFTP stream (its connection closes, or waits idle for the source's next
    // request) before the last uploads finish.
    drop(members);
    // The reader has ended (the channel closed); a panic there would otherwise look like a
    // short source.
    let mut reader_times = ReaderTimes::default();
    while let Some(ended) = reader.join_next().await {
        match ended {
            Ok(times) => reader_times = times,
            Err(e) => {
                return Err(Error::from_join(
                    format!("the source reader of task {}", task.index),
                    e,
                ));
            }
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
    // The wait for the last uploads is every task's, whatever held it back before.
    let upload_wait = uploads.waited;
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
        compress_cpu_seconds = compress_cpu.as_secs_f64(),
        // Which stage held the task back: the reader waiting for the source, the reader's
        // blocks waiting for compression, finished parts waiting for an upload to end.
        waited_for_source_seconds = reader_times.source.as_secs_f64(),
        held_by_compression_seconds = reader_times.held.as_secs_f64(),
        held_by_uploads_seconds = upload_wait.as_secs_f64(),
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
) -> ReaderTimes {
    let mut blocks = std::pin::pin!(blocks);
    let mut times = ReaderTimes::default();
    loop {
        let asked = Instant::now();
        let Some(block) = blocks.next().await else {
            return times;
        };
        times.source += asked.elapsed();
        let failed = block.is_err();
        let offered = Instant::now();
        let sent = tx.send(block).await;
        times.held += offered.elapsed();
        if sent.is_err() || failed {
            return times;
        }
    }
}

/// Where a task's reader spent its time, for the "task done" line: which stage held the task
/// back.
#[derive(Debug, Default, Clone, Copy)]
struct ReaderTimes {
    /// Waiting for the source's bytes (and cutting them into blocks).
    source: std::time::Duration,
    /// Held back by compression: its queue full.
    held: std::time::Duration,
}

/// The receiving end of the reader's channel as a stream.
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// Cuts a stream of chunks into blocks of `block_size` bytes (the last may be shorter), each
/// with its source offset. Each block is one copy of its chunks into a buffer of `buffers`,
/// which the buffer rejoins when the block is dropped (compressed).
fn blocks(
    chunks: crate::source::ByteStream,
    start: u64,
    block_size: usize,
    buffers: BufferPool,
) -> impl Stream<Item = Result<(u64, Bytes)>> + Send {
    struct State {
        chunks: crate::source::ByteStream,
        buffers: BufferPool,
        /// The part of the last chunk past the last block.
        rest: Bytes,
        offset: u64,
        done: bool,
    }
    let state = State {
        chunks,
        buffers,
        rest: Bytes::new(),
        offset: start,
        done: false,
    };
    futures::stream::try_unfold(state, move |mut st| async move {
        let mut block = st.buffers.take();
        let mut chunk = std::mem::take(&mut st.rest);
        loop {
            let room = block_size - block.len();
            if chunk.len() > room {
                st.rest = chunk.split_off(room);
            }
            block.extend_from_slice(&chunk);
            if block.len() == block_size || st.done {
                break;
            }
            match st.chunks.next().await {
                Some(next) => chunk = next?,
                None => {
                    st.done = true;
                    chunk = Bytes::new();
                }
            }
        }
        if block.is_empty() {
            return Ok(None);
        }
        let offset = st.offset;
        st.offset += block.len() as u64;
        Ok(Some(((offset, st.buffers.freeze(block)), st)))
    })
}

/// The assembler of a task, whichever sink its storage picked.
type Assembler = PartAssembler<Box<dyn PartSink + Send>>;

/// Feeds one member to the assembler on the blocking pool (a spool sink writes files).
async fn push(mut assembler: Assembler, member: Bytes) -> Result<(Assembler, Vec<Part>)> {
    blocking(move || {
        let parts = assembler.push(&member)?;
        Ok((assembler, parts))
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::from_join("part assembly", e))?
}

/// The process's compression, shared by every task: one slot per core, and the idle
/// compressors.
///
/// A compression holds a slot while it runs, so at most one block per core compresses at once
/// whatever the number of tasks and their `compress_parallelism` (the blocks a task hands to
/// compression). Without the slots, 4 tasks x 4 blocks on 2 cores ran as 16 threads that
/// preempted each other: each switch costs the next thread its caches, and every compressor
/// (libdeflate's state and a block-sized output buffer) stayed in memory. The semaphore is
/// fair, so blocks start in the order they ask, and a task asks in source order.
struct Compression {
    slots: Arc<tokio::sync::Semaphore>,
    /// The most recently used last: taking it reuses the memory likeliest still in cache.
    idle: std::sync::Mutex<Vec<BlockCompressor>>,
}

static COMPRESSION: std::sync::LazyLock<Compression> = std::sync::LazyLock::new(|| Compression {
    slots: Arc::new(tokio::sync::Semaphore::new(cores())),
    idle: std::sync::Mutex::new(Vec::new()),
});

impl Compression {
    /// An idle compressor at `level`, or a new one.
    fn take(&self, level: Level) -> BlockCompressor {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.iter().rposition(|c| c.level() == level) {
            Some(i) => idle.remove(i),
            None => {
                drop(idle);
                BlockCompressor::new(level)
            }
        }
    }

    fn give_back(&self, compressor: BlockCompressor) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(compressor);
    }
}

/// Compresses one block on tokio's blocking pool, once a compression slot is free; with the
/// CPU time the compression took on its thread.
async fn compress(
    level: Level,
    offset: u64,
    block: Bytes,
) -> Result<(Member, std::time::Duration)> {
    let slot = COMPRESSION
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Error::Compress {
            offset,
            source: format!("no compression slot: {e}").into(),
        })?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut compressor = COMPRESSION.take(level);
        let started = thread_cpu_time();
        let member = compressor.compress(&block, offset);
        let cpu = thread_cpu_time().saturating_sub(started);
        COMPRESSION.give_back(compressor);
        member.map(|m| (m, cpu))
    })
    .await
    .map_err(|e| Error::from_join(format!("compression of the block at offset {offset}"), e))?
}

/// CPU time of the calling thread so far (what a compression costs, whatever else runs).
pub fn thread_cpu_time() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The upload stage: at most `limit` UploadPart requests in flight, bounded by the set alone
/// (an upload counts until it is joined, and its part, spool file included, is dropped when
/// its task ends); the first failure stops the task (dropping the set aborts the others).
struct Uploads<'a, M> {
    store: M,
    task: &'a Task,
    in_flight: JoinSet<Result<UploadedPart>>,
    limit: usize,
    done: Vec<UploadedPart>,
    progress: Option<&'a Progress>,
    /// Time the task waited for uploads to end before it could start the next one.
    waited: std::time::Duration,
}

impl<'a, M: MultipartStore + Clone + 'static> Uploads<'a, M> {
    fn new(store: M, task: &'a Task, limit: usize, progress: Option<&'a Progress>) -> Self {
        Uploads {
            store,
            task,
            in_flight: JoinSet::new(),
            limit,
            done: Vec::new(),
            progress,
            waited: std::time::Duration::ZERO,
        }
    }

    /// Starts uploading `part` once fewer than `limit` uploads are in flight, surfacing any
    /// failure so far.
    async fn start(&mut self, part: Part) -> Result<()> {
        self.collect_finished()?;
        let asked = Instant::now();
        while self.in_flight.len() >= self.limit {
            match self.in_flight.join_next().await {
                Some(res) => self.record(res)?,
                None => break,
            }
        }
        self.waited += asked.elapsed();
        let store = self.store.clone();
        let dest = self.task.destination.clone();
        let upload_id = self.task.upload_id.clone();
        self.in_flight.spawn(async move {
            store
                .upload_part(&dest, &upload_id, part.number, part.data)
                .await
        });
        Ok(())
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
        let part = res.map_err(|e| Error::from_join("an upload of a part", e))??;
        if let Some(p) = self.progress {
            p.uploaded_bytes.fetch_add(part.size, Ordering::Relaxed);
        }
        self.done.push(part);
        Ok(())
    }

    /// Waits for the uploads in flight (surfacing the first failure).
    async fn wait_all(&mut self) -> Result<()> {
        let asked = Instant::now();
        while let Some(res) = self.in_flight.join_next().await {
            self.record(res)?;
        }
        self.waited += asked.elapsed();
        Ok(())
    }

    /// Waits for every upload; returns the parts in ascending order.
    async fn finish(mut self) -> Result<Vec<UploadedPart>> {
        self.wait_all().await?;
        self.done.sort_by_key(|p| p.number);
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Cuts `chunks` (of these sizes, numbered bytes) into blocks and checks them.
    fn cut(chunk_sizes: &[usize], block_size: usize) {
        let data: Vec<u8> = (0..chunk_sizes.iter().sum::<usize>())
            .map(|i| (i % 251) as u8)
            .collect();
        let mut at = 0;
        let chunks: Vec<Result<Bytes>> = chunk_sizes
            .iter()
            .map(|&n| {
                at += n;
                Ok(Bytes::copy_from_slice(&data[at - n..at]))
            })
            .collect();
        let pool = BufferPool::new(block_size, 4);
        let got: Vec<(u64, Bytes)> = block_on(
            blocks(
                futures::stream::iter(chunks).boxed(),
                1000,
                block_size,
                pool,
            )
            .try_collect(),
        )
        .unwrap();
        let mut offset = 1000;
        for (i, (o, block)) in got.iter().enumerate() {
            assert_eq!(*o, offset);
            if i + 1 < got.len() {
                assert_eq!(block.len(), block_size);
            } else {
                assert!((1..=block_size).contains(&block.len()));
            }
            let start = (offset - 1000) as usize;
            assert_eq!(&block[..], &data[start..start + block.len()]);
            offset += block.len() as u64;
        }
        assert_eq!(offset - 1000, data.len() as u64);
    }

    #[test]
    fn blocks_hold_the_chunks_in_order() {
        cut(&[], 4);
        cut(&[0, 0], 4);
        cut(&[4], 4);
        cut(&[3, 0, 5, 1], 4);
        cut(&[10], 3);
        cut(&[1; 9], 4);
    }

    #[test]
    fn blocks_reuse_the_buffers_of_compressed_blocks() {
        let pool = BufferPool::new(8, 4);
        let chunks = futures::stream::iter((0..4).map(|_| Ok(Bytes::from(vec![7u8; 8])))).boxed();
        let mut stream = std::pin::pin!(blocks(chunks, 0, 8, pool));
        block_on(async {
            let (_, first) = stream.next().await.unwrap().unwrap();
            let at = first.as_ptr();
            drop(first);
            let (_, second) = stream.next().await.unwrap().unwrap();
            assert_eq!(
                second.as_ptr(),
                at,
                "a new buffer instead of the returned one"
            );
            let (_, third) = stream.next().await.unwrap().unwrap();
            assert_ne!(third.as_ptr(), at, "a buffer lent twice");
        });
    }

    /// Idle compressors of the process at `level`.
    fn idle_compressors(level: Level) -> usize {
        COMPRESSION
            .idle
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.level() == level)
            .count()
    }

    #[test]
    fn huge_pages_can_be_turned_off() {
        disable_huge_pages();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
    }

    #[test]
    fn compressions_at_once_are_bounded_by_the_cores() {
        // Level 2 is used by no other test of this crate: its compressors are this test's.
        let level = Level::new(2).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let data = Bytes::from(vec![b'y'; 4 << 20]);
        rt.block_on(async {
            let all = (0..16).map(|i| compress(level, i, data.clone()));
            for compressed in futures::future::join_all(all).await {
                let (member, cpu) = compressed.unwrap();
                assert_eq!(member.input_len, 4 << 20);
                assert!(
                    cpu > std::time::Duration::ZERO,
                    "compressing 4 MiB took no CPU"
                );
            }
        });
        let made = idle_compressors(level);
        let cores = cores();
        assert!(
            (1..=cores).contains(&made),
            "{made} compressors for 16 blocks at once on {cores} cores"
        );
    }

    #[test]
    fn one_compressor_serves_compressions_in_turn() {
        // Level 3 is used by no other test of this crate: its compressors are this test's.
        let level = Level::new(3).unwrap();
        let idle = || idle_compressors(level);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let data = Bytes::from(vec![b'x'; 100_000]);
        rt.block_on(async {
            for i in 0..5 {
                let (member, _) = compress(level, i, data.clone()).await.unwrap();
                assert_eq!(member.input_len, 100_000);
                assert_eq!(member.crc32, crc32fast::hash(&data));
            }
        });
        assert_eq!(idle(), 1, "one compressor for compressions one at a time");
        rt.block_on(async {
            let both = futures::future::join(
                compress(level, 0, data.clone()),
                compress(level, 1, data.clone()),
            );
            let (a, b) = both.await;
            a.unwrap();
            b.unwrap();
        });
        assert!(
            (1..=2).contains(&idle()),
            "at most one per compression at once"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_chunks_make_exact_blocks(
            sizes in prop::collection::vec(0usize..3000, 0..40),
            block_size in 1usize..5000,
        ) {
            cut(&sizes, block_size);
        }
    }
}
