//! The planner: from the source size and the tuning, the tasks (ranges and part windows) and
//! the part size, such that S3 accepts the result for any data.
//!
//! Windows are sized for the worst case, incompressible data (deflate's stored blocks, a little
//! over 1:1), because a task cannot borrow part numbers from its neighbours once the job runs.
//! When the windows would need more than 10,000 parts the part size is raised. The largest
//! source that fits is about 48.7 TiB (10,000 parts of just under 5 GiB, less deflate's
//! worst-case overhead); larger sources are refused.

use serde::{Deserialize, Serialize};

use crate::assemble::{MAX_TARGET_PART_SIZE, check_part_size, parts_needed};
use crate::error::{Error, Result};
use crate::gzip;
use crate::types::{ByteRange, GIB, KIB, MAX_PARTS, MIB, PartNumber, PartWindow};

/// Knobs of the planner. Every field has a default that suits multi-GB log files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tuning {
    /// Source bytes per block; each block becomes one gzip member, compressed on one core.
    /// Default 4 MiB. Smaller blocks cost ratio (each member restarts deflate's 32 KiB
    /// window) and per-member overhead; larger blocks cost memory (blocks in flight × size) and
    /// parallelism on small ranges. Allowed 64 KiB..=256 MiB.
    pub block_size: u64,
    /// Target compressed bytes per part. Default 16 MiB; the planner raises it when the job would
    /// need more than 10,000 parts. Each upload in flight holds about one part in memory, so a
    /// large value raises the worker's memory; a small one means more UploadPart requests.
    pub part_size: u64,
    /// Source bytes per task when `tasks` is not given. Default 1 GiB: a worker reads and
    /// compresses that in well under a minute. Too large: fewer workers run in parallel and a
    /// task may approach the worker's time limit; too small: more SSH handshakes and padding.
    pub task_size: u64,
    /// Number of tasks to split the source into. Overrides `task_size`. The plan has fewer when
    /// the source is too small to give each task a whole block, or so close to S3's size limit
    /// that only fewer, longer tasks fit in 10,000 parts.
    pub tasks: Option<u32>,
    /// Most tasks a job may have. Default 1000, at most 10,000 (each task needs a part).
    pub max_tasks: u32,
    /// Longest range one task may read, from the invoker's time limit and the worker's
    /// throughput. `None`: no limit (local runs).
    pub max_task_size: Option<u64>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            block_size: 4 * MIB,
            part_size: 16 * MIB,
            task_size: GIB,
            tasks: None,
            max_tasks: 1000,
            max_task_size: None,
        }
    }
}

impl Tuning {
    /// Checks every field against its allowed range.
    pub fn validate(&self) -> Result<()> {
        if !(64 * KIB..=256 * MIB).contains(&self.block_size) {
            return Err(Error::invalid(
                "block size",
                format!("{} bytes is outside 64 KiB..=256 MiB", self.block_size),
            ));
        }
        check_part_size(self.part_size)?;
        // A member never spans more than two parts, so cutting one member cuts at most one
        // part: the worker's memory and spool accounting count on it.
        if gzip::member_bound(self.block_size) > self.part_size {
            return Err(Error::invalid(
                "block size",
                format!(
                    "{} bytes may compress to {} bytes, more than the part size {}: use \
                     smaller blocks or bigger parts",
                    self.block_size,
                    gzip::member_bound(self.block_size),
                    self.part_size
                ),
            ));
        }
        if self.task_size < self.block_size {
            return Err(Error::invalid(
                "task size",
                format!(
                    "{} bytes is smaller than the block size {}",
                    self.task_size, self.block_size
                ),
            ));
        }
        if !(1..=MAX_PARTS).contains(&self.max_tasks) {
            return Err(Error::invalid(
                "max tasks",
                format!("{} is outside 1..={MAX_PARTS}", self.max_tasks),
            ));
        }
        if let Some(n) = self.tasks
            && !(1..=self.max_tasks).contains(&n)
        {
            return Err(Error::invalid(
                "tasks",
                format!("{n} is outside 1..={} (max tasks)", self.max_tasks),
            ));
        }
        if let Some(max) = self.max_task_size
            && max < self.block_size
        {
            return Err(Error::invalid(
                "max task size",
                format!(
                    "{max} bytes is smaller than the block size {}",
                    self.block_size
                ),
            ));
        }
        Ok(())
    }
}

/// One task of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedTask {
    /// Position in the plan, from 0.
    pub index: u32,
    /// The source bytes it reads.
    pub range: ByteRange,
    /// The part numbers it may use.
    pub window: PartWindow,
    /// Whether it ends the job (only the last task may end with a short part).
    pub is_last: bool,
}

/// The planner's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Source size in bytes.
    pub source_size: u64,
    /// Source bytes per block (gzip member).
    pub block_size: u64,
    /// Target compressed bytes per part (parts are this size, except each task's last, which is
    /// between 5 MiB and this + 5 MiB - 1; the job's last part may be shorter).
    pub part_size: u64,
    /// The tasks, in source order.
    pub tasks: Vec<PlannedTask>,
}

impl Plan {
    /// Part numbers reserved by all windows.
    pub fn reserved_parts(&self) -> u32 {
        self.tasks.iter().map(|t| t.window.count()).sum()
    }
}

/// The largest compressed size `len` source bytes can take when cut into blocks of
/// `block_size`, at any level.
pub fn worst_case_compressed(len: u64, block_size: u64) -> u64 {
    if len == 0 {
        return gzip::EMPTY_MEMBER.len() as u64;
    }
    let full = len / block_size;
    let rest = len % block_size;
    full * gzip::member_bound(block_size)
        + if rest > 0 {
            gzip::member_bound(rest)
        } else {
            0
        }
}

/// Plans a job for a source of `size` bytes.
pub fn plan(size: u64, tuning: &Tuning) -> Result<Plan> {
    tuning.validate()?;
    let refuse = |reason: String| Error::Plan { size, reason };
    let block = tuning.block_size;

    let by_time = tuning.max_task_size.map_or(1, |max| size.div_ceil(max));
    let wanted = match tuning.tasks {
        Some(n) => u64::from(n),
        None => size.div_ceil(tuning.task_size).max(by_time),
    }
    .clamp(1, u64::from(tuning.max_tasks));

    // Every task may waste up to one part of its window, so near S3's size limit another task
    // count (usually fewer, longer tasks) is what fits in 10,000 parts. Try the wanted count
    // first, then fewer, then more.
    let fits_s3 = |l: &Layout| l.total_parts(block, MAX_TARGET_PART_SIZE) <= u64::from(MAX_PARTS);
    let first = Layout::new(size, wanted, block);
    let layout = if fits_s3(&first) {
        first
    } else {
        (1..wanted)
            .rev()
            .chain(wanted + 1..=u64::from(tuning.max_tasks))
            .map(|n| Layout::new(size, n, block))
            .find(|l| fits_s3(l))
            .ok_or_else(|| {
                refuse(format!(
                    "it would need {} parts even at the largest part size \
                     ({MAX_TARGET_PART_SIZE} bytes), and S3 allows {MAX_PARTS}; incompressible \
                     data this large would exceed S3's object size limit (about 48.7 TiB can be \
                     shipped)",
                    first.total_parts(block, MAX_TARGET_PART_SIZE),
                ))
            })?
    };
    if let Some(max) = tuning.max_task_size
        && layout.range_len > max
    {
        return Err(refuse(format!(
            "{} tasks would each read {} bytes, more than the {max} bytes a worker can read \
             within its time limit; allow more tasks (max tasks is {}) or a longer worker time \
             limit",
            layout.count, layout.range_len, tuning.max_tasks
        )));
    }

    let fits = |part_size: u64| layout.total_parts(block, part_size) <= u64::from(MAX_PARTS);
    let part_size = if fits(tuning.part_size) {
        tuning.part_size
    } else {
        // The smallest part size that fits: the part count is non-increasing in the part size.
        let (mut lo, mut hi) = (tuning.part_size, MAX_TARGET_PART_SIZE);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) { hi = mid } else { lo = mid + 1 }
        }
        // Whole MiB read better in plans and logs, when that still fits.
        let rounded = lo.next_multiple_of(MIB);
        if rounded <= MAX_TARGET_PART_SIZE {
            rounded
        } else {
            lo
        }
    };

    let mut tasks = Vec::with_capacity(layout.count as usize);
    let mut next_part = 1u32;
    for (i, range) in layout.ranges().enumerate() {
        let count = parts_needed(worst_case_compressed(range.len(), block), part_size) as u32;
        let window = PartWindow::new(PartNumber::new(next_part)?, count)?;
        next_part += count;
        tasks.push(PlannedTask {
            index: i as u32,
            range,
            window,
            is_last: i as u64 + 1 == layout.count,
        });
    }
    Ok(Plan {
        source_size: size,
        block_size: block,
        part_size,
        tasks,
    })
}

/// `[0, size)` cut into `count` ranges of `range_len` bytes (a whole number of blocks), the
/// last one shorter.
struct Layout {
    size: u64,
    range_len: u64,
    count: u64,
}

impl Layout {
    fn new(size: u64, wanted: u64, block: u64) -> Layout {
        if size == 0 {
            // An empty source still gets one task: it uploads the one empty gzip member.
            return Layout {
                size,
                range_len: 0,
                count: 1,
            };
        }
        let range_len = size.div_ceil(wanted).next_multiple_of(block);
        Layout {
            size,
            range_len,
            count: size.div_ceil(range_len),
        }
    }

    fn last_len(&self) -> u64 {
        self.size - (self.count - 1) * self.range_len
    }

    fn total_parts(&self, block: u64, part_size: u64) -> u64 {
        let parts = |len| parts_needed(worst_case_compressed(len, block), part_size);
        (self.count - 1) * parts(self.range_len) + parts(self.last_len())
    }

    fn ranges(&self) -> impl Iterator<Item = ByteRange> + '_ {
        (0..self.count).map(|i| {
            let start = i * self.range_len;
            let end = (start + self.range_len).min(self.size);
            ByteRange::new(start, end).expect("ranges are built with start <= end")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::part_sizes;
    use crate::types::{MAX_PART_SIZE, MIN_PART_SIZE, TIB};
    use proptest::prelude::*;

    /// The largest size the planner accepts with default tuning (found by the boundary test).
    const LIMIT: u64 = 48 * TIB + 742 * GIB;

    /// Checks every S3 rule for a plan, given the compressed size each task's range becomes
    /// (anything from highly compressible to the worst case).
    fn check_plan(plan: &Plan, compressed: impl Fn(&PlannedTask) -> u64) {
        let size = plan.source_size;
        assert!(!plan.tasks.is_empty());
        assert!(plan.reserved_parts() <= MAX_PARTS);
        assert!(plan.part_size + MIN_PART_SIZE - 1 <= MAX_PART_SIZE);
        let mut expect_start = 0;
        let mut expect_part = 1;
        let mut all_parts = Vec::new();
        for (i, t) in plan.tasks.iter().enumerate() {
            assert_eq!(t.index as usize, i);
            // Ranges cover every byte once, in order; only an empty source has an empty range.
            assert_eq!(t.range.start(), expect_start);
            assert!(!t.range.is_empty() || size == 0);
            expect_start = t.range.end();
            // Windows ascend without overlap.
            assert_eq!(t.window.first().get(), expect_part);
            expect_part = t.window.last().get() + 1;
            assert_eq!(t.is_last, i + 1 == plan.tasks.len());
            let c = compressed(t);
            assert!(c <= worst_case_compressed(t.range.len(), plan.block_size));
            let sizes = part_sizes(c, plan.part_size, t.is_last);
            assert!(
                sizes.len() as u32 <= t.window.count(),
                "task {i} overflows its window"
            );
            all_parts.extend(sizes);
        }
        assert_eq!(expect_start, size);
        assert!(all_parts.len() as u32 <= MAX_PARTS);
        let n = all_parts.len();
        for (i, &p) in all_parts.iter().enumerate() {
            assert!(p <= MAX_PART_SIZE, "part {i} is {p} bytes");
            if i + 1 < n {
                assert!(p >= MIN_PART_SIZE, "non-last part {i} is {p} bytes");
            }
        }
    }

    fn at_ratio(plan: &Plan, ratio: f64) -> impl Fn(&PlannedTask) -> u64 + '_ {
        move |t| {
            let worst = worst_case_compressed(t.range.len(), plan.block_size);
            let c = (t.range.len() as f64 / ratio) as u64;
            c.clamp(gzip::EMPTY_MEMBER.len() as u64, worst)
        }
    }

    #[test]
    fn empty_source_is_one_task_with_one_part() {
        let p = plan(0, &Tuning::default()).unwrap();
        assert_eq!(p.tasks.len(), 1);
        assert!(p.tasks[0].range.is_empty());
        assert_eq!(p.tasks[0].window.count(), 1);
        check_plan(&p, at_ratio(&p, 1.0));
    }

    #[test]
    fn one_byte_source() {
        let p = plan(1, &Tuning::default()).unwrap();
        assert_eq!(p.tasks.len(), 1);
        assert_eq!(p.tasks[0].range.len(), 1);
        check_plan(&p, |_| 21);
    }

    #[test]
    fn one_byte_over_a_block_and_a_part() {
        let t = Tuning::default();
        for size in [
            t.block_size + 1,
            t.part_size + 1,
            t.task_size + 1,
            2 * t.task_size - 1,
        ] {
            let p = plan(size, &t).unwrap();
            for ratio in [1.0, 10.0, 1000.0] {
                check_plan(&p, at_ratio(&p, ratio));
            }
        }
        // One byte over a task: two balanced tasks, not a full one and a 1-byte one.
        let p = plan(t.task_size + 1, &t).unwrap();
        assert_eq!(p.tasks.len(), 2);
        assert!(p.tasks[0].range.len() - p.tasks[1].range.len() < 2 * t.block_size);
    }

    #[test]
    fn ranges_align_to_blocks() {
        let t = Tuning {
            tasks: Some(3),
            ..Tuning::default()
        };
        let p = plan(100 * MIB + 7, &t).unwrap();
        assert_eq!(p.tasks.len(), 3);
        for task in &p.tasks[..2] {
            assert_eq!(task.range.len() % t.block_size, 0);
        }
    }

    #[test]
    fn tiny_tasks_still_get_legal_parts() {
        // A middle range that compresses to a few hundred bytes is padded to 5 MiB.
        let t = Tuning {
            tasks: Some(4),
            block_size: 64 * KIB,
            ..Tuning::default()
        };
        let p = plan(1 << 20, &t).unwrap();
        assert_eq!(p.tasks.len(), 4);
        check_plan(&p, |_| 300);
    }

    #[test]
    fn part_size_is_raised_for_big_sources() {
        let p = plan(TIB, &Tuning::default()).unwrap();
        assert!(p.part_size > 16 * MIB);
        assert_eq!(p.part_size % MIB, 0);
        check_plan(&p, at_ratio(&p, 1.0));
    }

    #[test]
    fn refuses_what_s3_cannot_hold() {
        let err = plan(LIMIT + GIB, &Tuning::default()).unwrap_err();
        assert!(matches!(err, Error::Plan { .. }));
        assert!(err.to_string().contains("10000"), "{err}");
        assert!(plan(49 * TIB, &Tuning::default()).is_err());
    }

    #[test]
    fn largest_plannable_source_is_near_s3s_limit() {
        let t = Tuning::default();
        let p = plan(LIMIT, &t).unwrap();
        check_plan(&p, at_ratio(&p, 1.0));
        // Find the boundary to 1 GiB and check it is where we document it.
        let (mut lo, mut hi) = (LIMIT, 49 * TIB);
        while hi - lo > GIB {
            let mid = lo + (hi - lo) / 2;
            if plan(mid, &t).is_ok() {
                lo = mid
            } else {
                hi = mid
            }
        }
        assert!(lo < LIMIT + 2 * GIB, "boundary moved to {lo}");
    }

    #[test]
    fn respects_the_time_limit() {
        let t = Tuning {
            max_task_size: Some(10 * GIB),
            max_tasks: 10,
            ..Tuning::default()
        };
        assert!(plan(100 * GIB, &t).is_ok());
        let err = plan(101 * GIB, &t).unwrap_err();
        assert!(err.to_string().contains("time limit"), "{err}");
        // Without an explicit task count, the limit raises the number of tasks.
        let t = Tuning {
            task_size: 64 * GIB,
            max_task_size: Some(10 * GIB),
            ..Tuning::default()
        };
        let p = plan(100 * GIB, &t).unwrap();
        assert!(p.tasks.iter().all(|t| t.range.len() <= 10 * GIB));
    }

    #[test]
    fn tuning_is_validated() {
        let bad = [
            Tuning {
                block_size: 1,
                ..Tuning::default()
            },
            Tuning {
                part_size: MIB,
                ..Tuning::default()
            },
            Tuning {
                max_tasks: 0,
                ..Tuning::default()
            },
            Tuning {
                max_tasks: 10_001,
                ..Tuning::default()
            },
            Tuning {
                tasks: Some(0),
                ..Tuning::default()
            },
            Tuning {
                task_size: KIB,
                ..Tuning::default()
            },
        ];
        for t in bad {
            assert!(plan(GIB, &t).is_err(), "{t:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn any_size_and_ratio_obeys_s3_rules(
            size in prop_oneof![
                0u64..(64 * MIB),
                0u64..(64 * GIB),
                0u64..=LIMIT,
                (LIMIT - 64 * GIB)..=LIMIT,
            ],
            ratio in prop_oneof![Just(1.0f64), Just(1000.0f64), 1.0f64..1000.0],
            tasks in prop::option::of(1u32..=1000),
            part_mib in 5u64..64,
        ) {
            let t = Tuning { tasks, part_size: part_mib * MIB, ..Tuning::default() };
            let p = plan(size, &t).unwrap();
            check_plan(&p, at_ratio(&p, ratio));
            // Worst case too: every task at its bound.
            check_plan(&p, |task| worst_case_compressed(task.range.len(), p.block_size));
        }

        #[test]
        fn mixed_ratios_per_task(
            size in 0u64..(256 * GIB),
            seed in any::<u64>(),
        ) {
            let t = Tuning { task_size: 4 * GIB, ..Tuning::default() };
            let p = plan(size, &t).unwrap();
            // Each task gets its own ratio: all zeros next to random data.
            check_plan(&p, |task| {
                let r = [1.0, 1000.0, 12.0, 3.0][((seed >> (task.index % 32)) & 3) as usize];
                let worst = worst_case_compressed(task.range.len(), p.block_size);
                ((task.range.len() as f64 / r) as u64).clamp(20, worst)
            });
        }

        #[test]
        fn sizes_above_the_limit_are_refused(size in (LIMIT + 2 * GIB)..(64 * TIB)) {
            prop_assert!(plan(size, &Tuning::default()).is_err());
        }
    }
}
