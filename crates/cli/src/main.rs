//! `gzship`: ship one huge file from an SFTP server into S3 (or a local directory) as one gzip
//! object, with the workers as in-process tasks.
//!
//! Modules: `ssh` (credentials and host-key flags -> SFTP source), `store` (S3 or local
//! destination), `jobs` (unfinished jobs: list, locate, abort), `progress` (the terminal
//! progress bar), `scan` (every new file of a remote directory), `verify`, `demo`, `estimate`
//! (plan, time and cost of a job on Lambda).

mod demo;
mod estimate;
mod flags;
mod jobs;
mod progress;
mod scan;
mod ssh;
mod store;
mod verify;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use gzship_core::SourceUrl;
use gzship_core::invoke::local::LocalInvoker;
use gzship_core::job::{self, JobRef};
use gzship_core::master::{self, MasterConfig};
use gzship_core::plan;
use gzship_core::settings;
use gzship_core::source::Source;
use gzship_core::types::{GIB, KIB, MIB, TIB};
use gzship_core::wire::{JobReport, JobRequest};
use gzship_core::worker::{Progress, WorkerTuning};

use flags::{Flags, PlanGroups, RecordGroups, ResumeGroups, RunGroups, VerifyGroups};

/// Ship one huge file from an SFTP server into S3 as one gzip object.
#[derive(Debug, Parser)]
#[command(name = "gzship", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing's syntax), e.g. `info`, `gzship_core=debug` [default: warn].
    #[arg(long, global = true, env = "GZSHIP_LOG")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ship SOURCE (sftp://[user@]host[:port]/path) to DESTINATION (s3://bucket/key or a local
    /// file path). With a glob in SOURCE's file name ('sftp://host/exports/*.csv') and
    /// DESTINATION ending in '/' (s3://bucket/prefix/), ship every new, complete matching file
    /// to prefix/<name>.gz, one job at a time.
    Run {
        /// sftp://[user@]host[:port]/path, or /dir/GLOB to scan a directory
        source: SourceUrl,
        /// s3://bucket/key, or a local file path; for a scan, s3://bucket/prefix/
        destination: String,
        #[command(flatten)]
        flags: Flags<RunGroups>,
        /// Print the job report as one JSON object on stdout (a scan: one line per file, then
        /// a summary line).
        #[arg(long)]
        json: bool,
        /// Scan again every DURATION (e.g. 5m) until stopped with Ctrl-C, which ends between
        /// two files or leaves the running job resumable. Only with a glob in SOURCE.
        #[arg(long, value_parser = settings::parse_duration, value_name = "DURATION")]
        watch: Option<Duration>,
    },
    /// List the unfinished jobs recorded beside the destinations in a bucket or directory:
    /// interrupted or failed runs that `gzship resume` can continue.
    Jobs {
        /// s3://bucket[/prefix] (jobs whose destination is under the prefix), or a directory
        /// of local destinations.
        #[arg(default_value = ".")]
        location: String,
        #[command(flatten)]
        flags: Flags<RecordGroups>,
        /// Print the jobs as one JSON array.
        #[arg(long)]
        json: bool,
        /// Abort the listed jobs that started at least this long ago (e.g. 7d; 0s: all):
        /// their uploads are aborted and their records removed.
        #[arg(long, value_parser = settings::parse_duration, value_name = "DURATION")]
        abort_older_than: Option<Duration>,
    },
    /// Continue an unfinished job: tasks already done are skipped, the others run, the upload
    /// completes. JOB is what `gzship jobs` prints, or the job's destination.
    Resume {
        /// The job's record (s3://bucket/.gzship/jobs/ID or DIR/.gzship/jobs/ID) or its
        /// destination.
        job: String,
        #[command(flatten)]
        flags: Flags<ResumeGroups>,
        /// Print the job report as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Abort an unfinished job: abort its multipart upload and remove its record.
    Abort {
        /// The job's record (s3://bucket/.gzship/jobs/ID or DIR/.gzship/jobs/ID) or its
        /// destination.
        job: String,
        #[command(flatten)]
        flags: Flags<RecordGroups>,
    },
    /// Print the plan (tasks, ranges, part windows, part size) without uploading.
    Plan {
        /// sftp://[user@]host[:port]/path to stat; or give --size instead.
        #[arg(required_unless_present = "size")]
        source: Option<SourceUrl>,
        /// Plan for a source of this size (e.g. 40TiB) without connecting.
        #[arg(long, value_parser = parse_size, conflicts_with = "source")]
        size: Option<u64>,
        #[command(flatten)]
        flags: Flags<PlanGroups>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stream the object back, decompress every member and compare it with the source.
    Verify {
        /// sftp://[user@]host[:port]/path
        source: SourceUrl,
        /// s3://bucket/key, or a local file path
        destination: String,
        #[command(flatten)]
        flags: Flags<VerifyGroups>,
        /// Compare SHA-256 too (CRC-32 and length always).
        #[arg(long)]
        sha256: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a real job on embedded defaults: an in-process SFTP server serving generated logs,
    /// shipped into a local store, then verified.
    Demo(demo::DemoArgs),
    /// Estimate a job on AWS Lambda without running it: plan, wall time, memory and cost.
    Estimate(estimate::EstimateArgs),
    /// Print every setting (flag, environment variable, default, where it applies) as the
    /// README's Markdown table.
    Settings,
}

/// mimalloc returns freed part and block buffers to the system; glibc's malloc kept hundreds
/// of MiB of them resident once several tasks ran at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log.clone().unwrap_or_else(|| {
        settings::setting("GZSHIP_LOG")
            .map_or("warn", |s| s.default.text())
            .to_owned()
    });
    init_tracing(&log);
    gzship_core::worker::disable_huge_pages();
    let runtime = match gzship_core::worker::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let cause = e
                .downcast_ref::<Stopped>()
                .map(|s| &s.cause)
                .or_else(|| e.downcast_ref::<gzship_core::Error>());
            match cause {
                // Interrupted by a signal: the shell's convention for SIGINT.
                Some(gzship_core::Error::Cancelled { .. }) => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            source,
            destination,
            flags,
            json,
            watch,
        } => {
            let settings = flags.parse()?;
            if gzship_core::scan::is_glob(&source.path) {
                return scan::run(&source, &destination, &settings, watch, json).await;
            }
            if watch.is_some() {
                bail!("--watch scans a directory: give a glob in SOURCE's file name (/dir/*.csv)");
            }
            let sftp = Arc::new(ssh::source(&settings, &source)?);
            let (store, dest) = store::open(&destination, &settings.s3).await?;
            let request = JobRequest {
                source,
                destination: dest,
                level: settings.level,
                tuning: settings.tuning.clone(),
            };
            let place = jobs::Place {
                dir: match &store {
                    store::AnyStore::Local(_) => std::path::absolute(&destination)
                        .ok()
                        .and_then(|p| p.parent().map(|d| d.to_path_buf())),
                    store::AnyStore::S3(_) => None,
                },
                store,
            };
            let job_id = job::new_id(&request.destination);
            let at = JobRef::new(
                &request.destination.bucket,
                &settings.master.jobs_prefix,
                &job_id,
            )?;
            let report = run_job(
                Job::New(&request),
                &at,
                sftp,
                &place,
                &resumable(&settings.master),
                &settings.worker,
            )
            .await
            .with_context(|| format!("ship {} to {destination}", request.source))?;
            print_report(&report, &destination, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs {
            location,
            flags,
            json,
            abort_older_than,
        } => {
            let settings = flags.parse()?;
            jobs::list(
                &location,
                &settings.s3,
                &settings.master.jobs_prefix,
                json,
                abort_older_than,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { job, flags, json } => {
            let settings = flags.parse()?;
            let prefix = &settings.master.jobs_prefix;
            let (place, at) = jobs::locate(&job, &settings.s3, prefix).await?;
            let record = at.read_existing(&place.store).await?;
            let sftp = Arc::new(ssh::source(&settings, &record.source)?);
            let shown = place.show(&record.destination);
            let source = record.source.clone();
            let report = run_job(
                Job::Resume(Box::new(record)),
                &at,
                sftp,
                &place,
                &resumable(&settings.master),
                &settings.worker,
            )
            .await
            .with_context(|| format!("resume {source} -> {shown}"))?;
            print_report(&report, &shown, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Abort { job, flags } => {
            let settings = flags.parse()?;
            let prefix = &settings.master.jobs_prefix;
            let (place, at) = jobs::locate(&job, &settings.s3, prefix).await?;
            let shown = place.show_job(&at);
            let done = at.recorded_tasks(&place.store).await?.len();
            let record = master::abort_job(&at, &place.store)
                .await
                .with_context(|| format!("abort the job {shown}"))?;
            println!(
                "aborted {shown}: {} -> {} ({done} of {} tasks were done)",
                record.source,
                place.show(&record.destination),
                record.plan.tasks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            source,
            size,
            flags,
            json,
        } => {
            let settings = flags.parse()?;
            let size = match (size, source) {
                (Some(size), _) => size,
                (None, Some(source)) => {
                    let sftp = ssh::source(&settings, &source)?;
                    let stat = sftp.stat(&source.path).await?;
                    if !stat.is_file {
                        bail!("{source} is not a regular file");
                    }
                    stat.size
                }
                (None, None) => bail!("give SOURCE or --size"),
            };
            let plan = plan::plan(size, &settings.tuning)?;
            let mut out = std::io::stdout().lock();
            let written = if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&plan)?)
            } else {
                write_plan(&mut out, &plan)
            };
            match written.and_then(|()| out.flush()) {
                // `gzship plan | head`: the reader has what it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                other => {
                    other.context("write the plan to stdout")?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Verify {
            source,
            destination,
            flags,
            sha256,
            json,
        } => {
            let settings = flags.parse()?;
            let sftp = ssh::source(&settings, &source)?;
            let (store, dest) = store::open(&destination, &settings.s3).await?;
            let report = verify::verify(&sftp, &source, &store, &dest, sha256).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_verify(&report, &destination);
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Estimate(args) => estimate::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Settings => {
            print!("{}", settings::markdown_table());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `gzship run` and `gzship resume` leave a job that stops for a retryable reason resumable.
fn resumable(config: &MasterConfig) -> MasterConfig {
    MasterConfig {
        resumable: true,
        ..config.clone()
    }
}

/// A job to run: a new one, or the one recorded where `run_job` is pointed.
enum Job<'a> {
    New(&'a JobRequest),
    /// The job recorded at `run_job`'s record, as read to find its source.
    Resume(Box<gzship_core::job::JobRecord>),
}

/// Runs (or resumes) a job with in-process workers and a progress bar on a terminal. With
/// `config.resumable`, a job that stops for a reason retrying can fix (including Ctrl-C) stays
/// resumable, and the error says how to resume or abort it.
async fn run_job<S: Source + 'static>(
    job: Job<'_>,
    at: &JobRef,
    source: Arc<S>,
    place: &jobs::Place,
    config: &MasterConfig,
    worker: &WorkerTuning,
) -> anyhow::Result<JobReport> {
    let watcher = tokio::spawn(cancel_on_signal(config.cancel.clone(), config.resumable));
    let result = run_job_unwatched(job, at, source, place, config, worker).await;
    watcher.abort();
    result
}

/// [`run_job`] without its Ctrl-C handler: for callers that watch for signals themselves (a
/// scan, which runs many jobs).
async fn run_job_unwatched<S: Source + 'static>(
    job: Job<'_>,
    at: &JobRef,
    source: Arc<S>,
    place: &jobs::Place,
    config: &MasterConfig,
    worker: &WorkerTuning,
) -> anyhow::Result<JobReport> {
    let store = &place.store;
    let progress = Arc::new(Progress::default());
    let invoker = LocalInvoker::new(source.clone(), store.clone(), worker.clone())
        .with_progress(progress.clone());
    let bar = progress::Bar::start(progress.clone());
    let result = match job {
        Job::New(request) => {
            master::run(
                request,
                &at.id,
                source.as_ref(),
                store,
                &invoker,
                config,
                Some(&progress),
            )
            .await
        }
        Job::Resume(record) => {
            master::resume(
                at,
                *record,
                source.as_ref(),
                store,
                &invoker,
                config,
                Some(&progress),
            )
            .await
        }
    };
    bar.finish(result.is_ok());
    match result {
        Ok(report) => Ok(report),
        Err(e) if master::leaves_resumable(&e) && matches!(at.read(store).await, Ok(Some(_))) => {
            let shown = place.show_job(at);
            Err(Stopped {
                hint: format!(
                    "the job can be resumed: `gzship resume {shown}` continues it (tasks \
                     already done are skipped); `gzship abort {shown}` discards it"
                ),
                cause: e,
            }
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// A job that stopped and stays resumable: the cause, then how to resume or abort it.
#[derive(Debug)]
struct Stopped {
    cause: gzship_core::Error,
    hint: String,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n{}",
            gzship_core::error::chain(&self.cause),
            self.hint
        )
    }
}

impl std::error::Error for Stopped {}

/// On Ctrl-C (SIGINT) or SIGTERM, cancels the job: its tasks stop, spooled parts are deleted
/// and the job stays resumable (its upload and record are kept) or, when not `resumable`, is
/// aborted. A second signal exits at once.
async fn cancel_on_signal(cancel: master::CancellationToken, resumable: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot watch for Ctrl-C: an interrupted job stops without a message");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    if resumable {
        eprintln!(
            "\ninterrupted: stopping the tasks; the job stays resumable (again to quit at once)"
        );
    } else {
        eprintln!(
            "\ninterrupted: stopping the tasks and aborting the upload (again to quit at once, \
             leaving the upload for the bucket's lifecycle rule)"
        );
    }
    cancel.cancel();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    std::process::exit(130);
}

fn print_report(report: &JobReport, destination: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let mut value = serde_json::to_value(report)?;
        value["destination"] = destination.into();
        println!("{value}");
    } else {
        println!(
            "shipped {} to {destination}\n  {} -> {} (ratio {:.2}), {} parts, {} tasks{}, \
             {:.1} s, {:.1} MB/s, crc32 {:08x}",
            report.source,
            human(report.source_bytes),
            human(report.object_bytes),
            report.ratio,
            report.parts,
            report.tasks,
            if report.resumed_tasks > 0 {
                format!(" ({} done before the resume)", report.resumed_tasks)
            } else {
                String::new()
            },
            report.seconds,
            report.mb_per_s,
            report.crc32
        );
    }
    Ok(())
}

fn write_plan(out: &mut impl Write, plan: &plan::Plan) -> std::io::Result<()> {
    writeln!(
        out,
        "source {} in {} tasks; blocks of {}; parts of {} ({} part numbers reserved)",
        human(plan.source_size),
        plan.tasks.len(),
        human(plan.block_size),
        human(plan.part_size),
        plan.reserved_parts()
    )?;
    for t in &plan.tasks {
        writeln!(
            out,
            "  task {:>5}  bytes {:>20}  {:>10}  parts {}{}",
            t.index,
            t.range.to_string(),
            human(t.range.len()),
            t.window,
            if t.is_last { "  (last)" } else { "" }
        )?;
    }
    Ok(())
}

fn print_verify(report: &verify::VerifyReport, destination: &str) {
    let sha = |d: &verify::Digest32| {
        d.sha256
            .as_deref()
            .map(|s| format!(", sha256 {s}"))
            .unwrap_or_default()
    };
    println!(
        "{}: {destination} ({}) decompresses to {} bytes, crc32 {:08x}{}; source {} bytes, \
         crc32 {:08x}{}",
        if report.ok { "OK" } else { "MISMATCH" },
        human(report.object_bytes),
        report.actual.bytes,
        report.actual.crc32,
        sha(&report.actual),
        report.expected.bytes,
        report.expected.crc32,
        sha(&report.expected),
    );
}

/// `1.5 GiB` style sizes for people.
fn human(n: u64) -> String {
    let units = [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
    for (size, name) in units {
        if n >= size {
            return format!("{:.1} {name}", n as f64 / size as f64);
        }
    }
    format!("{n} B")
}

/// Parses `123`, `4k`, `16MiB`, `1.5G`, `40TiB` (binary units; `B` optional), as every size
/// setting does.
fn parse_size(s: &str) -> Result<u64, String> {
    settings::parse_size(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
