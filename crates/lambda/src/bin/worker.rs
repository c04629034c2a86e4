//! The worker function: one task in, its parts uploaded, its report out. Configuration:
//! `gzship_lambda::config`.

use anyhow::Context as _;
use gzship_core::store::s3::{S3Store, load_sdk_config};
use gzship_lambda::config::WorkerEnv;
use gzship_lambda::credentials::{CredentialSource, Credentials};
use gzship_lambda::error::HandlerError;
use gzship_lambda::runtime::{env_var, init_tracing};
use gzship_lambda::worker::handle_task;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

/// mimalloc returns freed part and block buffers to the system (glibc's malloc kept hundreds
/// of MiB of them resident).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Fewer I/O threads than cores: compression has the cores (`worker::runtime`).
    gzship_core::worker::runtime()
        .context("start the async runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    init_tracing();
    gzship_core::worker::disable_huge_pages();
    let env = WorkerEnv::from_lookup(&env_var).context("read the worker's configuration")?;
    // One budget for the process: its invocations share /tmp. A worker killed by its timeout
    // leaves its spooled parts there, and /tmp outlives it.
    let spool = env.tuning.spool_budget();
    match spool.clear_stale() {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(files = n, dir = %spool.dir().display(), "deleted stale spool files")
        }
        Err(e) => tracing::warn!(error = %gzship_core::error::chain(&e), "could not clear spool"),
    }
    let sdk = load_sdk_config().await;
    let store = S3Store::new(&sdk, &env.s3);
    let secrets = matches!(env.ssh.credentials, CredentialSource::SecretsManager(_))
        .then(|| aws_sdk_secretsmanager::Client::new(&sdk));
    let credentials = Credentials::new(env.ssh.credentials.clone(), secrets);
    let (env, credentials, store, spool) = (&env, &credentials, &store, &spool);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Boxed: the task's future is too deep for the compiler to lay out inline.
        let result = Box::pin(handle_task(event.payload, env, credentials, store, spool)).await;
        if let Err(e) = &result {
            log_failure(e);
        }
        result
    }))
    .await
    .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}

fn log_failure(e: &HandlerError) {
    tracing::error!(
        error_type = %e.error_type(), error = %gzship_core::error::chain(e), "task failed"
    );
}
