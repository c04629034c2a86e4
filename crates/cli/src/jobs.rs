//! Unfinished jobs: `gzship jobs` lists the records beside a destination, `gzship resume`
//! continues one, `gzship abort` discards one. A job is named by its record's location (what
//! `gzship jobs` prints: `s3://bucket/.gzship/jobs/ID`, or `DIR/.gzship/jobs/ID` for a local
//! destination) or by its destination when only one unfinished job writes there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use gzship_core::ObjectUrl;
use gzship_core::job::{self, JobRef, JobStatus};
use gzship_core::store::local::{LOCAL_BUCKET, LocalStore};
use gzship_core::store::s3::S3Config;

use crate::human;
use crate::store::{self, AnyStore};

/// Where a job's records live and how to show them to the user.
pub struct Place {
    /// The store holding the records (and the destination).
    pub store: AnyStore,
    /// For a local destination, its directory: records and objects are shown as paths there.
    pub dir: Option<PathBuf>,
}

impl Place {
    /// A location as the user gives it: `s3://bucket[/prefix]` or a directory.
    pub async fn open(location: &str, s3: &S3Config) -> anyhow::Result<(Place, String, String)> {
        if location.starts_with("s3://") {
            let url = parse_s3_location(location)?;
            let (store, _) = store::open(&format!("s3://{}/x", url.0), s3).await?;
            let place = Place { store, dir: None };
            Ok((place, url.0, url.1))
        } else {
            let dir = std::path::absolute(location)
                .with_context(|| format!("resolve the directory {location}"))?;
            if !dir.is_dir() {
                bail!("{location} is not a directory (give a directory or s3://bucket/prefix)");
            }
            let place = Place {
                store: AnyStore::Local(LocalStore::directory(&dir)),
                dir: Some(dir),
            };
            Ok((place, LOCAL_BUCKET.to_owned(), String::new()))
        }
    }

    /// How the user names a job's record: its URL, or its directory for a local destination.
    pub fn show_job(&self, at: &JobRef) -> String {
        self.show(&at.url())
    }

    /// How the user names an object: its URL, or its path for a local destination.
    pub fn show(&self, url: &ObjectUrl) -> String {
        match &self.dir {
            Some(dir) => dir.join(&url.key).display().to_string(),
            None => url.to_string(),
        }
    }
}

/// `s3://bucket[/prefix]` -> (bucket, prefix).
fn parse_s3_location(location: &str) -> anyhow::Result<(String, String)> {
    let rest = location.strip_prefix("s3://").unwrap_or(location);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        bail!("{location} names no bucket (s3://bucket or s3://bucket/prefix)");
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// Finds the job JOB names: the location of its record, or its destination (when exactly one
/// unfinished job writes there).
pub async fn locate(job: &str, s3: &S3Config, prefix: &str) -> anyhow::Result<(Place, JobRef)> {
    if job.starts_with("s3://") {
        let url: ObjectUrl = job.trim_end_matches('/').parse().with_context(|| {
            format!("{job} is not a job (s3://bucket/{prefix}ID) or an s3:// URL")
        })?;
        let (store, _) = store::open(&url.to_string(), s3).await?;
        let place = Place { store, dir: None };
        if let Some(at) = JobRef::from_url(&url, prefix) {
            // A record's URL: its job must be there.
            at.read_existing(&place.store).await?;
            return Ok((place, at));
        }
        let at = by_destination(&place, &url, prefix, job).await?;
        return Ok((place, at));
    }
    let path = std::path::absolute(job).with_context(|| format!("resolve {job}"))?;
    if path.join("job.json").is_file()
        && let Some((dir, at)) = record_dir(&path, prefix)
    {
        let place = Place {
            store: AnyStore::Local(LocalStore::directory(&dir)),
            dir: Some(dir),
        };
        return Ok((place, at));
    }
    let (local, dest) = LocalStore::for_file(&path)?;
    let dir = path.parent().map(Path::to_path_buf);
    let place = Place {
        store: AnyStore::Local(local),
        dir,
    };
    let at = by_destination(&place, &dest, prefix, job).await?;
    Ok((place, at))
}

/// `DIR/<prefix><id>` -> (DIR, the job's record).
fn record_dir(path: &Path, prefix: &str) -> Option<(PathBuf, JobRef)> {
    let id = path.file_name()?.to_str()?;
    let mut dir = path.parent()?;
    for component in prefix.trim_end_matches('/').split('/').rev() {
        if component.is_empty() {
            continue;
        }
        if dir.file_name()?.to_str()? != component {
            return None;
        }
        dir = dir.parent()?;
    }
    let at = JobRef::new(LOCAL_BUCKET, prefix, id).ok()?;
    Some((dir.to_path_buf(), at))
}

async fn by_destination(
    place: &Place,
    dest: &ObjectUrl,
    prefix: &str,
    given: &str,
) -> anyhow::Result<JobRef> {
    let jobs = job::list_jobs(&place.store, &dest.bucket, prefix)
        .await
        .with_context(|| format!("list the jobs recorded beside {given}"))?;
    let mut writing: Vec<JobStatus> = jobs
        .into_iter()
        .filter(|j| &j.record.destination == dest)
        .collect();
    match writing.len() {
        1 => Ok(writing.remove(0).at),
        0 => bail!(
            "no unfinished job writes {given}, and it is not a job record (`gzship jobs` lists \
             the unfinished jobs of a bucket or directory)"
        ),
        _ => bail!(
            "{} unfinished jobs write {given}; name one:\n{}",
            writing.len(),
            writing
                .iter()
                .map(|j| format!("  {}", place.show_job(&j.at)))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// One line of `gzship jobs --json`.
#[derive(Debug, Serialize)]
struct JobLine {
    job: String,
    job_id: String,
    source: String,
    destination: String,
    upload_id: Option<String>,
    tasks_done: usize,
    tasks: usize,
    bytes_done: u64,
    source_bytes: u64,
    created: u64,
    age_seconds: u64,
    gzship_version: String,
}

/// `gzship jobs`: prints the unfinished jobs at `location` (destinations under its prefix),
/// and aborts those started at least `abort_older_than` ago.
pub async fn list(
    location: &str,
    s3: &S3Config,
    jobs_prefix: &str,
    json: bool,
    abort_older_than: Option<Duration>,
) -> anyhow::Result<()> {
    let (place, bucket, under) = Place::open(location, s3).await?;
    let jobs: Vec<JobStatus> = job::list_jobs(&place.store, &bucket, jobs_prefix)
        .await
        .with_context(|| format!("list the jobs recorded in {location}"))?
        .into_iter()
        .filter(|j| j.record.destination.key.starts_with(&under))
        .collect();
    let lines: Vec<JobLine> = jobs
        .iter()
        .map(|j| JobLine {
            job: place.show_job(&j.at),
            job_id: j.at.id.clone(),
            source: j.record.source.to_string(),
            destination: place.show(&j.record.destination),
            upload_id: j.record.upload_id.as_ref().map(|u| u.as_str().to_owned()),
            tasks_done: j.tasks_done.len(),
            tasks: j.record.plan.tasks.len(),
            bytes_done: j.bytes_done(),
            source_bytes: j.record.source_stat.size,
            created: j.record.created,
            age_seconds: j.record.age().as_secs(),
            gzship_version: j.record.gzship_version.clone(),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string(&lines)?);
    } else if lines.is_empty() {
        println!("no unfinished jobs in {location}");
    } else {
        for l in &lines {
            println!(
                "{}  {} -> {}  {}/{} tasks  {} of {}  {} old",
                l.job,
                l.source,
                l.destination,
                l.tasks_done,
                l.tasks,
                human(l.bytes_done),
                human(l.source_bytes),
                age(Duration::from_secs(l.age_seconds))
            );
        }
    }
    if let Some(limit) = abort_older_than {
        let mut failed = 0;
        // Ages are whole seconds (the record's start time is): `0s` must take a job started
        // a moment ago too, so the limit counts as reached when equalled.
        for j in jobs.iter().filter(|j| j.record.age() >= limit) {
            let shown = place.show_job(&j.at);
            match gzship_core::master::abort_job(&j.at, &place.store).await {
                Ok(_) => eprintln!("aborted {shown} ({} old)", age(j.record.age())),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: abort {shown}: {}", gzship_core::error::chain(&e));
                }
            }
        }
        if failed > 0 {
            bail!("{failed} jobs could not be aborted");
        }
    }
    Ok(())
}

/// `3d 4h`, `5h 2m`, `42s` style ages.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_directory_names_its_store_directory() {
        let (dir, at) = record_dir(
            Path::new("/data/out/.gzship/jobs/x.gz-1-ab12"),
            ".gzship/jobs/",
        )
        .unwrap();
        assert_eq!(dir, Path::new("/data/out"));
        assert_eq!(at.id, "x.gz-1-ab12");
        assert!(record_dir(Path::new("/data/out/other/jobs/x"), ".gzship/jobs/").is_none());
        let (dir, _) = record_dir(Path::new("/data/x-1-ab12"), "").unwrap();
        assert_eq!(dir, Path::new("/data"));
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(Duration::from_secs(42)), "42s");
        assert_eq!(age(Duration::from_secs(3 * 86_400 + 4 * 3600 + 5)), "3d 4h");
    }
}
