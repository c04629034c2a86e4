//! `gzship`: ship one huge file from an SFTP server into S3 (or a local directory) as one gzip
//! object, with the workers as in-process tasks.
//!
//! Modules: `ssh` (credentials and host-key flags -> SFTP source), `store` (S3 or local
//! destination), `progress` (the terminal progress bar), `verify`, `demo`, `estimate` (plan, time
//! and cost of a job on Lambda).

mod demo;
mod estimate;
mod progress;
mod ssh;
mod store;
mod verify;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use gzship_core::gzip::Level;
use gzship_core::invoke::LocalInvoker;
use gzship_core::master::{self, MasterConfig};
use gzship_core::plan::{self, Tuning};
use gzship_core::source::Source;
use gzship_core::store::s3::S3Config;
use gzship_core::types::{GIB, KIB, MIB, TIB};
use gzship_core::wire::{JobReport, JobRequest};
use gzship_core::worker::{Progress, WorkerTuning};
use gzship_core::{ObjectUrl, SourceUrl};

/// Ship one huge file from an SFTP server into S3 as one gzip object.
#[derive(Debug, Parser)]
#[command(name = "gzship", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing's syntax), e.g. `info`, `gzship_core=debug`.
    #[arg(long, global = true, env = "GZSHIP_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ship SOURCE (sftp://[user@]host[:port]/path) to DESTINATION (s3://bucket/key or a local
    /// file path).
    Run {
        /// sftp://[user@]host[:port]/path
        source: SourceUrl,
        /// s3://bucket/key, or a local file path
        destination: String,
        #[command(flatten)]
        ssh: ssh::SshArgs,
        #[command(flatten)]
        tuning: TuningArgs,
        #[command(flatten)]
        s3: S3Args,
        /// Tasks running at once (each is one SSH connection).
        #[arg(long, env = "GZSHIP_CONCURRENCY", default_value_t = 2)]
        concurrency: usize,
        /// Memory per task for parts being cut and uploaded; parts too big for it (sources over
        /// about 1 TiB) are spooled to --spool-dir instead.
        #[arg(long, env = "GZSHIP_PART_MEMORY", value_parser = parse_size, default_value = "256MiB")]
        part_memory: u64,
        /// Directory for spooled parts (default: the system's temporary directory).
        #[arg(long, env = "GZSHIP_SPOOL_DIR")]
        spool_dir: Option<std::path::PathBuf>,
        /// Blocks compressed at once per task (default: twice the number of cores).
        #[arg(long, env = "GZSHIP_COMPRESS_PARALLELISM")]
        compress_parallelism: Option<usize>,
        /// The most of --spool-dir the job may use (default: its free space).
        #[arg(long, env = "GZSHIP_SPOOL_LIMIT", value_parser = parse_size)]
        spool_limit: Option<u64>,
        /// Print the job report as one JSON object on stdout.
        #[arg(long)]
        json: bool,
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
        ssh: ssh::SshArgs,
        #[command(flatten)]
        tuning: TuningArgs,
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
        ssh: ssh::SshArgs,
        #[command(flatten)]
        s3: S3Args,
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
}

/// Planner and compression knobs.
#[derive(Debug, Clone, Args)]
struct TuningArgs {
    /// Number of tasks (default: one per --task-size of source).
    #[arg(long, env = "GZSHIP_TASKS")]
    tasks: Option<u32>,
    /// Source bytes per task when --tasks is not given.
    #[arg(long, env = "GZSHIP_TASK_SIZE", value_parser = parse_size, default_value = "1GiB")]
    task_size: u64,
    /// gzip level, 1 (fastest) to 9 (smallest).
    #[arg(long, env = "GZSHIP_LEVEL", default_value_t = 6)]
    level: u8,
    /// Compressed bytes per part (raised when 10,000 parts would not hold the job).
    #[arg(long, env = "GZSHIP_PART_SIZE", value_parser = parse_size, default_value = "16MiB")]
    part_size: u64,
    /// Source bytes per gzip member.
    #[arg(long, env = "GZSHIP_BLOCK_SIZE", value_parser = parse_size, default_value = "4MiB")]
    block_size: u64,
}

impl TuningArgs {
    fn tuning(&self) -> Tuning {
        Tuning {
            block_size: self.block_size,
            part_size: self.part_size,
            task_size: self.task_size,
            tasks: self.tasks,
            ..Tuning::default()
        }
    }

    fn level(&self) -> anyhow::Result<Level> {
        Ok(Level::new(self.level)?)
    }
}

/// S3 connection knobs; credentials and region come from the standard AWS environment.
#[derive(Debug, Clone, Args)]
struct S3Args {
    /// Endpoint of an S3-compatible store (AWS_ENDPOINT_URL works too).
    #[arg(long, env = "GZSHIP_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Use path-style addressing (endpoint/bucket/key); implied by --s3-endpoint.
    #[arg(long)]
    s3_path_style: bool,
}

impl S3Args {
    fn config(&self) -> S3Config {
        S3Config {
            endpoint_url: self.s3_endpoint.clone(),
            force_path_style: self.s3_path_style || self.s3_endpoint.is_some(),
            ..S3Config::default()
        }
    }
}

/// mimalloc returns freed part and block buffers to the system; glibc's malloc kept hundreds
/// of MiB of them resident once several tasks ran at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let runtime = match tokio::runtime::Runtime::new() {
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
            match e.downcast_ref::<gzship_core::Error>() {
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
            ssh,
            tuning,
            s3,
            concurrency,
            part_memory,
            spool_dir,
            spool_limit,
            compress_parallelism,
            json,
        } => {
            let defaults = WorkerTuning::default();
            let worker = WorkerTuning {
                part_memory,
                spool_dir: spool_dir.unwrap_or(defaults.spool_dir.clone()),
                spool_limit,
                compress_parallelism: compress_parallelism.unwrap_or(defaults.compress_parallelism),
                ..defaults
            };
            let sftp = Arc::new(ssh.source(&source)?);
            let (store, dest) = store::open(&destination, &s3.config()).await?;
            let request = JobRequest {
                source,
                destination: dest,
                level: tuning.level()?,
                tuning: tuning.tuning(),
            };
            let config = MasterConfig {
                concurrency,
                ..MasterConfig::default()
            };
            let report = run_job(&request, sftp, store, &config, &worker, &destination).await?;
            print_report(&report, &destination, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            source,
            size,
            ssh,
            tuning,
            json,
        } => {
            let size = match (size, source) {
                (Some(size), _) => size,
                (None, Some(source)) => {
                    let sftp = ssh.source(&source)?;
                    let stat = sftp.stat(&source.path).await?;
                    if !stat.is_file {
                        bail!("{source} is not a regular file");
                    }
                    stat.size
                }
                (None, None) => bail!("give SOURCE or --size"),
            };
            let plan = plan::plan(size, &tuning.tuning())?;
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
            ssh,
            s3,
            sha256,
            json,
        } => {
            let sftp = ssh.source(&source)?;
            let (store, dest) = store::open(&destination, &s3.config()).await?;
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
    }
}

/// Runs a job with in-process workers and a progress bar on a terminal.
async fn run_job<S: Source + 'static>(
    request: &JobRequest,
    source: Arc<S>,
    store: store::AnyStore,
    config: &MasterConfig,
    worker: &WorkerTuning,
    shown_destination: &str,
) -> anyhow::Result<JobReport> {
    let progress = Arc::new(Progress::default());
    let invoker = LocalInvoker::new(source.clone(), store.clone(), worker.clone())
        .with_progress(progress.clone());
    let bar = progress::Bar::start(progress.clone());
    let job_id = job_id(&request.destination);
    let watcher = tokio::spawn(cancel_on_signal(config.cancel.clone()));
    let result = master::run(
        request,
        &job_id,
        source.as_ref(),
        &store,
        &invoker,
        config,
        Some(&progress),
    )
    .await;
    watcher.abort();
    bar.finish(result.is_ok());
    result.with_context(|| format!("ship {} to {shown_destination}", request.source))
}

/// On Ctrl-C (SIGINT) or SIGTERM, cancels the job: its tasks stop, spooled parts are deleted
/// and the upload is aborted, so nothing is left behind. A second signal exits at once.
async fn cancel_on_signal(cancel: master::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot watch for Ctrl-C: an interrupted job leaves its upload open");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!(
        "\ninterrupted: stopping the tasks and aborting the upload (again to quit at once, \
         leaving the upload for the bucket's lifecycle rule)"
    );
    cancel.cancel();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    std::process::exit(130);
}

/// A job id that is unique enough for logs: the key's file name and the start time.
fn job_id(dest: &ObjectUrl) -> String {
    let name = dest.file_name();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    format!("{name}-{}", now.as_millis())
}

fn print_report(report: &JobReport, destination: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let mut value = serde_json::to_value(report)?;
        value["destination"] = destination.into();
        println!("{value}");
    } else {
        println!(
            "shipped {} to {destination}\n  {} -> {} (ratio {:.2}), {} parts, {} tasks, \
             {:.1} s, {:.1} MB/s, crc32 {:08x}",
            report.source,
            human(report.source_bytes),
            human(report.object_bytes),
            report.ratio,
            report.parts,
            report.tasks,
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

/// Parses `123`, `4k`, `16MiB`, `1.5G`, `40TiB` (binary units; `B` optional).
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .with_context(|| format!("{s:?} does not start with a number"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        "t" | "tb" | "tib" => TIB,
        other => bail!("unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB)"),
    };
    let bytes = num * mult as f64;
    if !(0.0..=u64::MAX as f64).contains(&bytes) {
        bail!("{s:?} is out of range");
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("40 TiB").unwrap(), 40 << 40);
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
