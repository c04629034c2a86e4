//! The master function: an event in, a job run by worker functions, its report out.
//! Configuration and accepted events: `gzship_lambda::config`, `gzship_lambda::event`.

use std::time::SystemTime;

use anyhow::Context as _;
use gzship_core::invoke::lambda::LambdaInvoker;
use gzship_core::master::CancellationToken;
use gzship_core::store::s3::{S3Store, load_sdk_config};
use gzship_lambda::config::MasterEnv;
use gzship_lambda::credentials::{CredentialSource, Credentials};
use gzship_lambda::master::{MasterDeps, cancel_delay, cancel_margin, handle_event};
use gzship_lambda::queue::{ArrivalQueue, DeadLetterQueue};
use gzship_lambda::runtime::{env_var, init_tracing};
use gzship_lambda::statemachine::StateMachine;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

/// mimalloc returns freed part and block buffers to the system (glibc's malloc kept hundreds
/// of MiB of them resident).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let env = MasterEnv::from_lookup(&env_var).context("read the master's configuration")?;
    let sdk = load_sdk_config().await;
    let store = S3Store::new(&sdk, &env.s3);
    let secrets = matches!(env.ssh.credentials, CredentialSource::SecretsManager(_))
        .then(|| aws_sdk_secretsmanager::Client::new(&sdk));
    let credentials = Credentials::new(env.ssh.credentials.clone(), secrets);
    let lambda =
        aws_sdk_lambda::Client::from_conf(LambdaInvoker::client_config(&sdk, env.worker_timeout));
    let invoker = LambdaInvoker::new(lambda, &env.worker_function, env.worker_timeout);
    let state_machine = env
        .state_machine
        .as_ref()
        .map(|arn| StateMachine::new(aws_sdk_sfn::Client::new(&sdk), arn));
    let arrival_queue = env
        .arrival_queue
        .as_ref()
        .map(|url| ArrivalQueue::new(aws_sdk_sqs::Client::new(&sdk), url));
    let dead_letter_queue = env
        .dead_letter_queue
        .as_ref()
        .map(|url| DeadLetterQueue::new(aws_sdk_sqs::Client::new(&sdk), url));
    let (env, credentials, store, invoker) = (&env, &credentials, &store, &invoker);
    let state_machine = state_machine.as_ref();
    let arrival_queue = arrival_queue.as_ref();
    let dead_letter_queue = dead_letter_queue.as_ref();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = event.context.request_id.clone();
        let deps = MasterDeps {
            credentials,
            store,
            invoker,
            cancel: CancellationToken::new(),
            state_machine,
            arrival_queue,
            dead_letter_queue,
        };
        // A job still running near the function's deadline is cancelled, so that its upload is
        // aborted rather than left open when the function is killed.
        let margin = cancel_margin(env.master.drain_timeout);
        let timer = cancel_delay(event.context.deadline, SystemTime::now(), margin).map(|d| {
            let cancel = deps.cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                tracing::warn!("the master's deadline is near: cancelling the job");
                cancel.cancel();
            })
        });
        // Boxed: the job's future is too deep for the compiler to lay out inline.
        let result = Box::pin(handle_event(
            event.payload,
            &request_id,
            SystemTime::now(),
            env,
            &deps,
        ))
        .await;
        if let Some(timer) = timer {
            timer.abort();
        }
        if let Err(e) = &result {
            tracing::error!(
                error_type = %e.error_type(), error = %gzship_core::error::chain(e), "job failed"
            );
        }
        result
    }))
    .await
    .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}
