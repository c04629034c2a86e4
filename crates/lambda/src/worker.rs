//! The worker handler: a task in, its parts uploaded, its report out.

use gzship_core::Error;
use gzship_core::source::sftp::{SftpConfig, SftpSource};
use gzship_core::spool::SpoolBudget;
use gzship_core::store::MultipartStore;
use gzship_core::wire::{Task, TaskReport};
use gzship_core::worker;
use serde_json::Value;

use crate::config::{SshSettings, WorkerEnv};
use crate::credentials::Credentials;
use crate::error::HandlerError;

/// Runs one task. Before any connection is made, the payload must be a valid [`Task`]
/// (unknown fields refused, range inside the file, consistent sizes) and its source and
/// destination must be allowed by the worker's own policy: a worker can be invoked directly,
/// not only by the master. `spool` is the process's spool budget: invocations of one process
/// share its /tmp.
pub async fn handle_task<M: MultipartStore + Clone + 'static>(
    payload: Value,
    env: &WorkerEnv,
    credentials: &Credentials,
    store: &M,
    spool: &SpoolBudget,
) -> Result<TaskReport, HandlerError> {
    let task: Task = serde_json::from_value(payload)
        .map_err(|e| Error::invalid("task", format!("the payload is not a task: {e}")))?;
    task.validate()?;
    env.policy.check_source(&task.source)?;
    env.policy.check_destination(&task.destination)?;
    let source = sftp_source(&task.source, &env.ssh, credentials).await?;
    let report = worker::run(&task, &source, store, &env.tuning, spool, None).await?;
    Ok(report)
}

/// The SFTP source for `url`, with the function's credential, host key policy and tuning.
pub async fn sftp_source(
    url: &gzship_core::SourceUrl,
    ssh: &SshSettings,
    credentials: &Credentials,
) -> Result<SftpSource, HandlerError> {
    let auth = credentials.get().await?;
    let config =
        SftpConfig::from_url(url, ssh.default_user.as_deref(), auth, ssh.host_key.clone())?
            .with_tuning(ssh.tuning.clone());
    Ok(SftpSource::new(config)?)
}
