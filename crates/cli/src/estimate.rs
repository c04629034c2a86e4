//! `gzship estimate`: for a file size, the source's bandwidth and a worker's throughput, the
//! plan (tasks, parts, part size), the expected wall time on AWS Lambda, the worker's memory,
//! and what the job costs (Lambda GB-seconds and requests, S3 requests).
//!
//! The plan is the planner's own ([`plan::plan`]), with each task capped to what a worker
//! reads inside its time limit, and the time is the schedule of the one duration model
//! ([`DurationModel`]) the Lambda master checks jobs with: tasks start in order,
//! `concurrency` at once and one per `start_interval` at most; each reads at
//! `min(worker rate, source rate / tasks running)`. The settings are the registry's, with
//! Lambda's defaults (`--concurrency` 8). A job whose schedule does not fit the master's
//! timeout (less the minute it keeps for itself) runs on the template's Step Functions state
//! machine, and the estimate says so and adds its state transitions. Measure the worker rate
//! for your data and
//! memory size (`bench/run.sh` gives the rate of one machine; Lambda gives one vCPU per
//! 1,769 MB) before trusting the result.

use std::fmt::Write as _;

use clap::Args;
use serde::Serialize;

use gzship_core::assemble::part_sizes;
use gzship_core::duration::{
    DurationModel, MASTER_MARGIN, MASTER_OVERHEAD, MAX_VCPUS, MIB_PER_VCPU, WorkerSpeed,
};
use gzship_core::gzip;
use gzship_core::plan;
use gzship_core::types::MIB;
use gzship_core::worker::WorkerTuning;

use crate::flags::{EstimateGroups, Flags};
use crate::human;

/// Prices in USD, AWS us-east-1, from the public price pages (aws.amazon.com/lambda/pricing,
/// aws.amazon.com/s3/pricing) as of 2025-06; not re-checked from the build machine, which has
/// no internet. Other regions differ by up to about 30%.
mod price {
    /// Lambda on arm64 (Graviton), per GB-second, first 7.5 billion GB-s a month.
    pub const LAMBDA_ARM64_GB_SECOND: f64 = 0.000_013_333_4;
    /// Lambda, per request (invocation): $0.20 per million.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// S3 Standard PUT, COPY, POST, LIST requests: $0.005 per 1,000. CreateMultipartUpload,
    /// UploadPart and CompleteMultipartUpload are each billed as one.
    pub const S3_PUT_REQUEST: f64 = 0.005 / 1e3;
    /// S3 Standard storage, per GB-month, first 50 TB (shown apart: it is not the job's cost).
    pub const S3_GB_MONTH: f64 = 0.023;
    /// Step Functions Standard workflows, per state transition: $0.025 per 1,000
    /// (aws.amazon.com/step-functions/pricing; the first 4,000 a month are free).
    pub const STATE_TRANSITION: f64 = 0.025 / 1e3;
}

/// State transitions of one task on the state machine: its child execution of the
/// Distributed Map and its Task state (each retry adds one).
pub const TRANSITIONS_PER_TASK: u64 = 2;
/// State transitions of a job on the state machine besides its tasks: the Map, the
/// completion step, the end.
pub const TRANSITIONS_PER_JOB: u64 = 3;

/// Worker memory in MiB assumed without `GZSHIP_WORKER_MEMORY`: the template's default.
pub const DEFAULT_WORKER_MEMORY_MIB: u32 = 3008;

/// Options of `gzship estimate`.
#[derive(Debug, Clone, Args)]
pub struct EstimateArgs {
    /// Size of the source file, e.g. 100GiB or 40TiB.
    #[arg(long, value_parser = crate::parse_size)]
    size: u64,
    /// Master function memory in MB (the template's).
    #[arg(long, default_value_t = 512)]
    master_memory_mb: u32,
    /// Compression ratio to expect (source / object): 8-15 for logs at level 6, 1 for
    /// compressed or random data. Sets the object size and the parts actually uploaded.
    #[arg(long, default_value_t = 10.0)]
    ratio: f64,
    #[command(flatten)]
    flags: Flags<EstimateGroups>,
    /// Print the estimate as JSON.
    #[arg(long)]
    json: bool,
}

/// What is assumed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assumptions {
    pub size: u64,
    /// `None`: no cap (`--source-mb-per-s` not given).
    pub source_mb_s: Option<f64>,
    pub worker_mb_s: f64,
    pub memory_mb: u32,
    pub master_memory_mb: u32,
    pub worker_timeout_s: u32,
    /// The master function's timeout: a longer job runs on the state machine.
    pub master_timeout_s: u32,
    pub concurrency: u32,
    /// Least seconds between two task starts (the master's start interval).
    pub start_interval_s: f64,
    pub ratio: f64,
    pub max_tasks: u32,
    /// Blocks compressed at once in a worker (Lambda: about one vCPU per 1,769 MB, plus one).
    pub compress_parallelism: u32,
    /// UploadPart requests in flight per worker (the worker's default).
    pub uploads_in_flight: u32,
}

/// The estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub assumptions: Assumptions,
    pub tasks: u32,
    pub task_bytes: u64,
    pub part_size: u64,
    pub block_size: u64,
    /// Part numbers the plan reserves (worst case, incompressible data).
    pub reserved_parts: u32,
    /// Parts uploaded at the assumed ratio.
    pub parts: u64,
    pub object_bytes: u64,
    /// Source MB/s of one worker while all run: min(worker, source / running).
    pub worker_rate_mb_s: f64,
    /// Seconds of the longest task.
    pub task_seconds: f64,
    pub wall_seconds: f64,
    /// Whether the job is longer than the master's timeout, so that on Lambda it runs on the
    /// Step Functions state machine (`GZSHIP_STATE_MACHINE`) instead of the master.
    pub state_machine: bool,
    /// Step Functions state transitions of the job (0 when the master runs it).
    pub state_transitions: u64,
    /// Peak memory of one worker from its pipeline bounds at the assumed ratio, in MB.
    pub worker_memory_mb: f64,
    /// The same for data that does not compress.
    pub worst_memory_mb: f64,
    pub worker_gb_seconds: f64,
    pub master_gb_seconds: f64,
    pub lambda_requests: u64,
    pub s3_put_requests: u64,
    pub cost_lambda_compute: f64,
    pub cost_lambda_requests: f64,
    pub cost_s3_requests: f64,
    pub cost_step_functions: f64,
    pub cost_total: f64,
    /// Not part of the job's cost: keeping the object a month.
    pub storage_per_month: f64,
    /// What stops this job running as planned on Lambda, if anything.
    pub warnings: Vec<String>,
}

impl EstimateArgs {
    /// The assumptions and the planner's tuning, from the settings (Lambda's defaults).
    fn assumptions(&self) -> anyhow::Result<(Assumptions, plan::Tuning)> {
        let settings = self.flags.parse()?;
        // The worker's memory (GZSHIP_WORKER_MEMORY, else the template's default) sets its
        // vCPUs and, unless GZSHIP_WORKER_MB_PER_S is given, its speed at the level.
        let memory_mb = settings
            .model
            .worker_memory
            .map_or(DEFAULT_WORKER_MEMORY_MIB, |bytes| (bytes >> 20) as u32);
        let speed = match (settings.model.worker_mb_per_s, settings.model.worker_memory) {
            (None, None) => WorkerSpeed::Memory(f64::from(memory_mb)),
            _ => settings.model.worker_speed,
        };
        let vcpus = (f64::from(memory_mb) / MIB_PER_VCPU)
            .ceil()
            .clamp(1.0, MAX_VCPUS) as u32;
        // A worker's cores come from its memory, not from this machine's.
        let compress_parallelism = if self.flags.given("GZSHIP_COMPRESS_PARALLELISM") {
            settings.worker.compress_parallelism as u32
        } else {
            2 * vcpus
        };
        let a = Assumptions {
            size: self.size,
            source_mb_s: settings.model.source_mb_per_s,
            worker_mb_s: speed.mb_per_s(settings.level),
            memory_mb,
            master_memory_mb: self.master_memory_mb,
            worker_timeout_s: settings.model.worker_timeout.as_secs() as u32,
            master_timeout_s: settings.model.master_timeout.as_secs() as u32,
            concurrency: settings.master.concurrency as u32,
            start_interval_s: settings.master.start_interval.as_secs_f64(),
            ratio: self.ratio,
            max_tasks: settings.tuning.max_tasks,
            compress_parallelism,
            uploads_in_flight: settings.worker.uploads_in_flight as u32,
        };
        Ok((a, settings.tuning))
    }
}

/// Runs `gzship estimate`.
pub fn run(args: &EstimateArgs) -> anyhow::Result<()> {
    let (assumptions, tuning) = args.assumptions()?;
    let e = estimate(&assumptions, tuning)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", render(&e));
    }
    Ok(())
}

/// Plans the job and estimates its time and cost.
pub fn estimate(a: &Assumptions, mut tuning: plan::Tuning) -> anyhow::Result<Estimate> {
    anyhow::ensure!(
        a.source_mb_s.is_none_or(|s| s > 0.0)
            && a.worker_mb_s > 0.0
            && a.ratio >= 1.0
            && a.concurrency > 0,
        "rates, concurrency must be positive and the ratio at least 1"
    );
    tuning.max_tasks = a.max_tasks;
    let model = DurationModel {
        worker_bytes_per_s: a.worker_mb_s * 1e6,
        source_bytes_per_s: a.source_mb_s.map(|s| s * 1e6),
        concurrency: a.concurrency as usize,
        start_interval: std::time::Duration::from_secs_f64(a.start_interval_s),
    };
    model.cap_tasks(
        &mut tuning,
        std::time::Duration::from_secs(u64::from(a.worker_timeout_s)),
    );
    let plan = plan::plan(a.size, &tuning)?;
    let tasks = plan.tasks.len() as u32;
    let schedule = model.schedule(&plan);
    let (wall, worker_seconds, longest) = (
        schedule.wall_secs,
        schedule.busy_secs,
        schedule.longest_secs,
    );
    let (rate, running) = (schedule.worker_bytes_per_s, schedule.running);
    let parts: u64 = plan
        .tasks
        .iter()
        .map(|t| {
            let compressed = (t.range.len() as f64 / a.ratio) as u64;
            part_sizes(compressed.max(20), plan.part_size, t.is_last).len() as u64
        })
        .sum();
    let object_bytes = (a.size as f64 / a.ratio) as u64;
    // The worker's own bound (worker.rs): 2 blocks per block handed to compression (the
    // block, its member) plus the read-ahead,
    // and, while two parts fit the default part memory, one part per upload in flight plus the
    // one being cut (a part holds at most the task's compressed stream); bigger parts are
    // spooled to /tmp, leaving under 5 MiB + one member of them in memory.
    let task_bytes = plan.tasks.first().map_or(0, |t| t.range.len());
    let tuning = WorkerTuning {
        compress_parallelism: a.compress_parallelism as usize,
        uploads_in_flight: a.uploads_in_flight as usize,
        ..WorkerTuning::default()
    };
    let worker_memory_mb = |ratio: f64| {
        let part = ((plan.part_size + 5 * MIB) as f64).min(task_bytes as f64 / ratio);
        let parts = match tuning.uploads_in_memory(plan.part_size) {
            Some(uploads) => (uploads + 1) as f64 * part,
            None => (5 * MIB + gzip::member_bound(plan.block_size)) as f64,
        };
        let bytes =
            (f64::from(a.compress_parallelism) * 2.0 + 3.0) * plan.block_size as f64 + parts;
        bytes / 1e6 + 60.0 // + runtime, TLS and SSH buffers
    };
    let (worker_memory_mb, worst_memory_mb) = (worker_memory_mb(a.ratio), worker_memory_mb(1.0));
    let master_timeout = std::time::Duration::from_secs(u64::from(a.master_timeout_s));
    let state_machine = !schedule.fits_master(master_timeout);
    // On the state machine the master only starts the job and completes it; otherwise it
    // waits for the whole schedule.
    let (master_seconds, master_invocations, state_transitions) = if state_machine {
        (
            2.0 * MASTER_OVERHEAD.as_secs_f64(),
            2,
            TRANSITIONS_PER_JOB + TRANSITIONS_PER_TASK * u64::from(tasks),
        )
    } else {
        (wall, 1, 0)
    };
    let worker_gb_seconds = worker_seconds * f64::from(a.memory_mb) / 1024.0;
    let master_gb_seconds = master_seconds * f64::from(a.master_memory_mb) / 1024.0;
    let lambda_requests = u64::from(tasks) + master_invocations;
    let s3_put_requests = parts + 2;
    let cost_lambda_compute =
        (worker_gb_seconds + master_gb_seconds) * price::LAMBDA_ARM64_GB_SECOND;
    let cost_lambda_requests = lambda_requests as f64 * price::LAMBDA_REQUEST;
    let cost_s3_requests = s3_put_requests as f64 * price::S3_PUT_REQUEST;
    let cost_step_functions = state_transitions as f64 * price::STATE_TRANSITION;

    let mut warnings = Vec::new();
    if longest > f64::from(a.worker_timeout_s) {
        warnings.push(format!(
            "a task takes {} at {:.0} MB/s, over the worker timeout of {} s: the source is too \
             slow for {} workers at once",
            duration(longest),
            rate / 1e6,
            a.worker_timeout_s,
            running
        ));
    }
    if worst_memory_mb > f64::from(a.memory_mb) {
        let (need, when) = if worker_memory_mb > f64::from(a.memory_mb) {
            (worker_memory_mb, "")
        } else {
            (worst_memory_mb, " if the data does not compress")
        };
        warnings.push(format!(
            "a worker needs about {need:.0} MB{when} but has {} MB: give it more memory, or \
             lower uploads in flight or the compression parallelism",
            a.memory_mb
        ));
    }
    if tuning.uploads_in_memory(plan.part_size).is_none() {
        let slot = gzship_core::spool::spool_slot(plan.part_size).div_ceil(MIB);
        let all = slot * (a.uploads_in_flight as u64 + 1);
        warnings.push(format!(
            "parts of {} are spooled to the worker's /tmp: its EphemeralStorage must be at \
             least {slot} MB (one part at a time, slower) and {all} MB lets {} uploads run at \
             once (Lambda allows up to 10240 MB)",
            human(plan.part_size),
            a.uploads_in_flight
        ));
    }
    Ok(Estimate {
        assumptions: a.clone(),
        tasks,
        task_bytes,
        part_size: plan.part_size,
        block_size: plan.block_size,
        reserved_parts: plan.reserved_parts(),
        parts,
        object_bytes,
        worker_rate_mb_s: rate / 1e6,
        task_seconds: longest,
        wall_seconds: wall,
        state_machine,
        state_transitions,
        worker_memory_mb,
        worst_memory_mb,
        worker_gb_seconds,
        master_gb_seconds,
        lambda_requests,
        s3_put_requests,
        cost_lambda_compute,
        cost_lambda_requests,
        cost_s3_requests,
        cost_step_functions,
        cost_total: cost_lambda_compute
            + cost_lambda_requests
            + cost_s3_requests
            + cost_step_functions,
        storage_per_month: object_bytes as f64 / 1e9 * price::S3_GB_MONTH,
        warnings,
    })
}

fn duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn render(e: &Estimate) -> String {
    let a = &e.assumptions;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "source {} at {} from the server, {:.0} MB/s per worker, {} workers at once of \
         {} MB, ratio {:.1}",
        human(a.size),
        a.source_mb_s
            .map_or("an uncapped rate".to_owned(), |s| format!("{s:.0} MB/s")),
        a.worker_mb_s,
        a.concurrency,
        a.memory_mb,
        a.ratio
    );
    let _ = writeln!(
        s,
        "plan     {} tasks of {}; blocks of {}; parts of {} ({} part numbers reserved, about \
         {} uploaded); object about {}",
        e.tasks,
        human(e.task_bytes),
        human(e.block_size),
        human(e.part_size),
        e.reserved_parts,
        e.parts,
        human(e.object_bytes)
    );
    let _ = writeln!(
        s,
        "time     {} wall ({:.0} MB/s per worker; longest task {}); worker memory about {:.0} MB \
         ({:.0} MB for incompressible data)",
        duration(e.wall_seconds),
        e.worker_rate_mb_s,
        duration(e.task_seconds),
        e.worker_memory_mb,
        e.worst_memory_mb
    );
    let _ = if e.state_machine {
        writeln!(
            s,
            "route    longer than the master's {} s (less {} s it keeps): on Lambda the job \
             runs on the Step Functions state machine (GZSHIP_STATE_MACHINE), {} state \
             transitions ${:.4}",
            a.master_timeout_s,
            MASTER_MARGIN.as_secs(),
            e.state_transitions,
            e.cost_step_functions
        )
    } else {
        writeln!(
            s,
            "route    inside the master's {} s: on Lambda the master runs the tasks itself",
            a.master_timeout_s
        )
    };
    let _ = writeln!(
        s,
        "cost     ${:.4}: Lambda {:.0} GB-s (workers {:.0}, master {:.0}) ${:.4} + {} invocations \
         ${:.6} + S3 {} PUT-class requests ${:.4}; storing the object costs ${:.2}/month",
        e.cost_total,
        e.worker_gb_seconds + e.master_gb_seconds,
        e.worker_gb_seconds,
        e.master_gb_seconds,
        e.cost_lambda_compute,
        e.lambda_requests,
        e.cost_lambda_requests,
        e.s3_put_requests,
        e.cost_s3_requests,
        e.storage_per_month
    );
    for w in &e.warnings {
        let _ = writeln!(s, "warning  {w}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use gzship_core::types::{GIB, MAX_PARTS, TIB};

    fn assume(size: u64) -> Assumptions {
        Assumptions {
            size,
            source_mb_s: Some(500.0),
            worker_mb_s: 50.0,
            memory_mb: 3008,
            master_memory_mb: 512,
            worker_timeout_s: 900,
            master_timeout_s: 900,
            concurrency: 8,
            start_interval_s: 0.2,
            ratio: 10.0,
            max_tasks: 1000,
            compress_parallelism: 3,
            uploads_in_flight: 4,
        }
    }

    #[test]
    fn sizes_from_one_gib_to_forty_tib() {
        let mut previous_cost = 0.0;
        for size in [GIB, 100 * GIB, TIB, 40 * TIB] {
            let mut a = assume(size);
            if size == 40 * TIB {
                // 1000 tasks of 40 GiB would each outlast a 15-minute worker at 50 MB/s.
                assert!(estimate(&a, plan::Tuning::default()).is_err());
                a.max_tasks = 10_000;
            }
            let e = estimate(&a, plan::Tuning::default()).unwrap();
            assert!(e.reserved_parts <= MAX_PARTS, "{size}");
            assert!(e.parts <= u64::from(e.reserved_parts), "{size}");
            assert!(e.part_size >= 16 * MIB);
            assert!(e.task_seconds <= 900.0, "{size}: task {}", e.task_seconds);
            // Wall time is at least the size over the whole job's rate.
            let job_rate = (8.0 * 50e6f64).min(500e6);
            assert!(e.wall_seconds >= size as f64 / job_rate, "{size}");
            assert!(
                e.wall_seconds <= 1.3 * size as f64 / job_rate + 30.0,
                "{size}"
            );
            assert!(e.cost_total > previous_cost, "{size}");
            previous_cost = e.cost_total;
            assert!(
                (e.cost_total
                    - e.cost_lambda_compute
                    - e.cost_lambda_requests
                    - e.cost_s3_requests
                    - e.cost_step_functions)
                    .abs()
                    < 1e-9
            );
        }
    }

    #[test]
    fn known_figures() {
        // 1 GiB: one task at 50 MB/s, 7 parts of 16 MiB at ratio 10 (107 MB), in Lambda's
        // limits, costing well under a cent.
        let e = estimate(&assume(GIB), plan::Tuning::default()).unwrap();
        assert_eq!(e.tasks, 1);
        assert_eq!(e.parts, 7);
        assert_eq!(e.part_size, 16 * MIB);
        assert!((e.wall_seconds - (GIB as f64 / 50e6 + 3.5)).abs() < 0.01);
        assert!(e.cost_total < 0.01);
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
        assert!(!e.state_machine);
        assert_eq!((e.state_transitions, e.cost_step_functions), (0, 0.0));

        // 1 TiB: the part size is raised, the job outlasts the master function and runs on
        // the state machine: two transitions a task and three for the job.
        let e = estimate(&assume(TIB), plan::Tuning::default()).unwrap();
        // 1024 tasks of 1 GiB wanted, capped at max tasks: 997 ranges of whole blocks.
        assert_eq!(e.tasks, 997);
        assert!(e.part_size > 16 * MIB);
        assert!(e.wall_seconds > 900.0);
        assert!(e.state_machine);
        assert_eq!(e.state_transitions, 2 * 997 + 3);
        assert!((e.cost_step_functions - 1997.0 * 0.025 / 1000.0).abs() < 1e-9);
        assert!(
            render(&e).contains("Step Functions state machine"),
            "{}",
            render(&e)
        );
        // ~1000 tasks x ~23 s at 3008 MB: about 66,000 GB-s, under a dollar.
        assert!(e.cost_total > 0.5 && e.cost_total < 1.5, "{}", e.cost_total);

        // 40 TiB: parts of several GB, spooled to /tmp.
        let mut a = assume(40 * TIB);
        a.max_tasks = 10_000;
        let e = estimate(&a, plan::Tuning::default()).unwrap();
        assert!(e.part_size > GIB, "{}", e.part_size);
        assert!(
            e.warnings
                .iter()
                .any(|w| w.contains("spooled to the worker's /tmp")),
            "{:?}",
            e.warnings
        );
    }

    /// The route follows the master's timeout, by the same model as the Lambda master.
    #[test]
    fn jobs_longer_than_the_master_go_through_the_state_machine() {
        let mut a = assume(100 * GIB);
        let e = estimate(&a, plan::Tuning::default()).unwrap();
        assert!(!e.state_machine, "{} s", e.wall_seconds);
        a.master_timeout_s = 120;
        let e = estimate(&a, plan::Tuning::default()).unwrap();
        assert!(e.state_machine, "{} s", e.wall_seconds);
        assert!(
            render(&e).contains("longer than the master's 120 s"),
            "{}",
            render(&e)
        );
    }

    #[test]
    fn a_slow_source_is_shared() {
        let mut a = assume(100 * GIB);
        a.source_mb_s = Some(100.0);
        let e = estimate(&a, plan::Tuning::default()).unwrap();
        assert!((e.worker_rate_mb_s - 12.5).abs() < 1e-9);
        assert!(e.wall_seconds >= 100.0 * GIB as f64 / 100e6);
    }
}
