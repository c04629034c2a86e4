//! The part assembler: fed a task's gzip members in order, it cuts the task's compressed stream
//! into parts that S3 accepts whatever the data compresses to.
//!
//! Rules (DESIGN.md, "S3 rules"):
//! - A part is cut only when at least `part_size + MIN_PART_SIZE` bytes are pending, and then
//!   exactly `part_size` bytes leave. What stays behind is therefore never shorter than
//!   [`MIN_PART_SIZE`], so the task's final part is legal too, and no part is longer than
//!   `part_size + MIN_PART_SIZE - 1` (the planner keeps that under S3's 5 GiB).
//! - A task whose whole stream is under [`MIN_PART_SIZE`] is padded up to it with a padding
//!   member, which decodes to nothing ([`gzip::push_padding`]), unless it is the job's last
//!   task (S3 allows the upload's last part to be short).
//! - Part numbers are used in order from the start of the task's window; running past the
//!   window is an error (the planner sizes windows for the worst case, so that is a bug).
//!
//! The assembler does no I/O: it decides where each part starts and ends, numbers it and
//! computes its CRC32C, and hands the bytes of the part being cut to a [`PartSink`], which
//! decides where they go: [`MemorySink`] keeps them in memory; the worker's spool
//! ([`SpoolSink`](crate::spool::SpoolSink)) writes them to a file when parts are too big for
//! its memory. The parts are the same bytes either way.
//!
//! Memory: the assembler itself holds only the bytes past `part_size` (under `MIN_PART_SIZE +
//! one member`) until they prove that a part can be cut; a [`MemorySink`] adds the part being
//! cut (`part_size`), a spool sink a write buffer. That is how a worker keeps its memory
//! bounded when huge sources need parts of hundreds of MiB or GiB.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::gzip;
use crate::store::PartBody;
use crate::types::{MAX_PART_SIZE, MIN_PART_SIZE, PartNumber, PartWindow};

/// The largest `part_size` the assembler accepts: its longest part is
/// `part_size + MIN_PART_SIZE - 1`, which must stay within S3's 5 GiB.
pub const MAX_TARGET_PART_SIZE: u64 = MAX_PART_SIZE - MIN_PART_SIZE + 1;

/// One part, ready to upload.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its number, inside the task's window.
    pub number: PartNumber,
    /// Its bytes.
    pub data: PartBody,
}

/// A task's last part, and how many padding members it carries (0 or 1).
#[derive(Debug, Clone)]
pub struct FinalPart {
    /// The part.
    pub part: Part,
    /// Padding members appended to reach [`MIN_PART_SIZE`] (1 when the task was tiny, else 0).
    pub padding_members: u64,
}

/// Where the bytes of the parts being cut go.
///
/// Contract: [`write`](Self::write) appends to the part being filled, starting one if none is;
/// [`finish_part`](Self::finish_part) ends it and returns its body, whose bytes are exactly
/// those written since the previous `finish_part` (possibly none), with the CRC32C the
/// assembler computed over them. Dropping a sink drops the part being filled.
pub trait PartSink: fmt::Debug {
    /// Appends `bytes` to the part being filled.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;

    /// Ends the part being filled; `crc32c` is the CRC32C of its bytes.
    fn finish_part(&mut self, crc32c: u32) -> Result<PartBody>;
}

impl<K: PartSink + ?Sized> PartSink for Box<K> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        (**self).write(bytes)
    }

    fn finish_part(&mut self, crc32c: u32) -> Result<PartBody> {
        (**self).finish_part(crc32c)
    }
}

/// Buffers of one size that come back for reuse: [`freeze`](Self::freeze) turns a buffer
/// into [`Bytes`] that return it to the pool when their last clone is dropped (an uploaded
/// part, a compressed block), and [`take`](Self::take) hands out a returned one before it
/// allocates. A freshly allocated buffer costs the kernel a page fault and a zeroed page per
/// 4 KiB the first time it is written, since the allocator gives freed memory back to the
/// system: 5-7% of a job's CPU when every 4 MiB block and every part was new.
///
/// Memory: the pool keeps at most `keep` idle buffers, and only buffers that were in use
/// before, so the buffers in use plus those kept never outnumber the most that were in use at
/// once. When the pool is dropped (its task ended), its idle buffers, and those that come back
/// later, go to the process's spare (see [`Spare`]), where the next pool of the same size
/// finds them: a task touches fresh memory only where no earlier task of the process left any.
#[derive(Debug, Clone)]
pub(crate) struct BufferPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    capacity: usize,
    keep: usize,
    idle: Mutex<Vec<Vec<u8>>>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        Spare::with(|spare, now| {
            for buf in idle {
                spare.put(self.capacity, buf, now);
            }
        });
    }
}

impl BufferPool {
    /// A pool of buffers of `capacity` bytes that keeps at most `keep` idle ones.
    pub(crate) fn new(capacity: usize, keep: usize) -> Self {
        BufferPool {
            inner: Arc::new(PoolInner {
                capacity,
                keep,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// An empty buffer with room for at least `capacity` bytes: a returned one when the pool or
    /// the process's spare has one.
    pub(crate) fn take(&self) -> Vec<u8> {
        let reused = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        reused.unwrap_or_else(|| spare_buffer(self.inner.capacity))
    }

    /// `buf` as [`Bytes`] that give it back to the pool when the last clone is dropped.
    pub(crate) fn freeze(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            capacity: self.inner.capacity,
            pool: Arc::downgrade(&self.inner),
        })
    }

    /// Idle buffers (for tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.idle.lock().map_or(0, |idle| idle.len())
    }
}

/// A buffer lent out as [`Bytes`], on its way back to its pool (or, once the pool is gone, to
/// the process's spare).
struct Pooled {
    buf: Vec<u8>,
    /// The pool's buffer size: a buffer that shrank below it is not given back.
    capacity: usize,
    pool: Weak<PoolInner>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        let Some(pool) = self.pool.upgrade() else {
            give_spare(self.capacity, buf);
            return;
        };
        if buf.capacity() < self.capacity {
            return;
        }
        buf.clear();
        if let Ok(mut idle) = pool.idle.lock()
            && idle.len() < pool.keep
        {
            idle.push(buf);
        }
    }
}

/// The process's idle buffers that outlived their pools, by pool buffer size, for the next
/// pools of that size (the CLI runs a job's tasks one after another in one process; a warm
/// Lambda worker runs one task per invocation). Before, every task touched its own blocks and
/// parts afresh: with 4 tasks over 1 GiB of logs, two at a time, 58-66 k page faults per job
/// against 30-32 k for one task, three quarters of them in part, block and overflow buffers;
/// with the spare 44-50 k (bench/results/2026-12-07-issue15-spare-buffers.md).
///
/// Bounded: at most [`SPARE_BYTES`] in all, and a buffer no pool took within [`SPARE_FOR`] is
/// freed at the spare's next use; [`release_spare`] frees them all (a CLI that waits between
/// jobs). Like the pools, the spare holds only buffers that were in use, and a pool allocates
/// only when the spare has none of its size, so a size's buffers never outnumber the most in use
/// at once.
#[derive(Default)]
struct Spare {
    /// Idle buffers by the size of their pool, the most recently returned last, with when.
    by_capacity: HashMap<usize, Vec<(Vec<u8>, Instant)>>,
    /// Their capacities, summed.
    bytes: usize,
}

/// The most memory the spare holds: a few tasks' blocks and parts at the default sizes.
const SPARE_BYTES: usize = 512 << 20;
/// How long a spare buffer waits for a pool before it is freed.
const SPARE_FOR: Duration = Duration::from_secs(30);

static SPARE: Mutex<Option<Spare>> = Mutex::new(None);

impl Spare {
    /// Runs `f` on the process's spare, once the buffers that waited too long are freed.
    fn with<T>(f: impl FnOnce(&mut Spare, Instant) -> T) -> T {
        let now = Instant::now();
        let mut guard = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        let spare = guard.get_or_insert_with(Spare::default);
        spare.expire(now);
        f(spare, now)
    }

    /// Frees the buffers that waited [`SPARE_FOR`] or longer.
    fn expire(&mut self, now: Instant) {
        let mut freed = 0;
        self.by_capacity.retain(|_, bufs| {
            bufs.retain(|(buf, since)| {
                let keep = now.duration_since(*since) < SPARE_FOR;
                if !keep {
                    freed += buf.capacity();
                }
                keep
            });
            !bufs.is_empty()
        });
        self.bytes -= freed;
    }

    /// Keeps `buf` for a pool of buffers of `capacity`, unless that would pass [`SPARE_BYTES`].
    fn put(&mut self, capacity: usize, buf: Vec<u8>, now: Instant) {
        if self.bytes + buf.capacity() <= SPARE_BYTES {
            self.bytes += buf.capacity();
            self.by_capacity
                .entry(capacity)
                .or_default()
                .push((buf, now));
        }
    }

    /// The buffer for a pool of `capacity` returned last, if any.
    fn take(&mut self, capacity: usize) -> Option<Vec<u8>> {
        let bufs = self.by_capacity.get_mut(&capacity)?;
        let (buf, _) = bufs.pop()?;
        if bufs.is_empty() {
            self.by_capacity.remove(&capacity);
        }
        self.bytes -= buf.capacity();
        Some(buf)
    }
}

/// An empty buffer with room for at least `capacity` bytes, from the process's spare when it
/// has one of that size: for a buffer a task keeps to itself, which it gives back with
/// [`give_spare`].
fn spare_buffer(capacity: usize) -> Vec<u8> {
    Spare::with(|spare, _| spare.take(capacity)).unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Leaves `buf`, taken with [`spare_buffer`]`(capacity)`, to the next user of that size.
fn give_spare(capacity: usize, mut buf: Vec<u8>) {
    if buf.capacity() >= capacity {
        buf.clear();
        Spare::with(|spare, now| spare.put(capacity, buf, now));
    }
}

/// Frees every idle buffer that ended tasks left for the next ones: for a process that waits
/// between jobs (`gzship run --watch` between scans).
pub fn release_spare() {
    let spare = SPARE.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(spare);
}

/// A [`PartSink`] that holds each part in memory.
#[derive(Debug)]
pub struct MemorySink {
    buf: Vec<u8>,
    pool: BufferPool,
}

impl MemorySink {
    /// A sink for parts of about `part_size` bytes (it allocates that much for each part up
    /// front, so that filling a part never copies it to grow), that reuses the buffers of up
    /// to `spare` parts once their bodies are dropped (uploaded): pass the parts that are in
    /// memory at once besides the one being cut, which is the uploads in flight.
    pub fn new(part_size: u64, spare: usize) -> Self {
        MemorySink {
            buf: Vec::new(),
            pool: BufferPool::new(part_size as usize, spare),
        }
    }
}

impl PartSink for MemorySink {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.capacity() == 0 {
            self.buf = self.pool.take();
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn finish_part(&mut self, crc32c: u32) -> Result<PartBody> {
        let bytes = self.pool.freeze(std::mem::take(&mut self.buf));
        Ok(PartBody::memory(bytes, crc32c))
    }
}

/// Cuts one task's stream of members into parts.
///
/// The bytes of the part being cut (at most `part_size`, `current_len` of them so far) are in
/// the sink; bytes past it wait in `overflow` until at least [`MIN_PART_SIZE`] of them prove
/// that the part can be cut.
#[derive(Debug)]
pub struct PartAssembler<K = MemorySink> {
    window: PartWindow,
    part_size: u64,
    is_last_task: bool,
    sink: K,
    current_len: u64,
    current_crc32c: u32,
    /// A buffer of [`OVERFLOW_CAPACITY`] from the process's spare, given back when the
    /// assembler is dropped.
    overflow: Vec<u8>,
    emitted: u32,
    members: u64,
}

impl PartAssembler {
    /// An assembler for a task with part window `window`; `part_size` is the plan's part size
    /// and `is_last_task` whether the task ends the job (only then may its last part be short).
    /// Parts are held in memory.
    pub fn new(window: PartWindow, part_size: u64, is_last_task: bool) -> Result<Self> {
        Self::with_sink(
            window,
            part_size,
            is_last_task,
            MemorySink::new(part_size, 1),
        )
    }
}

impl<K: PartSink> PartAssembler<K> {
    /// Like [`new`](PartAssembler::new), but the parts' bytes go to `sink`.
    pub fn with_sink(
        window: PartWindow,
        part_size: u64,
        is_last_task: bool,
        sink: K,
    ) -> Result<Self> {
        check_part_size(part_size)?;
        Ok(PartAssembler {
            window,
            part_size,
            is_last_task,
            sink,
            current_len: 0,
            current_crc32c: 0,
            overflow: spare_buffer(OVERFLOW_CAPACITY),
            emitted: 0,
            members: 0,
        })
    }

    /// Adds the next member of the task's stream; returns the parts that are now complete
    /// (usually none or one).
    pub fn push(&mut self, member: &[u8]) -> Result<Vec<Part>> {
        self.members += 1;
        let room = (self.part_size - self.current_len) as usize;
        let (now, later) = member.split_at(room.min(member.len()));
        self.fill(now)?;
        self.overflow.extend_from_slice(later);
        let mut parts = Vec::new();
        // The current part is full whenever `overflow` holds anything, so this is "at least
        // part_size + MIN_PART_SIZE pending".
        while self.overflow.len() as u64 >= MIN_PART_SIZE {
            parts.push(self.cut()?);
            let moved = self.overflow.len().min(self.part_size as usize);
            let overflow = std::mem::take(&mut self.overflow);
            self.fill(&overflow[..moved])?;
            self.overflow = overflow;
            self.overflow.drain(..moved);
        }
        Ok(parts)
    }

    /// Ends the task's stream and returns its final part, padded if the whole task is under
    /// [`MIN_PART_SIZE`] and not the job's last.
    pub fn finish(mut self) -> Result<FinalPart> {
        if self.members == 0 {
            return Err(Error::invalid(
                "task stream",
                "a task must produce at least one gzip member",
            ));
        }
        let mut tail = std::mem::take(&mut self.overflow);
        let len = self.current_len + tail.len() as u64;
        let mut padding_members = 0;
        if self.emitted == 0 && len < MIN_PART_SIZE && !self.is_last_task {
            gzip::push_padding(&mut tail, MIN_PART_SIZE - len);
            padding_members = 1;
        }
        // The final part may exceed `part_size` (by under MIN_PART_SIZE).
        self.fill(&tail)?;
        self.overflow = tail;
        Ok(FinalPart {
            part: self.cut()?,
            padding_members,
        })
    }

    /// Number of parts cut so far.
    pub fn parts_emitted(&self) -> u32 {
        self.emitted
    }

    /// Adds `bytes` to the part being cut.
    fn fill(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.sink.write(bytes)?;
        self.current_crc32c = crc32c::crc32c_append(self.current_crc32c, bytes);
        self.current_len += bytes.len() as u64;
        Ok(())
    }

    /// Ends the part being cut and numbers it.
    fn cut(&mut self) -> Result<Part> {
        let number = self
            .window
            .nth(self.emitted)
            .ok_or(Error::PartWindowExceeded {
                needed: self.window.first().get() + self.emitted,
                last: self.window.last(),
            })?;
        let data = self.sink.finish_part(self.current_crc32c)?;
        self.current_len = 0;
        self.current_crc32c = 0;
        self.emitted += 1;
        Ok(Part { number, data })
    }
}

impl<K> Drop for PartAssembler<K> {
    fn drop(&mut self) {
        give_spare(OVERFLOW_CAPACITY, std::mem::take(&mut self.overflow));
    }
}

/// Room for the bytes past a full part: under [`MIN_PART_SIZE`] plus one member, which at the
/// default 4 MiB blocks is at most about 4 MiB (a larger block grows the buffer once). Taken
/// whole from the start, so that it never grows by copying (it did, a doubling at a time:
/// 5-7% of a 4-task job's page faults).
const OVERFLOW_CAPACITY: usize = 2 * MIN_PART_SIZE as usize;

/// Validates a target part size against S3's limits as the assembler uses it.
pub fn check_part_size(part_size: u64) -> Result<()> {
    if !(MIN_PART_SIZE..=MAX_TARGET_PART_SIZE).contains(&part_size) {
        return Err(Error::invalid(
            "part size",
            format!(
                "{part_size} bytes is outside {MIN_PART_SIZE}..={MAX_TARGET_PART_SIZE} \
                 (S3 parts are 5 MiB to 5 GiB, and a part may grow by up to 5 MiB - 1 \
                 when a task's short tail is merged into it)"
            ),
        ));
    }
    Ok(())
}

/// The sizes of the parts a task cuts from `compressed` bytes (padding included), in order.
/// The size-level twin of [`PartAssembler`], used by the planner and by property tests.
pub fn part_sizes(compressed: u64, part_size: u64, is_last_task: bool) -> Vec<u64> {
    let padded = if !is_last_task && compressed < MIN_PART_SIZE {
        MIN_PART_SIZE
    } else {
        compressed
    };
    let full = parts_needed(padded, part_size) - 1;
    let mut sizes = vec![part_size; full as usize];
    sizes.push(padded - full * part_size);
    sizes
}

/// How many parts a task cuts from `compressed` bytes; monotone in `compressed`, so the
/// planner sizes a window from the worst case.
pub fn parts_needed(compressed: u64, part_size: u64) -> u64 {
    if compressed < MIN_PART_SIZE {
        1
    } else {
        (compressed - MIN_PART_SIZE) / part_size + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SpoolSink;
    use crate::store::body::Content;
    use crate::types::MIB;
    use proptest::prelude::*;

    fn window(first: u32, count: u32) -> PartWindow {
        PartWindow::new(PartNumber::new(first).unwrap(), count).unwrap()
    }

    /// Feeds members of the given sizes (filled with a running byte counter) to an assembler
    /// with a memory sink and one with a spool sink, checks both cut the same parts (bytes and
    /// CRC32C), and returns the in-memory ones.
    fn run(sizes: &[usize], part_size: u64, last: bool, win: PartWindow) -> Result<Vec<Part>> {
        let dir = tempfile::tempdir().unwrap();
        let memory = feed(PartAssembler::new(win, part_size, last)?, sizes)?;
        let spooled = feed(
            PartAssembler::with_sink(win, part_size, last, SpoolSink::new(dir.path()))?,
            sizes,
        )?;
        assert_eq!(memory.len(), spooled.len());
        for (m, s) in memory.iter().zip(&spooled) {
            assert_eq!(m.number, s.number);
            assert!(matches!(m.data.content(), Content::Memory(_)));
            assert!(matches!(s.data.content(), Content::File(_)));
            assert_eq!(bytes_of(&m.data), bytes_of(&s.data));
            assert_eq!(m.data.crc32c(), crc32c::crc32c(&bytes_of(&m.data)));
            assert_eq!(m.data.crc32c(), s.data.crc32c());
        }
        drop(spooled);
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 0, "spool files outlived their parts");
        Ok(memory)
    }

    fn feed<K: PartSink>(mut a: PartAssembler<K>, sizes: &[usize]) -> Result<Vec<Part>> {
        let mut parts = Vec::new();
        let mut counter = 0u8;
        for &n in sizes {
            let m: Vec<u8> = (0..n)
                .map(|_| {
                    counter = counter.wrapping_add(1);
                    counter
                })
                .collect();
            parts.extend(a.push(&m)?);
        }
        parts.push(a.finish()?.part);
        Ok(parts)
    }

    fn bytes_of(body: &PartBody) -> Vec<u8> {
        match body.content() {
            Content::Memory(b) => b.to_vec(),
            Content::File(p) => std::fs::read(p).unwrap(),
        }
    }

    fn check(parts: &[Part], sizes: &[usize], part_size: u64, last: bool, win: PartWindow) {
        let total: u64 = sizes.iter().map(|&n| n as u64).sum();
        // Numbers ascend from the window's start.
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.number, win.nth(i as u32).unwrap());
        }
        // Sizes match the size-level model and obey S3's rules.
        let got: Vec<u64> = parts.iter().map(|p| p.data.len()).collect();
        assert_eq!(got, part_sizes(total, part_size, last));
        for (i, &s) in got.iter().enumerate() {
            let is_final = i + 1 == got.len();
            assert!(s < part_size + MIN_PART_SIZE);
            if !(is_final && last) {
                assert!(s >= MIN_PART_SIZE, "part {i} of {got:?} is short");
            }
        }
        // The data bytes come out once and in order; padding only after them.
        let joined: Vec<u8> = parts.iter().flat_map(|p| bytes_of(&p.data)).collect();
        let mut counter = 0u8;
        for &b in &joined[..total as usize] {
            counter = counter.wrapping_add(1);
            assert_eq!(b, counter);
        }
        if joined.len() as u64 > total {
            assert!(!last && total < MIN_PART_SIZE);
            assert_eq!(&joined[total as usize..total as usize + 2], &[0x1f, 0x8b]);
        }
    }

    #[test]
    fn small_non_last_task_is_padded_to_the_minimum() {
        let w = window(3, 1);
        let parts = run(&[300], 16 * MIB, false, w).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].data.len(), MIN_PART_SIZE);
        check(&parts, &[300], 16 * MIB, false, w);
    }

    #[test]
    fn small_last_task_is_not_padded() {
        let w = window(1, 1);
        let parts = run(&[300], 16 * MIB, true, w).unwrap();
        assert_eq!(parts[0].data.len(), 300);
    }

    #[test]
    fn short_tail_merges_into_the_previous_part() {
        // 16 MiB + 1 byte: one part, not 16 MiB + a 1-byte part.
        let sizes = [(16 * MIB) as usize, 1];
        let w = window(1, 2);
        let parts = run(&sizes, 16 * MIB, false, w).unwrap();
        assert_eq!(parts.len(), 1);
        check(&parts, &sizes, 16 * MIB, false, w);
        // 21 MiB: 16 + 5.
        let sizes = [(21 * MIB) as usize];
        let parts = run(&sizes, 16 * MIB, false, w).unwrap();
        assert_eq!(parts.len(), 2);
        check(&parts, &sizes, 16 * MIB, false, w);
    }

    #[test]
    fn exact_minimum_is_one_part() {
        let sizes = [MIN_PART_SIZE as usize];
        let w = window(1, 1);
        let parts = run(&sizes, MIN_PART_SIZE, false, w).unwrap();
        check(&parts, &sizes, MIN_PART_SIZE, false, w);
    }

    #[test]
    fn running_past_the_window_is_an_error() {
        let sizes = [(40 * MIB) as usize];
        let err = run(&sizes, 5 * MIB, false, window(7, 2)).unwrap_err();
        assert!(
            matches!(err, Error::PartWindowExceeded { needed: 9, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_task_without_members_is_an_error() {
        let a = PartAssembler::new(window(1, 1), 5 * MIB, true).unwrap();
        assert!(a.finish().is_err());
    }

    #[test]
    fn part_size_is_validated() {
        assert!(check_part_size(MIN_PART_SIZE - 1).is_err());
        assert!(check_part_size(MAX_TARGET_PART_SIZE + 1).is_err());
        assert!(check_part_size(MAX_TARGET_PART_SIZE).is_ok());
    }

    #[test]
    fn parts_needed_matches_part_sizes() {
        for c in [
            0,
            1,
            MIN_PART_SIZE - 1,
            MIN_PART_SIZE,
            21 * MIB - 1,
            21 * MIB,
            37 * MIB,
        ] {
            for last in [false, true] {
                assert_eq!(
                    part_sizes(c, 16 * MIB, last).len() as u64,
                    parts_needed(c, 16 * MIB)
                );
            }
        }
    }

    #[test]
    fn pooled_buffers_come_back_once_their_last_clone_is_dropped() {
        let pool = BufferPool::new(1000, 2);
        let mut buf = pool.take();
        assert!(buf.capacity() >= 1000);
        buf.extend_from_slice(b"part one");
        let at = buf.as_ptr();
        let bytes = pool.freeze(buf);
        let clone = bytes.slice(5..);
        drop(bytes);
        assert_eq!(
            (pool.idle(), &clone[..]),
            (0, &b"one"[..]),
            "a clone still reads it"
        );
        drop(clone);
        assert_eq!(pool.idle(), 1);
        let again = pool.take();
        assert_eq!(
            (again.as_ptr(), again.len()),
            (at, 0),
            "the same buffer, emptied"
        );
        // No more than `keep` idle buffers; none after the pool is gone.
        let lent: Vec<Bytes> = (0..3).map(|_| pool.freeze(pool.take())).collect();
        drop(lent);
        assert_eq!(pool.idle(), 2);
        let late = pool.freeze(pool.take());
        drop(pool);
        drop(late);
    }

    #[test]
    fn the_buffers_of_a_dropped_pool_serve_the_next_pool_of_their_size() {
        // A size no other test uses: the spare is the process's.
        let size = 4099;
        let first = BufferPool::new(size, 2);
        let idle = first.take();
        let lent = first.freeze(first.take());
        let (idle_at, lent_at) = (idle.as_ptr(), lent.as_ptr());
        drop(first.freeze(idle));
        assert_eq!(first.idle(), 1);
        drop(first);
        // Given back after its pool is gone (an upload that outlived its task).
        drop(lent);
        let next = BufferPool::new(size, 2);
        let got: Vec<Vec<u8>> = (0..3).map(|_| next.take()).collect();
        let at: Vec<*const u8> = got.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(
            (at[0], at[1]),
            (lent_at, idle_at),
            "the spare buffers, the last returned first"
        );
        assert!(got.iter().all(|b| b.is_empty() && b.capacity() >= size));
        assert!(!at[..2].contains(&at[2]), "a buffer handed out twice");
    }

    #[test]
    fn the_spare_is_bounded_in_bytes_and_in_time() {
        let t0 = Instant::now();
        let mut spare = Spare::default();
        spare.put(100, Vec::with_capacity(SPARE_BYTES - 64), t0);
        spare.put(100, Vec::with_capacity(128), t0);
        assert_eq!(spare.bytes, SPARE_BYTES - 64, "over the bound: freed");
        spare.put(7, Vec::with_capacity(64), t0 + SPARE_FOR / 2);
        assert_eq!(spare.bytes, SPARE_BYTES);
        assert!(
            spare.take(8).is_none(),
            "only buffers of their own pool's size"
        );
        spare.expire(t0 + SPARE_FOR);
        assert_eq!(spare.bytes, 64, "the older one waited too long");
        assert!(spare.take(100).is_none());
        assert_eq!(spare.take(7).map(|b| b.capacity()), Some(64));
        assert_eq!((spare.bytes, spare.by_capacity.len()), (0, 0));
    }

    #[test]
    fn a_memory_sink_reuses_the_buffers_of_dropped_parts() {
        let mut sink = MemorySink::new(64, 1);
        sink.write(b"first part").unwrap();
        let first = sink.finish_part(crc32c::crc32c(b"first part")).unwrap();
        let Content::Memory(bytes) = first.content() else {
            panic!("a memory sink keeps parts in memory");
        };
        let at = bytes.as_ptr();
        drop(first);
        sink.write(b"second").unwrap();
        let second = sink.finish_part(crc32c::crc32c(b"second")).unwrap();
        let Content::Memory(bytes) = second.content() else {
            panic!("a memory sink keeps parts in memory");
        };
        assert_eq!((bytes.as_ptr(), &bytes[..]), (at, &b"second"[..]));
        assert_eq!(second.crc32c(), crc32c::crc32c(b"second"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_member_sizes_give_legal_parts(
            sizes in prop::collection::vec(0usize..(3 << 20), 1..24),
            part_mib in 5u64..9,
            last in any::<bool>(),
        ) {
            let part_size = part_mib * MIB;
            let total: u64 = sizes.iter().map(|&n| n as u64).sum();
            let count = parts_needed(total.max(MIN_PART_SIZE), part_size) as u32;
            let w = window(11, count);
            let parts = run(&sizes, part_size, last, w).unwrap();
            check(&parts, &sizes, part_size, last, w);
        }
    }
}
