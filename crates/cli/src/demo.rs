//! `gzship demo`: a real job on embedded defaults. An in-process SFTP server serves generated
//! web-server logs; gzship ships them through the same code path as `gzship run` into a local
//! store, verifies the object against the source, and prints the job report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use gzship_core::config::Secret;
use gzship_core::job::{self, JobRef};
use gzship_core::master::MasterConfig;
use gzship_core::plan::Tuning;
use gzship_core::source::sftp::{HostKeyPolicy, SftpConfig, SftpSource, SshAuth};
use gzship_core::store::local::LocalStore;
use gzship_core::wire::JobRequest;
use gzship_core::{SourceUrl, gzip::Level};
use gzship_sample::{DataKind, write_file};
use gzship_sftpd::{Password, SftpServer, SftpServerConfig};

use crate::store::AnyStore;

/// Options of `gzship demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Size of the generated log file.
    #[arg(long, value_parser = crate::parse_size, default_value = "256MiB")]
    size: u64,
    /// Number of tasks (in-process workers) to split the file into. Each non-last task must
    /// compress to at least 5 MiB or it is padded, so small demos want few tasks.
    #[arg(long, default_value_t = 2)]
    tasks: u32,
    /// gzip level, 1-9.
    #[arg(long, default_value_t = 6)]
    level: u8,
    /// Write the object to this file and keep it (default: a temporary directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the job report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the demo; the exit code is 0 only if the object verifies.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let work = tempfile::tempdir().context("create a temporary directory")?;
    let served = work.path().join("srv");
    std::fs::create_dir(&served).context("create the served directory")?;
    let file = served.join("access.log");
    eprintln!(
        "generating {} of web-server logs in {}",
        crate::human(args.size),
        file.display()
    );
    write_file(&file, DataKind::Logs, args.size, 42)
        .with_context(|| format!("write {}", file.display()))?;

    // A fresh random password for this run only: the server listens on 127.0.0.1.
    let password = format!("{:032x}", rand::random::<u128>());
    let server = SftpServer::start(
        SftpServerConfig::new(&served, "demo").with_password(Password::new(password.clone())),
    )
    .await
    .context("start the in-process SFTP server")?;
    let source_url: SourceUrl =
        format!("sftp://demo@127.0.0.1:{}/access.log", server.port()).parse()?;
    eprintln!(
        "serving it at {source_url} (host key {})",
        server.host_key_fingerprint()
    );

    let config = SftpConfig::from_url(
        &source_url,
        None,
        SshAuth::Password(Secret::new(password)),
        HostKeyPolicy::fingerprint(server.host_key_fingerprint())?,
    )?;
    let source = Arc::new(SftpSource::new(config)?);
    let out = match &args.out {
        Some(p) => p.clone(),
        None => work.path().join("access.log.gz"),
    };
    let (store, dest) = LocalStore::for_file(&out)?;
    let store = AnyStore::Local(store);
    let request = JobRequest {
        source: source_url.clone(),
        destination: dest.clone(),
        level: Level::new(args.level)?,
        tuning: Tuning {
            tasks: Some(args.tasks),
            ..Tuning::default()
        },
    };
    let shown = out.display().to_string();
    let place = crate::jobs::Place {
        store: store.clone(),
        dir: out.parent().map(|d| d.to_path_buf()),
    };
    let config = MasterConfig::default();
    let at = JobRef::new(&dest.bucket, &config.jobs_prefix, &job::new_id(&dest))?;
    // The demo's server ends with the demo: a stopped demo is aborted, not kept resumable.
    let report = crate::run_job(
        crate::Job::New(&request),
        &at,
        source.clone(),
        &place,
        &config,
        &gzship_core::worker::WorkerTuning::default(),
    )
    .await
    .with_context(|| format!("ship {source_url} to {shown}"))?;
    crate::print_report(&report, &shown, args.json)?;

    let verified = crate::verify::verify(source.as_ref(), &source_url, &store, &dest, true)
        .await
        .context("verify the object")?;
    if !args.json {
        crate::print_verify(&verified, &shown);
    }
    server.shutdown().await;
    if !verified.ok {
        anyhow::bail!("the object does not decompress to the source");
    }
    if args.out.is_none() && !args.json {
        eprintln!("(the object was in a temporary directory; keep it with --out FILE)");
    }
    Ok(ExitCode::SUCCESS)
}
