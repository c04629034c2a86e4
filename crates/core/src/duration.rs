//! The one model of how long a job takes: per-worker throughput, capped by the source server's
//! bandwidth shared among the tasks running, `concurrency` tasks at once, started at most one
//! per `start_interval`. The master sizes tasks to the invoker's time limit with it
//! ([`DurationModel::cap_tasks`]), the Lambda master checks that a job fits its own timeout
//! with it, and `gzship estimate` reports its schedule.

use std::time::Duration;

use crate::gzip::Level;
use crate::plan::{Plan, Tuning};

/// Lambda's memory for one vCPU: a function gets CPU in proportion to its memory, one vCPU's
/// worth at 1,769 MB (MiB, as Lambda counts), six at the 10,240 MB maximum.
pub const MIB_PER_VCPU: f64 = 1769.0;

/// Most vCPUs a Lambda function gets.
pub const MAX_VCPUS: f64 = 6.0;

/// Source MB/s one vCPU of a worker manages end to end (SFTP read and decryption,
/// compression, part assembly, upload) at levels 1 to 9, on generated web logs (ratio 7.6 at
/// level 1, 9.3 at 6, 9.9 at 9). Level 6 is gzship pinned to one core of a 2.1 GHz Intel Xeon,
/// the slowest core measured here: 78 MB/s (issue 15). The other levels keep level 6's
/// proportion to gzship's own CPU-seconds per GiB at each level, measured pinned to one core
/// of an AMD EPYC with the other core busy (`bash bench/run.sh --only 1t-logs
/// --one-core-levels 1,2,3,4,5,6,7,8,9 --size-mib 256 --big-size-mib 0`,
/// bench/results/2026-11-30-1t-logs.md: 6.20 CPU-s/GiB at level 1 to 28.44 at 9). The
/// [`TIME_LIMIT_SHARE`] of a task's time limit kept spare covers data that compresses slower.
const MB_PER_S_PER_VCPU: [f64; 9] = [137.0, 122.0, 118.0, 101.0, 90.0, 78.0, 61.0, 35.0, 30.0];

/// What a second and later vCPU adds, relative to the first: compression runs on every core,
/// the SFTP reader and uploads share them. On the Xeon, one task on two cores made 148 MB/s
/// against 78 on one core, with the SSH server on the same two cores (issue 15).
const MORE_VCPUS_EFFICIENCY: f64 = 0.9;

/// How fast one worker is assumed to be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WorkerSpeed {
    /// Source MB/s, whatever the level (`GZSHIP_WORKER_MB_PER_S`).
    Fixed(f64),
    /// From the worker function's memory in MiB (`GZSHIP_WORKER_MEMORY`): its vCPUs times the
    /// measured speed of one at the job's level.
    Memory(f64),
}

impl WorkerSpeed {
    /// Source MB/s of one worker compressing at `level`.
    pub fn mb_per_s(self, level: Level) -> f64 {
        match self {
            WorkerSpeed::Fixed(mb) => mb,
            WorkerSpeed::Memory(mib) => {
                let vcpus = (mib / MIB_PER_VCPU).min(MAX_VCPUS);
                let one = MB_PER_S_PER_VCPU[usize::from(level.get() - 1)];
                one * vcpus.min(1.0) + one * MORE_VCPUS_EFFICIENCY * (vcpus - 1.0).max(0.0)
            }
        }
    }
}

/// Seconds a task spends before its first byte: a Lambda cold start, the SSH handshake, a stat.
pub const TASK_OVERHEAD: Duration = Duration::from_millis(1500);

/// Seconds the master spends outside tasks: stat, CreateMultipartUpload, Complete.
pub const MASTER_OVERHEAD: Duration = Duration::from_secs(2);

/// Time the Lambda master keeps for itself (stat, create, complete, abort) out of its timeout:
/// a job whose schedule ends later is too long for one master ([`Schedule::fits_master`]).
pub const MASTER_MARGIN: Duration = Duration::from_secs(60);

/// Share of a time limit a task is planned to use: a quarter stays spare for slower data
/// (a worse ratio, a slower core) than the assumed throughput.
pub const TIME_LIMIT_SHARE: f64 = 0.75;

/// What a job's duration depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationModel {
    /// Source bytes a second one worker reads, compresses and uploads on its own.
    pub worker_bytes_per_s: f64,
    /// What the source server and its network deliver in total, over all connections; `None`:
    /// no cap.
    pub source_bytes_per_s: Option<f64>,
    /// Tasks running at once.
    pub concurrency: usize,
    /// Least time between two task starts.
    pub start_interval: Duration,
}

/// When the tasks of a plan run, by the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Seconds from the job's start to its end, the master's own work included.
    pub wall_secs: f64,
    /// Seconds of all tasks added up (what workers are billed for).
    pub busy_secs: f64,
    /// Seconds of the longest task.
    pub longest_secs: f64,
    /// Bytes a second of one worker while the tasks run.
    pub worker_bytes_per_s: f64,
    /// Tasks running at once.
    pub running: usize,
}

impl Schedule {
    /// Seconds of a master's timeout its tasks may take: the timeout less [`MASTER_MARGIN`].
    pub fn master_budget_secs(master_timeout: Duration) -> f64 {
        master_timeout.saturating_sub(MASTER_MARGIN).as_secs_f64()
    }

    /// Whether one master with `master_timeout` runs the whole schedule itself; a longer job
    /// goes through the state machine on Lambda.
    pub fn fits_master(&self, master_timeout: Duration) -> bool {
        self.wall_secs <= Self::master_budget_secs(master_timeout)
    }
}

impl DurationModel {
    /// Bytes a second of one worker while `running` tasks share the source.
    pub fn rate(&self, running: usize) -> f64 {
        let worker = self.worker_bytes_per_s;
        match self.source_bytes_per_s {
            Some(source) => worker.min(source / running.max(1) as f64),
            None => worker,
        }
    }

    /// The longest range one task can read within `limit` with `concurrency` tasks running,
    /// keeping a quarter of the time spare.
    pub fn bytes_within(&self, limit: Duration) -> u64 {
        (limit.as_secs_f64() * TIME_LIMIT_SHARE * self.rate(self.concurrency)) as u64
    }

    /// Caps `tuning.max_task_size` so that every task fits `limit` (never below one block: a
    /// task reads at least one).
    pub fn cap_tasks(&self, tuning: &mut Tuning, limit: Duration) {
        let cap = self.bytes_within(limit).max(tuning.block_size);
        tuning.max_task_size = Some(tuning.max_task_size.unwrap_or(u64::MAX).min(cap));
    }

    /// Runs `plan`'s tasks in order, `concurrency` at a time and at most one start per
    /// `start_interval`, each taking [`TASK_OVERHEAD`] plus its bytes at [`Self::rate`].
    pub fn schedule(&self, plan: &Plan) -> Schedule {
        let concurrency = self.concurrency.max(1);
        let running = plan.tasks.len().clamp(1, concurrency);
        let rate = self.rate(running);
        let interval = self.start_interval.as_secs_f64();
        let overhead = TASK_OVERHEAD.as_secs_f64();
        let mut free = vec![0.0f64; running];
        let (mut last_start, mut end, mut busy, mut longest) = (-interval, 0.0f64, 0.0, 0.0f64);
        for task in &plan.tasks {
            let (slot, at) = free
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, 0.0));
            let start = at.max(last_start + interval);
            let took = overhead + task.range.len() as f64 / rate;
            free[slot] = start + took;
            last_start = start;
            end = end.max(start + took);
            busy += took;
            longest = longest.max(took);
        }
        Schedule {
            wall_secs: end + MASTER_OVERHEAD.as_secs_f64(),
            busy_secs: busy,
            longest_secs: longest,
            worker_bytes_per_s: rate,
            running,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plan;
    use crate::types::GIB;

    fn model(concurrency: usize, source: Option<f64>) -> DurationModel {
        DurationModel {
            worker_bytes_per_s: 100e6,
            source_bytes_per_s: source,
            concurrency,
            start_interval: Duration::from_millis(200),
        }
    }

    /// Issue 12, item 7: a worker's speed follows its memory (Lambda's vCPUs) and the level.
    #[test]
    fn worker_speed_follows_memory_and_level() {
        let level = |n| Level::new(n).unwrap();
        let one = WorkerSpeed::Memory(MIB_PER_VCPU).mb_per_s(level(6));
        assert_eq!(one, MB_PER_S_PER_VCPU[5]);
        // Below one vCPU, a share of one; above, the second is worth a little less.
        assert_eq!(
            WorkerSpeed::Memory(MIB_PER_VCPU / 2.0).mb_per_s(level(6)),
            one / 2.0
        );
        let two = WorkerSpeed::Memory(2.0 * MIB_PER_VCPU).mb_per_s(level(6));
        assert_eq!(two, one * (1.0 + MORE_VCPUS_EFFICIENCY));
        assert!(two > one && two <= 2.0 * one);
        // In proportion up to Lambda's 10,240 MB (5.8 vCPUs' worth; Lambda says six), never
        // more than six.
        assert!(
            WorkerSpeed::Memory(10_240.0).mb_per_s(level(6))
                < WorkerSpeed::Memory(6.0 * MIB_PER_VCPU).mb_per_s(level(6))
        );
        assert_eq!(
            WorkerSpeed::Memory(20_000.0).mb_per_s(level(6)),
            WorkerSpeed::Memory(6.0 * MIB_PER_VCPU).mb_per_s(level(6))
        );
        // Higher levels are slower, level by level.
        for n in 1..9 {
            assert!(
                WorkerSpeed::Memory(3008.0).mb_per_s(level(n))
                    > WorkerSpeed::Memory(3008.0).mb_per_s(level(n + 1)),
                "level {n}"
            );
        }
        // A fixed speed is the same at every level.
        assert_eq!(WorkerSpeed::Fixed(42.0).mb_per_s(level(1)), 42.0);
        assert_eq!(WorkerSpeed::Fixed(42.0).mb_per_s(level(9)), 42.0);
    }

    /// The README's table of a worker's speed is the one the master plans with.
    #[test]
    fn the_readme_table_of_worker_speeds_matches() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .unwrap();
        let row = |label: &str| -> Vec<f64> {
            let line = readme
                .lines()
                .find(|l| l.starts_with(&format!("| {label} |")))
                .unwrap_or_else(|| panic!("README has no row {label:?}"));
            line.split('|')
                .skip(2)
                .filter(|c| !c.trim().is_empty())
                .map(|c| c.trim().parse().unwrap())
                .collect()
        };
        assert_eq!(row("MB/s per vCPU"), MB_PER_S_PER_VCPU);
        let worker: Vec<f64> = (1..=9)
            .map(|n| {
                WorkerSpeed::Memory(3008.0)
                    .mb_per_s(Level::new(n).unwrap())
                    .round()
            })
            .collect();
        assert_eq!(row("3,008 MB worker (1.7 vCPUs)"), worker);
    }

    #[test]
    fn the_source_caps_what_workers_share() {
        assert_eq!(model(8, None).rate(8), 100e6);
        assert_eq!(model(8, Some(400e6)).rate(8), 50e6);
        assert_eq!(model(8, Some(400e6)).rate(2), 100e6);
        // 900 s, three quarters, 50 MB/s each.
        assert_eq!(
            model(8, Some(400e6)).bytes_within(Duration::from_secs(900)),
            33_750_000_000
        );
    }

    #[test]
    fn tasks_run_in_rounds_and_starts_overlap_running_tasks() {
        let plan = plan::plan(8 * GIB, &Tuning::default()).unwrap();
        assert_eq!(plan.tasks.len(), 8);
        let task = GIB as f64 / 100e6 + 1.5;
        // Eight at once: the starts are staggered by 0.2 s, not added to every task.
        let s = model(8, None).schedule(&plan);
        assert!(
            (s.wall_secs - (7.0 * 0.2 + task + 2.0)).abs() < 1e-6,
            "{s:?}"
        );
        assert!((s.busy_secs - 8.0 * task).abs() < 1e-6);
        // Four at once: two rounds, the second starting as the first ends.
        let s = model(4, None).schedule(&plan);
        assert!(
            (s.wall_secs - (3.0 * 0.2 + 2.0 * task + 2.0)).abs() < 1e-6,
            "{s:?}"
        );
        // A source of 200 MB/s shared by eight: 25 MB/s each.
        let s = model(8, Some(200e6)).schedule(&plan);
        assert_eq!(s.worker_bytes_per_s, 25e6);
        assert!(s.longest_secs > GIB as f64 / 25e6);
    }

    #[test]
    fn tasks_are_capped_to_the_time_limit_but_keep_a_block() {
        let mut tuning = Tuning::default();
        model(8, None).cap_tasks(&mut tuning, Duration::from_secs(10));
        assert_eq!(tuning.max_task_size, Some(750_000_000));
        let slow = DurationModel {
            worker_bytes_per_s: 1.0,
            ..model(8, None)
        };
        slow.cap_tasks(&mut tuning, Duration::from_secs(1));
        assert_eq!(tuning.max_task_size, Some(tuning.block_size));
    }
}
