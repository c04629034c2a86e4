//! The functions' configuration, read once from the environment by the binaries and validated
//! into typed structs. Reading goes through a lookup function, so tests pass a map instead of
//! touching the process environment.
//!
//! Both functions:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GZSHIP_ALLOWED_SOURCE_PATHS` | comma-separated allowed source path prefixes (`/` for any) | required |
//! | `GZSHIP_ALLOWED_DESTINATIONS` | comma-separated `s3://bucket[/prefix]` | required |
//! | `GZSHIP_HOST_KEY` | the server's host key fingerprint, `SHA256:...` (`ssh-keygen -lf`) | one of these two |
//! | `GZSHIP_KNOWN_HOSTS` | known_hosts text (lines of `host keytype key`) | one of these two |
//! | `GZSHIP_SSH_SECRET` | Secrets Manager secret (name or ARN) with the credential | one of these two |
//! | `GZSHIP_SSH_KEY_FILE` | an unencrypted private key file (local runs, tests) | one of these two |
//! | `GZSHIP_SSH_USER` | login name when a source URL names none | none |
//! | `GZSHIP_SFTP_CONNECTIONS` | SSH connections per range read ([`SftpTuning::connections`]) | 1 |
//! | `GZSHIP_SFTP_REQUESTS_IN_FLIGHT` | READs in flight per connection | 32 |
//! | `GZSHIP_S3_ENDPOINT` | an S3-compatible endpoint (implies path-style addressing) | AWS |
//!
//! Worker only: `GZSHIP_COMPRESS_PARALLELISM` (2 x cores), `GZSHIP_UPLOADS_IN_FLIGHT` (4),
//! `GZSHIP_PART_MEMORY_MB` (256), `GZSHIP_SPOOL_DIR` (`/tmp`: where parts too big for the part
//! memory are spooled; the worker deletes stale spool files there when its process starts),
//! see [`WorkerTuning`].
//!
//! Master only:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GZSHIP_WORKER_FUNCTION` | the worker function's name or ARN | required |
//! | `GZSHIP_WORKER_TIMEOUT_SECS` | the worker function's configured timeout; tasks are sized to finish well inside it | 900 |
//! | `GZSHIP_MASTER_TIMEOUT_SECS` | the master function's own timeout; jobs that cannot finish inside it are refused | 900 |
//! | `GZSHIP_WORKER_MB_PER_S` | source MB/s one worker is assumed to manage, for that estimate | 50 |
//! | `GZSHIP_CONCURRENCY` | tasks (worker invocations) at once | 8 |
//! | `GZSHIP_TASK_ATTEMPTS` | attempts per task when its error is retryable | 3 |
//! | `GZSHIP_RETRY_DELAY_MS` | delay before the first retry, doubled each time | 1000 |
//! | `GZSHIP_START_INTERVAL_MS` | pause between starting two tasks (SSH handshake staggering) | 200 |
//! | `GZSHIP_DRAIN_TIMEOUT_SECS` | after a task failed for good and the upload was aborted, how long to let running workers end before the final abort | 30 |
//! | `GZSHIP_JOB_TEMPLATE` | a [`JobTemplate`] as JSON, for schedules without a job and for file-arrival notices | none |
//!
//! Endpoints of Lambda and Secrets Manager follow the SDK's standard variables
//! (`AWS_ENDPOINT_URL_LAMBDA`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use gzship_core::config::AccessPolicy;
use gzship_core::master::MasterConfig;
use gzship_core::source::sftp::{HostKeyPolicy, SftpTuning};
use gzship_core::store::s3::S3Config;
use gzship_core::worker::WorkerTuning;

use crate::credentials::CredentialSource;
use crate::error::HandlerError;
use crate::template::JobTemplate;

/// Looks a variable up; empty values count as unset.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// How both functions reach and trust the SFTP server.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Where the credential comes from.
    pub credentials: CredentialSource,
    /// How the host key is verified.
    pub host_key: HostKeyPolicy,
    /// Login name for source URLs without a user.
    pub default_user: Option<String>,
    /// SFTP speed and timeouts.
    pub tuning: SftpTuning,
}

/// The worker function's configuration.
#[derive(Debug, Clone)]
pub struct WorkerEnv {
    /// Allowed sources and destinations, enforced before any connection.
    pub policy: AccessPolicy,
    /// SFTP access.
    pub ssh: SshSettings,
    /// Compression and upload concurrency.
    pub tuning: WorkerTuning,
    /// The S3 client's tuning.
    pub s3: S3Config,
}

/// The master function's configuration.
#[derive(Debug, Clone)]
pub struct MasterEnv {
    /// Concurrency, retries and the access policy.
    pub master: MasterConfig,
    /// SFTP access (the master stats the source).
    pub ssh: SshSettings,
    /// The S3 client's tuning.
    pub s3: S3Config,
    /// The worker function's name or ARN.
    pub worker_function: String,
    /// The worker function's configured timeout.
    pub worker_timeout: Duration,
    /// The master function's own timeout.
    pub master_timeout: Duration,
    /// Source MB/s one worker is assumed to manage, to estimate a job's duration.
    pub worker_mb_per_s: f64,
    /// The template for schedules without a job and for file-arrival notices.
    pub template: Option<JobTemplate>,
}

fn var(lookup: Lookup<'_>, name: &str) -> Option<String> {
    lookup(name).filter(|v| !v.trim().is_empty())
}

fn parsed<T: FromStr>(lookup: Lookup<'_>, name: &'static str, default: T) -> Result<T, HandlerError>
where
    T::Err: std::fmt::Display,
{
    match var(lookup, name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e| HandlerError::Config {
            name,
            reason: format!("{v:?} is not valid: {e}"),
        }),
    }
}

fn list(
    lookup: Lookup<'_>,
    name: &'static str,
    example: &str,
) -> Result<Vec<String>, HandlerError> {
    let v = var(lookup, name).ok_or_else(|| HandlerError::Config {
        name,
        reason: format!("is not set; it lists what the function may touch, e.g. {example}"),
    })?;
    Ok(v.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// The access policy both functions enforce.
pub fn access_policy(lookup: Lookup<'_>) -> Result<AccessPolicy, HandlerError> {
    let source_paths = list(lookup, "GZSHIP_ALLOWED_SOURCE_PATHS", "/var/log/,/exports/")?;
    for p in &source_paths {
        if !p.starts_with('/') {
            return Err(HandlerError::Config {
                name: "GZSHIP_ALLOWED_SOURCE_PATHS",
                reason: format!("{p:?} is not an absolute path"),
            });
        }
    }
    let destinations = list(lookup, "GZSHIP_ALLOWED_DESTINATIONS", "s3://archive/logs/")?;
    for d in &destinations {
        if !d.starts_with("s3://") || d.len() <= "s3://".len() {
            return Err(HandlerError::Config {
                name: "GZSHIP_ALLOWED_DESTINATIONS",
                reason: format!("{d:?} is not s3://bucket or s3://bucket/prefix"),
            });
        }
    }
    Ok(AccessPolicy {
        source_paths: Some(source_paths),
        destinations: Some(destinations),
    })
}

/// Credentials, host key and SFTP tuning.
pub fn ssh_settings(lookup: Lookup<'_>) -> Result<SshSettings, HandlerError> {
    let credentials = match (
        var(lookup, "GZSHIP_SSH_SECRET"),
        var(lookup, "GZSHIP_SSH_KEY_FILE"),
    ) {
        (Some(secret), None) => CredentialSource::SecretsManager(secret.trim().to_owned()),
        (None, Some(path)) => CredentialSource::KeyFile(PathBuf::from(path)),
        (Some(_), Some(_)) => {
            return Err(HandlerError::Config {
                name: "GZSHIP_SSH_SECRET",
                reason: "GZSHIP_SSH_KEY_FILE is set too: keep one".into(),
            });
        }
        (None, None) => {
            return Err(HandlerError::Config {
                name: "GZSHIP_SSH_SECRET",
                reason: "is not set: name the Secrets Manager secret holding the ssh credential \
                         (or set GZSHIP_SSH_KEY_FILE for local runs)"
                    .into(),
            });
        }
    };
    let host_key = match (
        var(lookup, "GZSHIP_HOST_KEY"),
        var(lookup, "GZSHIP_KNOWN_HOSTS"),
    ) {
        (Some(fp), None) => HostKeyPolicy::fingerprint(&fp)?,
        (None, Some(text)) => HostKeyPolicy::known_hosts(&text),
        (Some(_), Some(_)) => {
            return Err(HandlerError::Config {
                name: "GZSHIP_HOST_KEY",
                reason: "GZSHIP_KNOWN_HOSTS is set too: keep one".into(),
            });
        }
        (None, None) => {
            return Err(HandlerError::Config {
                name: "GZSHIP_HOST_KEY",
                reason: "is not set: pin the server's host key (SHA256:..., from `ssh-keygen -lf` \
                         on its public host key) or give GZSHIP_KNOWN_HOSTS"
                    .into(),
            });
        }
    };
    let defaults = SftpTuning::default();
    let tuning = SftpTuning {
        connections: parsed(lookup, "GZSHIP_SFTP_CONNECTIONS", defaults.connections)?,
        requests_in_flight: parsed(
            lookup,
            "GZSHIP_SFTP_REQUESTS_IN_FLIGHT",
            defaults.requests_in_flight,
        )?,
        ..defaults
    };
    tuning.validate()?;
    Ok(SshSettings {
        credentials,
        host_key,
        default_user: var(lookup, "GZSHIP_SSH_USER"),
        tuning,
    })
}

fn s3_config(lookup: Lookup<'_>) -> S3Config {
    let endpoint_url = var(lookup, "GZSHIP_S3_ENDPOINT");
    S3Config {
        force_path_style: endpoint_url.is_some(),
        endpoint_url,
        ..S3Config::default()
    }
}

impl WorkerEnv {
    /// Reads and validates the worker's configuration.
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, HandlerError> {
        let defaults = WorkerTuning::default();
        let tuning = WorkerTuning {
            compress_parallelism: parsed(
                lookup,
                "GZSHIP_COMPRESS_PARALLELISM",
                defaults.compress_parallelism,
            )?,
            uploads_in_flight: parsed(
                lookup,
                "GZSHIP_UPLOADS_IN_FLIGHT",
                defaults.uploads_in_flight,
            )?,
            part_memory: parsed::<u64>(
                lookup,
                "GZSHIP_PART_MEMORY_MB",
                defaults.part_memory >> 20,
            )? << 20,
            spool_dir: var(lookup, "GZSHIP_SPOOL_DIR")
                .map_or(defaults.spool_dir, std::path::PathBuf::from),
            // /tmp on Lambda is the function's own: all of it may be used.
            spool_limit: None,
        };
        tuning.validate()?;
        Ok(WorkerEnv {
            policy: access_policy(lookup)?,
            ssh: ssh_settings(lookup)?,
            tuning,
            s3: s3_config(lookup),
        })
    }
}

impl MasterEnv {
    /// Reads and validates the master's configuration.
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, HandlerError> {
        let defaults = MasterConfig::default();
        let master = MasterConfig {
            concurrency: parsed(lookup, "GZSHIP_CONCURRENCY", defaults.concurrency)?,
            task_attempts: parsed(lookup, "GZSHIP_TASK_ATTEMPTS", defaults.task_attempts)?,
            retry_delay: Duration::from_millis(parsed(
                lookup,
                "GZSHIP_RETRY_DELAY_MS",
                defaults.retry_delay.as_millis() as u64,
            )?),
            start_interval: Duration::from_millis(parsed(
                lookup,
                "GZSHIP_START_INTERVAL_MS",
                defaults.start_interval.as_millis() as u64,
            )?),
            drain_timeout: Duration::from_secs(parsed(
                lookup,
                "GZSHIP_DRAIN_TIMEOUT_SECS",
                defaults.drain_timeout.as_secs(),
            )?),
            policy: access_policy(lookup)?,
            cancel: defaults.cancel,
        };
        if master.concurrency == 0 || master.task_attempts == 0 {
            return Err(HandlerError::Config {
                name: "GZSHIP_CONCURRENCY",
                reason: "GZSHIP_CONCURRENCY and GZSHIP_TASK_ATTEMPTS must be at least 1".into(),
            });
        }
        let worker_function =
            var(lookup, "GZSHIP_WORKER_FUNCTION").ok_or_else(|| HandlerError::Config {
                name: "GZSHIP_WORKER_FUNCTION",
                reason: "is not set: name the worker function (name or ARN)".into(),
            })?;
        let secs = |name: &'static str| -> Result<Duration, HandlerError> {
            let s: u64 = parsed(lookup, name, 900)?;
            if !(1..=900).contains(&s) {
                return Err(HandlerError::Config {
                    name,
                    reason: format!("{s} is outside Lambda's 1..=900 seconds"),
                });
            }
            Ok(Duration::from_secs(s))
        };
        let worker_mb_per_s: f64 = parsed(lookup, "GZSHIP_WORKER_MB_PER_S", 50.0)?;
        if !(worker_mb_per_s.is_finite() && worker_mb_per_s > 0.0) {
            return Err(HandlerError::Config {
                name: "GZSHIP_WORKER_MB_PER_S",
                reason: format!("{worker_mb_per_s} is not a positive number"),
            });
        }
        let template = match var(lookup, "GZSHIP_JOB_TEMPLATE") {
            None => None,
            Some(json) => {
                let t: JobTemplate =
                    serde_json::from_str(&json).map_err(|e| HandlerError::Config {
                        name: "GZSHIP_JOB_TEMPLATE",
                        reason: format!("not a job template ({e})"),
                    })?;
                t.validate()?;
                Some(t)
            }
        };
        Ok(MasterEnv {
            master,
            ssh: ssh_settings(lookup)?,
            s3: s3_config(lookup),
            worker_function: worker_function.trim().to_owned(),
            worker_timeout: secs("GZSHIP_WORKER_TIMEOUT_SECS")?,
            master_timeout: secs("GZSHIP_MASTER_TIMEOUT_SECS")?,
            worker_mb_per_s,
            template,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    const FP: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("GZSHIP_ALLOWED_SOURCE_PATHS", "/var/log/, /exports"),
            ("GZSHIP_ALLOWED_DESTINATIONS", "s3://archive/logs/"),
            ("GZSHIP_HOST_KEY", FP),
            ("GZSHIP_SSH_SECRET", "gzship/ssh"),
            ("GZSHIP_WORKER_FUNCTION", "gzship-worker"),
        ]
    }

    #[test]
    fn a_full_master_configuration_parses() {
        let mut vars = base();
        vars.push(("GZSHIP_CONCURRENCY", "3"));
        vars.push(("GZSHIP_WORKER_TIMEOUT_SECS", "600"));
        vars.push((
            "GZSHIP_JOB_TEMPLATE",
            r#"{"source":"sftp://u@h{path}","destination":"s3://archive/logs/{name}.gz"}"#,
        ));
        let env = MasterEnv::from_lookup(&lookup(&vars)).unwrap();
        assert_eq!(env.master.concurrency, 3);
        assert_eq!(env.worker_timeout, Duration::from_secs(600));
        assert_eq!(env.master_timeout, Duration::from_secs(900));
        assert_eq!(
            env.master.policy.source_paths,
            Some(vec!["/var/log/".into(), "/exports".into()])
        );
        assert!(env.template.unwrap().uses_path());
        assert_eq!(
            env.ssh.credentials,
            CredentialSource::SecretsManager("gzship/ssh".into())
        );
        let worker = WorkerEnv::from_lookup(&lookup(&vars)).unwrap();
        assert_eq!(worker.tuning.spool_dir, std::env::temp_dir());
        vars.push(("GZSHIP_SPOOL_DIR", "/mnt/spool"));
        vars.push(("GZSHIP_PART_MEMORY_MB", "64"));
        let worker = WorkerEnv::from_lookup(&lookup(&vars)).unwrap();
        assert_eq!(worker.tuning.spool_dir, std::path::Path::new("/mnt/spool"));
        assert_eq!(worker.tuning.part_memory, 64 << 20);
    }

    #[test]
    fn missing_and_bad_variables_are_named() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "GZSHIP_ALLOWED_SOURCE_PATHS",
                None,
                "GZSHIP_ALLOWED_SOURCE_PATHS",
            ),
            ("GZSHIP_ALLOWED_SOURCE_PATHS", Some("var/log"), "absolute"),
            (
                "GZSHIP_ALLOWED_DESTINATIONS",
                Some("archive"),
                "s3://bucket",
            ),
            ("GZSHIP_HOST_KEY", None, "GZSHIP_HOST_KEY"),
            ("GZSHIP_HOST_KEY", Some("MD5:aa"), "SHA256:"),
            ("GZSHIP_SSH_SECRET", None, "GZSHIP_SSH_SECRET"),
            ("GZSHIP_WORKER_FUNCTION", None, "GZSHIP_WORKER_FUNCTION"),
        ];
        for (name, value, want) in cases {
            let mut vars: Vec<_> = base().into_iter().filter(|(k, _)| k != name).collect();
            if let Some(v) = value {
                vars.push((name, v));
            }
            let err = MasterEnv::from_lookup(&lookup(&vars)).unwrap_err();
            let msg = gzship_core::error::chain(&err);
            assert!(msg.contains(want), "{name}={value:?}: {msg}");
        }
        let mut vars = base();
        vars.push(("GZSHIP_CONCURRENCY", "many"));
        let msg = MasterEnv::from_lookup(&lookup(&vars))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("GZSHIP_CONCURRENCY") && msg.contains("many"),
            "{msg}"
        );
        let mut vars = base();
        vars.push(("GZSHIP_WORKER_TIMEOUT_SECS", "3600"));
        assert!(MasterEnv::from_lookup(&lookup(&vars)).is_err());
        let mut vars = base();
        vars.push((
            "GZSHIP_JOB_TEMPLATE",
            r#"{"source":"sftp://h/{when}","destination":"s3://b1/k"}"#,
        ));
        let msg = gzship_core::error::chain(&MasterEnv::from_lookup(&lookup(&vars)).unwrap_err());
        assert!(msg.contains("{when}"), "{msg}");
    }
}
