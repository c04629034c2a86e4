//! `gzship run 'sftp://u@h/dir/*.csv' s3://bucket/prefix/`: ship every new, complete file of a
//! remote directory, one job at a time, each with its own report; with `--watch`, scan again
//! every DURATION until stopped. Which files are picked is [`gzship_core::scan`]'s to say.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use gzship_core::job::{self, JobRef};
use gzship_core::master::{CancellationToken, MasterConfig};
use gzship_core::scan::{self, Destinations, Picked, ScanOutcome};
use gzship_core::settings::Settings;
use gzship_core::source::sftp::SftpSource;
use gzship_core::store::s3::{S3Store, load_sdk_config};
use gzship_core::wire::JobRequest;
use gzship_core::{Error, SourceUrl};

use crate::store::AnyStore;
use crate::{Job, Stopped, jobs, print_report, resumable, run_job_unwatched, ssh};

/// What one scan did, for its summary line.
#[derive(Debug, Default)]
struct Tally {
    shipped: usize,
    skipped: usize,
    failed: usize,
}

/// How a scan (or the watch) ended.
enum End {
    /// Every picked file was tried.
    Done,
    /// Ctrl-C between two files: nothing is left half done.
    StoppedBetweenFiles,
    /// Ctrl-C during a job, which stays resumable (the error says how).
    Interrupted(anyhow::Error),
}

/// Runs the scan of `source` (a glob) into `destination` (`s3://bucket/prefix/` or a pattern
/// with `{name}`), once or, with `watch`, every `watch` until Ctrl-C.
pub async fn run(
    source: &SourceUrl,
    destination: &str,
    settings: &Settings,
    watch: Option<Duration>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let destinations = Destinations::parse(destination)?;
    scan::Glob::parse(&source.path)?;
    let sftp = Arc::new(ssh::source(settings, source)?);
    let sdk = load_sdk_config().await;
    let place = jobs::Place {
        store: AnyStore::S3(S3Store::new(&sdk, &settings.s3)),
        dir: None,
    };
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(stop_on_signal(stop.clone()));
    let config = MasterConfig {
        cancel: stop.clone(),
        skip_shipped: true,
        ..resumable(&settings.master)
    };
    let mut failed = false;
    let end = loop {
        let outcome = scan::scan(
            sftp.as_ref(),
            &place.store,
            source,
            &destinations,
            &settings.scan,
            &settings.policy,
            job::unix_now(),
        )
        .await
        .with_context(|| format!("scan {source}"))?;
        if outcome.matched == 0 && watch.is_none() {
            anyhow::bail!(
                "scan {source}: no entry of {} matches {:?}",
                outcome.dir,
                scan::Glob::parse(&source.path)?.pattern()
            );
        }
        let (tally, end) = ship(&outcome, &sftp, &place, &config, settings, json).await?;
        summary(source, &outcome, &tally, json)?;
        failed |= tally.failed > 0;
        let Some(every) = watch else { break end };
        if !matches!(end, End::Done) {
            break end;
        }
        // The jobs' idle buffers would wait out the pause for the next scan's jobs.
        gzship_core::assemble::release_spare();
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => break End::StoppedBetweenFiles,
        }
    };
    watcher.abort();
    match end {
        End::Interrupted(e) => Err(e),
        End::StoppedBetweenFiles => {
            eprintln!("stopped between files: no job was left unfinished");
            Ok(ExitCode::SUCCESS)
        }
        End::Done if failed => Ok(ExitCode::FAILURE),
        End::Done => Ok(ExitCode::SUCCESS),
    }
}

/// Reports the skipped files and ships the picked ones, one job at a time.
async fn ship(
    outcome: &ScanOutcome,
    sftp: &Arc<SftpSource>,
    place: &jobs::Place,
    config: &MasterConfig,
    settings: &Settings,
    json: bool,
) -> anyhow::Result<(Tally, End)> {
    let mut tally = Tally::default();
    for s in &outcome.skipped {
        skipped(&outcome.dir, &s.name, &s.reason, s.warn, json);
        tally.skipped += 1;
    }
    for file in &outcome.picked {
        if config.cancel.is_cancelled() {
            return Ok((tally, End::StoppedBetweenFiles));
        }
        let shown = file.destination.to_string();
        match ship_one(file, sftp, place, config, settings).await {
            Ok(report) => {
                print_report(&report, &shown, json)?;
                tally.shipped += 1;
            }
            Err(e) => match e.downcast_ref::<Error>() {
                Some(Error::JobExists { .. } | Error::AlreadyShipped { .. }) => {
                    skipped(&outcome.dir, &file.name, &format!("{e:#}"), false, json);
                    tally.skipped += 1;
                }
                _ if e.downcast_ref::<Stopped>().is_some() || config.cancel.is_cancelled() => {
                    return Ok((tally, End::Interrupted(e)));
                }
                _ => {
                    if json {
                        println!(
                            "{}",
                            json!({"source": file.source.to_string(), "destination": shown,
                                   "error": format!("{e:#}")})
                        );
                    }
                    eprintln!("error: {e:#}");
                    tally.failed += 1;
                }
            },
        }
    }
    Ok((tally, End::Done))
}

async fn ship_one(
    file: &Picked,
    sftp: &Arc<SftpSource>,
    place: &jobs::Place,
    config: &MasterConfig,
    settings: &Settings,
) -> anyhow::Result<gzship_core::wire::JobReport> {
    let request = JobRequest {
        source: file.source.clone(),
        destination: file.destination.clone(),
        level: settings.level,
        tuning: settings.tuning.clone(),
    };
    let id = job::new_id(&request.destination);
    let at = JobRef::new(&request.destination.bucket, &config.jobs_prefix, &id)?;
    run_job_unwatched(
        Job::New(&request),
        &at,
        sftp.clone(),
        place,
        config,
        &settings.worker,
    )
    .await
    .with_context(|| format!("ship {} to {}", request.source, request.destination))
}

fn skipped(dir: &str, name: &str, reason: &str, warn: bool, json: bool) {
    let path = format!("{}/{name}", dir.trim_end_matches('/'));
    if json {
        println!("{}", json!({"path": path, "skipped": reason}));
    }
    if warn {
        eprintln!("warning: skipped {path}: {reason}");
    } else if !json {
        eprintln!("skipped {path}: {reason}");
    }
}

fn summary(
    source: &SourceUrl,
    outcome: &ScanOutcome,
    tally: &Tally,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let line = json!({"scan": {
            "source": source.to_string(),
            "matched": outcome.matched,
            "shipped": tally.shipped,
            "skipped": tally.skipped,
            "failed": tally.failed,
            "left": outcome.left,
        }});
        println!("{line}");
    } else {
        println!(
            "scan of {source}: {} matched, {} shipped, {} skipped, {} failed{}",
            outcome.matched,
            tally.shipped,
            tally.skipped,
            tally.failed,
            if outcome.left > 0 {
                format!(
                    ", {} left for the next scan (--scan-files {})",
                    outcome.left,
                    outcome.picked.len()
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// On Ctrl-C (SIGINT) or SIGTERM, stops the scan: between two files it ends there, and a job
/// that is running stops and stays resumable. A second signal exits at once.
async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot watch for Ctrl-C: an interrupted scan stops without a message");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!(
        "\ninterrupted: stopping the scan; a running job stays resumable (again to quit at once)"
    );
    stop.cancel();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    std::process::exit(130);
}
