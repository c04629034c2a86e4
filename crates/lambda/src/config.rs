//! The functions' configuration, read once from the environment through the one settings
//! registry ([`gzship_core::settings`]): the same `GZSHIP_*` names, units and defaults as the
//! `gzship` CLI's flags (`cargo run -p gzship-cli -- settings` prints them all; the README's
//! settings table is that output). Reading goes through a lookup function, so tests pass a map
//! instead of touching the process environment.
//!
//! What only a function needs, checked here: `GZSHIP_ALLOWED_SOURCE_PATHS` and
//! `GZSHIP_ALLOWED_DESTINATIONS` (required: anyone allowed to invoke a function could
//! otherwise read or write anything), a credential (`GZSHIP_SSH_SECRET`, or `GZSHIP_IDENTITY`
//! for local runs), a host key (`GZSHIP_HOST_KEY`, `GZSHIP_KNOWN_HOSTS` or
//! `GZSHIP_KNOWN_HOSTS_TEXT`), and for the master `GZSHIP_WORKER_FUNCTION`. The master hands jobs
//! longer than its timeout to `GZSHIP_STATE_MACHINE` when it is set, and refuses them otherwise.
//!
//! Endpoints of Lambda, Step Functions and Secrets Manager follow the SDK's standard variables
//! (`AWS_ENDPOINT_URL_LAMBDA`, `AWS_ENDPOINT_URL_SFN`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`).

use std::time::Duration;

use gzship_core::Error;
use gzship_core::config::AccessPolicy;
use gzship_core::master::MasterConfig;
use gzship_core::settings::{FrontEnd, Settings};
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
    /// Where job records live (`GZSHIP_JOBS_PREFIX`): a task given as a record's index is read
    /// from there, and its report recorded there.
    pub jobs_prefix: String,
}

/// The master function's configuration.
#[derive(Debug, Clone)]
pub struct MasterEnv {
    /// Concurrency, retries, the duration model's throughput and the access policy.
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
    /// The template for schedules without a job and for file-arrival notices.
    pub template: Option<JobTemplate>,
    /// The state machine that runs jobs longer than the master's timeout; `None`: they are
    /// refused.
    pub state_machine: Option<String>,
    /// How a scan picks files (`GZSHIP_STABLE_FOR`, `GZSHIP_SCAN_FILES`).
    pub scan: gzship_core::scan::ScanRules,
    /// How long a scan's claim on a file it enqueued holds (`GZSHIP_SCAN_CLAIM_EXPIRY`).
    pub scan_claim_expiry: Duration,
    /// The queue a scan sends each new file's job to (`GZSHIP_ARRIVAL_QUEUE`); `None`: scan
    /// events are refused.
    pub arrival_queue: Option<String>,
    /// The queue a queued job's message goes to at once when it fails for good
    /// (`GZSHIP_DEAD_LETTER_QUEUE`); `None`: SQS redelivers it until its `maxReceiveCount`.
    pub dead_letter_queue: Option<String>,
}

/// Reads every setting of the functions, naming the variable on any error.
pub fn settings(lookup: Lookup<'_>) -> Result<Settings, HandlerError> {
    Settings::from_lookup(FrontEnd::Lambda, lookup).map_err(|e| match e {
        Error::Setting { name, reason } => HandlerError::Config { name, reason },
        other => HandlerError::Core(other),
    })
}

fn required<T>(value: Option<T>, name: &'static str, what: &str) -> Result<T, HandlerError> {
    value.ok_or_else(|| HandlerError::Config {
        name,
        reason: format!("is not set: {what}"),
    })
}

/// The access policy both functions enforce: both lists are required on Lambda.
pub fn access_policy(settings: &Settings) -> Result<AccessPolicy, HandlerError> {
    let p = &settings.policy;
    required(
        p.source_paths.as_ref(),
        "GZSHIP_ALLOWED_SOURCE_PATHS",
        "it lists the source paths the function may read, e.g. /var/log/,/exports/",
    )?;
    required(
        p.destinations.as_ref(),
        "GZSHIP_ALLOWED_DESTINATIONS",
        "it lists where the function may write, e.g. s3://archive/logs/",
    )?;
    Ok(p.clone())
}

/// Credentials, host key and SFTP tuning.
pub fn ssh_settings(settings: &Settings) -> Result<SshSettings, HandlerError> {
    let ssh = &settings.ssh;
    let credentials = match (&ssh.ssh_secret, &ssh.identity) {
        (Some(secret), None) => CredentialSource::SecretsManager(secret.clone()),
        (None, Some(path)) => CredentialSource::KeyFile(path.clone()),
        (Some(_), Some(_)) => {
            return Err(HandlerError::Config {
                name: "GZSHIP_SSH_SECRET",
                reason: "GZSHIP_IDENTITY is set too: keep one".into(),
            });
        }
        (None, None) => {
            return Err(HandlerError::Config {
                name: "GZSHIP_SSH_SECRET",
                reason: "is not set: name the Secrets Manager secret holding the ssh credential \
                         (or set GZSHIP_IDENTITY to a key file for local runs)"
                    .into(),
            });
        }
    };
    let host_key = match (&ssh.host_key, &ssh.known_hosts, &ssh.known_hosts_text) {
        (Some(fp), _, _) => HostKeyPolicy::fingerprint(fp)?,
        (None, Some(path), _) => HostKeyPolicy::known_hosts_file(path)?,
        (None, None, Some(text)) => HostKeyPolicy::known_hosts(text),
        (None, None, None) => {
            return Err(HandlerError::Config {
                name: "GZSHIP_HOST_KEY",
                reason: "is not set: pin the server's host key (SHA256:..., from `ssh-keygen -lf` \
                         on its public host key), or give GZSHIP_KNOWN_HOSTS (a file) or \
                         GZSHIP_KNOWN_HOSTS_TEXT (its lines)"
                    .into(),
            });
        }
    };
    Ok(SshSettings {
        credentials,
        host_key,
        default_user: ssh.user.clone(),
        tuning: settings.sftp.clone(),
    })
}

impl WorkerEnv {
    /// Reads and validates the worker's configuration.
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, HandlerError> {
        let settings = settings(lookup)?;
        Ok(WorkerEnv {
            policy: access_policy(&settings)?,
            ssh: ssh_settings(&settings)?,
            tuning: settings.worker.clone(),
            s3: settings.s3.clone(),
            jobs_prefix: settings.master.jobs_prefix.clone(),
        })
    }
}

impl MasterEnv {
    /// Reads and validates the master's configuration.
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, HandlerError> {
        let settings = settings(lookup)?;
        let policy = access_policy(&settings)?;
        let worker_function = required(
            settings.lambda.worker_function.clone(),
            "GZSHIP_WORKER_FUNCTION",
            "name the worker function (name or ARN)",
        )?;
        let template = match &settings.lambda.job_template {
            None => None,
            Some(json) => {
                let t: JobTemplate =
                    serde_json::from_str(json).map_err(|e| HandlerError::Config {
                        name: "GZSHIP_JOB_TEMPLATE",
                        reason: format!("not a job template ({e})"),
                    })?;
                t.validate()?;
                Some(t)
            }
        };
        Ok(MasterEnv {
            master: MasterConfig {
                policy,
                ..settings.master.clone()
            },
            ssh: ssh_settings(&settings)?,
            s3: settings.s3.clone(),
            worker_function,
            worker_timeout: settings.model.worker_timeout,
            master_timeout: settings.model.master_timeout,
            template,
            state_machine: settings.lambda.state_machine.clone(),
            scan: settings.scan,
            scan_claim_expiry: settings.scan_claim_expiry,
            arrival_queue: settings.lambda.arrival_queue.clone(),
            dead_letter_queue: settings.lambda.dead_letter_queue.clone(),
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
        vars.push(("GZSHIP_WORKER_TIMEOUT", "600s"));
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
        vars.push(("GZSHIP_PART_MEMORY", "64MiB"));
        let worker = WorkerEnv::from_lookup(&lookup(&vars)).unwrap();
        assert_eq!(worker.tuning.spool_dir, std::path::Path::new("/mnt/spool"));
        assert_eq!(worker.tuning.part_memory, 64 << 20);
    }

    /// `GZSHIP_KNOWN_HOSTS` is a file path on Lambda as in the CLI; the lines themselves go
    /// in `GZSHIP_KNOWN_HOSTS_TEXT`, and lines in the path variable are refused with that hint.
    #[test]
    fn known_hosts_is_a_file_and_known_hosts_text_its_lines() {
        const LINE: &str = "[127.0.0.1]:2222 ssh-ed25519 \
            AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("{LINE}\n")).unwrap();
        let entries = |vars: &[(&str, &str)]| {
            let mut all: Vec<_> = base()
                .into_iter()
                .filter(|(k, _)| *k != "GZSHIP_HOST_KEY")
                .collect();
            all.extend_from_slice(vars);
            match MasterEnv::from_lookup(&lookup(&all)).map(|e| e.ssh.host_key) {
                Ok(HostKeyPolicy::KnownHosts(k)) => Ok(k.len()),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(gzship_core::error::chain(&e)),
            }
        };
        let path = file.to_str().unwrap();
        assert_eq!(entries(&[("GZSHIP_KNOWN_HOSTS", path)]), Ok(1));
        assert_eq!(entries(&[("GZSHIP_KNOWN_HOSTS_TEXT", LINE)]), Ok(1));
        let err = entries(&[("GZSHIP_KNOWN_HOSTS", LINE)]).unwrap_err();
        assert!(err.contains("GZSHIP_KNOWN_HOSTS_TEXT"), "{err}");
        let err = entries(&[("GZSHIP_KNOWN_HOSTS", "/nonexistent/known_hosts")]).unwrap_err();
        assert!(err.contains("/nonexistent/known_hosts"), "{err}");
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
        vars.push(("GZSHIP_WORKER_TIMEOUT", "3600s"));
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
