//! The worker: one task in, its parts uploaded, a task report out.
//!
//! Pipeline, every stage concurrent and every queue bounded:
//! ```text
//! Source::read_range -> blocks of block_size -> compress (compress_parallelism blocks at
//! once, on the blocking pool: every core) -> members in source order -> PartAssembler ->
//! UploadPart (uploads_in_flight at once) -> TaskReport
//! ```
//! Peak memory is about `compress_parallelism * 2 * block_size + (uploads + 2) * (part_size +
//! 5 MiB)` plus the source's reads in flight, where `uploads` is `uploads_in_flight` cut down to
//! fit `part_memory` ([`WorkerTuning::uploads_for`]); it does not grow with the range.
//! On the first error every stage stops (dropping the pipeline drops the SFTP stream and
//! aborts the uploads in flight) and the error names the stage that failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::assemble::{Part, PartAssembler};
use crate::error::{Error, Result};
use crate::gzip::{self, BlockCompressor, Level, Member};
use crate::source::Source;
use crate::store::{MultipartStore, UploadedPart};
use crate::types::{MIB, MIN_PART_SIZE};
use crate::wire::{Task, TaskReport};

/// Worker knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTuning {
    /// Blocks compressed at once. Default: the number of cores + 1, so every core stays busy
    /// while finished members wait their turn. Each costs about two blocks of memory. Too low:
    /// cores idle (throughput well under cores x ~150 MB/s at level 6); too high: memory.
    pub compress_parallelism: usize,
    /// UploadPart requests in flight. Default 4. Each holds one part in memory. Too low on a
    /// high-latency link: uploads lag compression; too high: memory, and throttling by S3.
    pub uploads_in_flight: usize,
    /// Memory for parts in flight: fewer uploads run at once when `uploads_in_flight` parts of
    /// the plan's part size would not fit (the planner raises the part size for sources over
    /// about 150 GiB). Default 256 MiB; at least one upload always runs, so with parts over
    /// about 120 MiB (sources over about 1 TiB) a worker needs about three parts of memory.
    /// Too low: uploads lag compression; too high: a worker outgrows its memory on huge jobs.
    pub part_memory: u64,
}

impl Default for WorkerTuning {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        WorkerTuning {
            compress_parallelism: cores + 1,
            uploads_in_flight: 4,
            part_memory: 256 * MIB,
        }
    }
}

impl WorkerTuning {
    /// Uploads to run at once for parts of `part_size`: `uploads_in_flight`, fewer when that
    /// many parts (each up to `part_size + 5 MiB`) would exceed `part_memory`, at least one.
    pub fn uploads_for(&self, part_size: u64) -> usize {
        let fit = self.part_memory / (part_size + MIN_PART_SIZE);
        self.uploads_in_flight.min(fit as usize).max(1)
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

    let chunks = source
        .read_range(&task.source.path, task.range, task.source_stat)
        .await?;
    let level = task.level;
    let mut members = blocks(chunks, task.range.start(), task.block_size as usize)
        .map_ok(move |(offset, block)| compress(level, offset, block))
        .try_buffered(tuning.compress_parallelism)
        .boxed();

    let mut assembler = PartAssembler::new(task.window, task.part_size, task.is_last)?;
    let mut uploads = Uploads::new(
        store.clone(),
        task,
        tuning.uploads_for(task.part_size),
        progress,
    );
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
        for part in assembler.push(&member.bytes)? {
            uploads.start(part).await?;
        }
    }
    // Close the SFTP stream before the last uploads finish.
    drop(members);
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
    let tail = assembler.finish()?;
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

    #[test]
    fn uploads_in_flight_shrink_with_big_parts() {
        let t = WorkerTuning {
            compress_parallelism: 3,
            uploads_in_flight: 4,
            part_memory: 256 * MIB,
        };
        assert_eq!(t.uploads_for(16 * MIB), 4);
        assert_eq!(t.uploads_for(114 * MIB), 2);
        assert_eq!(t.uploads_for(4096 * MIB), 1);
    }
}
