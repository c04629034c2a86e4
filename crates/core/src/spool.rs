//! Spooling: parts too big for a worker's memory go to temporary files in a spool directory.
//!
//! Everything about the spool lives here:
//! - [`SpoolBudget`]: the spool directory's space, shared by the tasks that one runner starts
//!   (a CLI job's [`LocalInvoker`](crate::invoke::local::LocalInvoker), a Lambda worker process): each
//!   task reserves its share before it connects, and gives it back when done.
//! - [`PartStorage`]: how one task holds its parts (memory or spool, uploads at once), with its
//!   reservation.
//! - [`SpoolSink`]: the [`PartSink`] that writes each part the assembler cuts to its own file;
//!   the file is deleted when the part's body is dropped (uploaded, failed or cancelled).
//! - [`SpoolBudget::clear_stale`]: deletes the files a killed worker left behind.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::assemble::PartSink;
use crate::error::{Error, Result};
use crate::store::PartBody;
use crate::types::{MIB, MIN_PART_SIZE};
use crate::worker::WorkerTuning;

/// File names of spooled parts start with this ([`SpoolBudget::clear_stale`] deletes only
/// those).
pub const SPOOL_PREFIX: &str = ".gzship-part-";

/// File system slack per spooled part, on top of the part's `part_size + MIN_PART_SIZE`.
const SPOOL_SLACK: u64 = 16 * MIB;

/// Disk one spooled part may take: the final part of a task is up to `part_size +
/// MIN_PART_SIZE - 1` bytes; the others are `part_size`.
pub fn spool_slot(part_size: u64) -> u64 {
    part_size + MIN_PART_SIZE + SPOOL_SLACK
}

/// The space of one spool directory, shared by the tasks one runner starts. Cheap to clone
/// (clones share the count).
///
/// Whoever runs tasks makes one ([`WorkerTuning::spool_budget`]) and passes it to every
/// [`worker::run`](crate::worker::run): once per CLI job, once per Lambda worker process
/// (invocations of one process share its /tmp). Each task reserves room for the parts it may
/// hold at once before it connects, so that concurrent tasks see each other's needs and not
/// only the bytes written so far; the reservation is returned when the task's
/// [`PartStorage`] is dropped.
#[derive(Debug, Clone)]
pub struct SpoolBudget {
    inner: Arc<Budget>,
}

#[derive(Debug)]
struct Budget {
    dir: PathBuf,
    limit: Option<u64>,
    /// Bytes reserved by the tasks holding a [`Reservation`] now.
    reserved: Mutex<u64>,
}

impl SpoolBudget {
    /// A budget for `dir`: its free space, capped by `limit` when given.
    pub fn new(dir: impl Into<PathBuf>, limit: Option<u64>) -> Self {
        SpoolBudget {
            inner: Arc::new(Budget {
                dir: dir.into(),
                limit,
                reserved: Mutex::new(0),
            }),
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bytes reserved by the tasks running now.
    pub fn reserved(&self) -> u64 {
        *self.lock()
    }

    /// How a task holds parts of `part_size`: in memory with up to `uploads_in_flight` uploads
    /// when at least two parts fit `part_memory` ([`WorkerTuning::uploads_in_memory`]), else
    /// spooled, with as many uploads as the room left in the budget allows, that room reserved
    /// until the storage is dropped. No room for one part is [`Error::SpoolSpace`].
    pub fn part_storage(&self, tuning: &WorkerTuning, part_size: u64) -> Result<PartStorage> {
        if let Some(uploads) = tuning.uploads_in_memory(part_size) {
            return Ok(PartStorage {
                uploads,
                sequential: false,
                spool: None,
            });
        }
        let free = available_space(self.dir())?;
        let free = self.inner.limit.map_or(free, |limit| free.min(limit));
        self.reserve(tuning.uploads_in_flight, part_size, free)
    }

    /// Spooled storage on what `free` leaves after the other tasks' reservations: one part is
    /// being cut while the others upload, so uploads are one less than the parts that fit;
    /// room for one part only means sequential uploads.
    fn reserve(&self, uploads_in_flight: usize, part_size: u64, free: u64) -> Result<PartStorage> {
        let mut reserved = self.lock();
        let room = free.saturating_sub(*reserved);
        let slot = spool_slot(part_size);
        let fit = (room / slot) as usize;
        if fit == 0 {
            return Err(Error::SpoolSpace {
                dir: self.dir().display().to_string(),
                part_size,
                needed: slot,
                available: room,
            });
        }
        let sequential = fit == 1;
        let uploads = uploads_in_flight.min(fit - 1).max(1);
        let parts = if sequential { 1 } else { uploads as u64 + 1 };
        let bytes = parts * slot;
        *reserved += bytes;
        Ok(PartStorage {
            uploads,
            sequential,
            spool: Some(Reservation {
                budget: self.clone(),
                bytes,
            }),
        })
    }

    /// Deletes spooled part files left in the directory by a worker that was killed (a Lambda
    /// timeout leaves /tmp to the next invocation); other files are kept. Call it only while no
    /// task uses the directory: before the first task of a process. Returns how many files
    /// were deleted; keeps deleting past a failure and reports the first one.
    pub fn clear_stale(&self) -> Result<usize> {
        let dir = self.dir();
        let io = |op, e| Error::io(op, dir, e);
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("list spool directory", e)),
        };
        let mut deleted = 0;
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
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
        }
        match failed {
            Some(e) => Err(io("delete stale spool file in", e)),
            None => Ok(deleted),
        }
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // A panic while holding the lock cannot leave the count half-updated (one `+=` or
        // `-=`), so a poisoned lock is still right.
        self.inner
            .reserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A task's share of a [`SpoolBudget`], returned when dropped.
#[derive(Debug)]
struct Reservation {
    budget: SpoolBudget,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut reserved = self.budget.lock();
        *reserved = reserved.saturating_sub(self.bytes);
    }
}

/// How one task holds the parts it cuts ([`SpoolBudget::part_storage`]). Keep it until the
/// task's last upload has ended: a spooled task's reservation is returned when it is dropped.
#[derive(Debug)]
pub struct PartStorage {
    /// UploadPart requests at once.
    pub uploads: usize,
    /// Whether each part must finish uploading before the next is cut (the spool has room for
    /// one part only).
    pub sequential: bool,
    spool: Option<Reservation>,
}

impl PartStorage {
    /// The spool directory, when parts go to disk; `None`: in memory.
    pub fn spool_dir(&self) -> Option<&Path> {
        self.spool.as_ref().map(|r| r.budget.dir())
    }

    /// The sink the task's part assembler writes parts of `part_size` to.
    pub fn sink(&self, part_size: u64) -> Box<dyn PartSink + Send> {
        match self.spool_dir() {
            Some(dir) => Box::new(SpoolSink::new(dir)),
            None => Box::new(crate::assemble::MemorySink::new(part_size, self.uploads)),
        }
    }
}

/// A [`PartSink`] that writes each part to its own temporary file in a spool directory, so that
/// only the assembler's few MiB of overflow stay in memory however big parts are. The file of a
/// finished part is deleted when its [`PartBody`] is dropped; the file of an unfinished part
/// when the sink is.
#[derive(Debug)]
pub struct SpoolSink {
    dir: PathBuf,
    current: Option<SpoolFile>,
}

#[derive(Debug)]
struct SpoolFile {
    file: std::io::BufWriter<std::fs::File>,
    path: tempfile::TempPath,
    len: u64,
}

impl SpoolSink {
    /// A sink writing its parts' files into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolSink {
            dir: dir.into(),
            current: None,
        }
    }

    /// The file of the part being filled, created at its first byte.
    fn current(&mut self) -> Result<&mut SpoolFile> {
        match self.current {
            Some(ref mut f) => Ok(f),
            None => Ok(self.current.insert(SpoolFile::create(&self.dir)?)),
        }
    }
}

impl SpoolFile {
    fn create(dir: &Path) -> Result<Self> {
        let (file, path) = tempfile::Builder::new()
            .prefix(SPOOL_PREFIX)
            .tempfile_in(dir)
            .map_err(|e| Error::io("create spool file in", dir, e))?
            .into_parts();
        Ok(SpoolFile {
            // Large buffered writes: members arrive a few MiB at a time.
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            path,
            len: 0,
        })
    }
}

impl PartSink for SpoolSink {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let f = self.current()?;
        f.file
            .write_all(bytes)
            .map_err(|e| Error::io("write spool file", &f.path, e))?;
        f.len += bytes.len() as u64;
        Ok(())
    }

    fn finish_part(&mut self, crc32c: u32) -> Result<PartBody> {
        // A part without bytes (a job's empty last part) still gets its (empty) file.
        let SpoolFile { file, path, len } = match self.current.take() {
            Some(f) => f,
            None => SpoolFile::create(&self.dir)?,
        };
        file.into_inner()
            .map_err(|e| Error::io("flush spool file", &path, e.into_error()))?;
        Ok(PartBody::spooled(path, len, crc32c))
    }
}

/// Bytes free for an unprivileged writer in the file system holding `dir`.
fn available_space(dir: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| Error::io("check free space of spool directory", dir, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::body::Content;

    const GIB: u64 = 1024 * MIB;

    fn tuning(part_memory: u64) -> WorkerTuning {
        WorkerTuning {
            compress_parallelism: 3,
            uploads_in_flight: 4,
            part_memory,
            spool_dir: PathBuf::from("/spool"),
            spool_limit: None,
        }
    }

    fn spool() -> SpoolBudget {
        SpoolBudget::new("/spool", None)
    }

    #[test]
    fn small_parts_stay_in_memory_with_fewer_uploads_as_they_grow() {
        let t = tuning(256 * MIB);
        let s = t.spool_budget().part_storage(&t, 16 * MIB).unwrap();
        assert_eq!((s.uploads, s.spool_dir(), s.sequential), (4, None, false));
        // 256 / 63 = 4 parts fit: one being cut, three uploading.
        assert_eq!(spool().part_storage(&t, 58 * MIB).unwrap().uploads, 3);
        // Two fit: one upload.
        let s = spool().part_storage(&t, 120 * MIB).unwrap();
        assert_eq!((s.uploads, s.spool_dir()), (1, None));
        assert_eq!(spool().reserved(), 0, "memory is not spool");
    }

    #[test]
    fn big_parts_are_spooled_with_uploads_set_by_free_space() {
        let slot = GIB + MIN_PART_SIZE + SPOOL_SLACK;
        assert_eq!(spool_slot(GIB), slot);
        let s = spool().reserve(4, GIB, 10 * slot).unwrap();
        assert_eq!(s.spool_dir(), Some(Path::new("/spool")));
        assert_eq!((s.uploads, s.sequential), (4, false));
        let s = spool().reserve(4, GIB, 3 * slot).unwrap();
        assert_eq!((s.uploads, s.sequential), (2, false));
        // Room for one part: cut it, upload it, then cut the next.
        let s = spool().reserve(4, GIB, 2 * slot - 1).unwrap();
        assert_eq!((s.uploads, s.sequential), (1, true));
        // S3's largest parts fit Lambda's largest /tmp (10,240 MiB), sequentially at worst.
        let s = spool()
            .reserve(4, 5 * GIB - MIN_PART_SIZE, 10_240 * MIB)
            .unwrap();
        assert!(s.sequential);
    }

    #[test]
    fn tasks_sharing_a_budget_see_each_others_reservations() {
        let budget = spool();
        let slot = spool_slot(GIB);
        let a = budget.reserve(4, GIB, 6 * slot).unwrap();
        assert_eq!((a.uploads, a.sequential), (4, false));
        assert_eq!(budget.reserved(), 5 * slot);
        // Five slots are the first task's: the second, on a clone, sees one.
        let b = budget.clone().reserve(4, GIB, 6 * slot).unwrap();
        assert!(b.sequential);
        let err = budget.reserve(4, GIB, 6 * slot).unwrap_err();
        assert!(matches!(err, Error::SpoolSpace { .. }), "{err}");
        // Another budget (another job) does not share this one's count.
        assert_eq!(spool().reserve(4, GIB, 6 * slot).unwrap().uploads, 4);
        drop(a);
        drop(b);
        assert_eq!(budget.reserved(), 0, "reservations were not returned");
        assert_eq!(budget.reserve(4, GIB, 6 * slot).unwrap().uploads, 4);
    }

    #[test]
    fn no_room_for_one_part_is_a_clear_error() {
        let err = spool().reserve(4, GIB, 512 * MIB).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::SpoolSpace { .. }), "{msg}");
        assert!(
            msg.contains("/spool") && msg.contains("EphemeralStorage"),
            "{msg}"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn the_limit_caps_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let t = WorkerTuning {
            spool_dir: dir.path().to_path_buf(),
            spool_limit: Some(spool_slot(GIB) - 1),
            ..tuning(0)
        };
        let err = t.spool_budget().part_storage(&t, GIB).unwrap_err();
        assert!(matches!(err, Error::SpoolSpace { .. }), "{err}");
        let t = WorkerTuning {
            spool_limit: Some(2 * spool_slot(5 * MIB)),
            ..t
        };
        let s = t.spool_budget().part_storage(&t, 5 * MIB).unwrap();
        assert_eq!((s.uploads, s.sequential), (1, false));
    }

    #[test]
    fn free_space_is_read_from_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_space(dir.path()).unwrap() > 0);
        let missing = SpoolBudget::new(dir.path().join("missing"), None);
        let err = missing.part_storage(&tuning(0), GIB).unwrap_err();
        assert!(err.to_string().contains("spool directory"), "{err}");
    }

    #[test]
    fn clear_stale_deletes_only_spool_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{SPOOL_PREFIX}abc")), b"x").unwrap();
        std::fs::write(dir.path().join("keep.txt"), b"y").unwrap();
        assert_eq!(SpoolBudget::new(dir.path(), None).clear_stale().unwrap(), 1);
        assert!(dir.path().join("keep.txt").exists());
        let missing = SpoolBudget::new(dir.path().join("missing"), None);
        assert_eq!(missing.clear_stale().unwrap(), 0);
    }

    #[test]
    fn clear_stale_keeps_deleting_past_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        // remove_file fails on a directory; the files beside it still go.
        std::fs::create_dir(dir.path().join(format!("{SPOOL_PREFIX}dir"))).unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(format!("{SPOOL_PREFIX}{name}")), b"x").unwrap();
        }
        let err = SpoolBudget::new(dir.path(), None)
            .clear_stale()
            .unwrap_err();
        assert!(err.to_string().contains("delete stale spool file"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    /// The storage's sink follows its decision: memory for small parts, files for big ones.
    #[test]
    fn the_storage_picks_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        let t = tuning(256 * MIB);
        let memory = spool().part_storage(&t, 16 * MIB).unwrap();
        let mut sink = memory.sink(16 * MIB);
        sink.write(b"abc").unwrap();
        assert!(matches!(
            sink.finish_part(0).unwrap().content(),
            Content::Memory(_)
        ));
        let spooled = SpoolBudget::new(dir.path(), None)
            .reserve(4, 5 * MIB, u64::MAX)
            .unwrap();
        let mut sink = spooled.sink(5 * MIB);
        sink.write(b"abc").unwrap();
        let body = sink.finish_part(0).unwrap();
        assert!(matches!(body.content(), Content::File(_)));
        drop(body);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_unfinished_spooled_part_is_deleted_with_its_sink() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SpoolSink::new(dir.path());
        sink.write(b"half a part").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(sink);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
