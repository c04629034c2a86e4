//! A real Step Functions engine (ministack, `gzship_testkit::stepfunctions`) running a Standard
//! state machine in the shape issue 13's takes: a DISTRIBUTED Map that invokes a function per
//! item with a Retry, a completion step after it, and a Catch on the Map that leads to a failure
//! step.
//!
//! The function is the master, under `cargo lambda watch` or as a binary that ministack runs
//! itself (where its error type reaches the state machine as on AWS). The items are events it
//! answers without any server: SQS batches whose messages carry no job (it succeeds, reporting
//! each message as a batch item failure) and file-arrival notices it has no template for (it
//! fails with `Fatal.InvalidInput`). So the tests are quick and check the harness, not shipping.
//!
//! The second half ships real jobs through the template's own state machine
//! (`infra/statemachine.asl.json`), with both functions run by ministack from the built
//! binaries: a job too long for the master, a task retried after a retryable failure, a fatal
//! one that aborts the job, and a failed execution resumed with `{"resume": record}`.

use std::time::Duration;

use gzship_core::ObjectUrl;
use gzship_core::store::ObjectStore;
use gzship_core::types::MIB;
use gzship_core::wire::JobReport;
use gzship_testkit::bins;
use gzship_testkit::data::{DataKind, sha256_file, write_file};
use gzship_testkit::decode::assert_decodes;
use gzship_testkit::net::free_port;
use gzship_testkit::s3::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use gzship_testkit::sshd::{PASSWORD, PASSWORD_USER};
use gzship_testkit::stepfunctions::{
    ACCOUNT_ID, Execution, ExecutionStatus, ROLE_ARN, StepFunctions,
};
use gzship_testkit::watch::{INVOKE_TIMEOUT, Watch};
use serde_json::{Value, json};

use super::template::state_machine_definition;
use super::watch::{self as e2e, BUCKET};

/// The first invocation builds the master; then each run takes about a second plus the Retry.
const RUN_TIMEOUT: Duration = INVOKE_TIMEOUT.saturating_add(Duration::from_secs(120));

/// The master's environment: enough to start, and nothing it can reach (no job here gets as
/// far as SFTP, S3 or a worker).
fn master_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("GZSHIP_ALLOWED_SOURCE_PATHS", "/exports/"),
        ("GZSHIP_ALLOWED_DESTINATIONS", "s3://sfn-bucket/"),
        (
            "GZSHIP_HOST_KEY",
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
        ),
        ("GZSHIP_SSH_SECRET", "gzship/never-fetched"),
        ("GZSHIP_WORKER_FUNCTION", "worker"),
        ("GZSHIP_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A DISTRIBUTED Map over the input's `events`, each item the event of one invocation of
/// `function`; one retry, after a second, of a task that failed with `retry_on`; then a
/// completion step that gathers the tasks' results, or, caught on the Map, a failure step that
/// ends the execution with the Map's error as its cause.
fn definition(function: &str, retry_on: &str) -> String {
    json!({
        "Comment": "gzship-testkit: the shape of issue 13's state machine",
        "StartAt": "Tasks",
        "States": {
            "Tasks": {
                "Type": "Map",
                "ItemsPath": "$.events",
                "MaxConcurrency": 2,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Task",
                    "States": {
                        "Task": {
                            "Type": "Task",
                            "Resource": "arn:aws:states:::lambda:invoke",
                            "Parameters": {"FunctionName": function, "Payload.$": "$"},
                            "ResultSelector": {"failures.$": "$.Payload.batchItemFailures"},
                            "Retry": [{
                                "ErrorEquals": [retry_on],
                                "IntervalSeconds": 1,
                                "MaxAttempts": 1,
                                "BackoffRate": 2.0
                            }],
                            "End": true
                        }
                    }
                },
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Failed"}],
                "Next": "Completed"
            },
            "Completed": {"Type": "Pass", "Parameters": {"tasks.$": "$"}, "End": true},
            "Failed": {"Type": "Fail", "Error": "JobFailed", "CausePath": "$.failure.Error"}
        }
    })
    .to_string()
}

/// ministack with the master registered and the state machine created.
struct Engine {
    sfn: StepFunctions,
    /// Where the master runs, unless ministack runs it itself.
    watch: Option<Watch>,
    machine: String,
}

/// The master under `cargo lambda watch`, which ministack forwards invokes to. A function
/// error reaches the state machine as `Runtime.HandlerError` there, so the Retry names
/// `States.TaskFailed`, which matches any error on AWS and in ministack alike.
async fn forwarding_engine(name: &str) -> Engine {
    let sfn = StepFunctions::start().await;
    let watch = Watch::start(free_port(), &master_env());
    let master = sfn
        .register_function("master", &watch.function_url("master"))
        .await;
    let machine = sfn
        .create_state_machine(name, &definition(&master, "States.TaskFailed"), ROLE_ARN)
        .await;
    Engine {
        sfn,
        watch: Some(watch),
        machine,
    }
}

impl Engine {
    /// The servers' logs, for a failure message.
    fn logs(&self) -> String {
        let watch = self.watch.as_ref().map(Watch::log).unwrap_or_default();
        format!("ministack log:\n{}\nemulator log:\n{watch}", self.sfn.log())
    }
}

/// An SQS event with one message that carries no job.
fn sqs_event(message_id: &str) -> Value {
    json!({"Records": [{"eventSource": "aws:sqs", "messageId": message_id, "body": "{}"}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn distributed_map_runs_the_master_per_item_then_the_completion_step() {
    let e = forwarding_engine("completes").await;
    let input = json!({"events": [sqs_event("m-0"), sqs_event("m-1"), sqs_event("m-2")]});
    let run = e.sfn.start_execution(&e.machine, &input).await;
    let done = e.sfn.wait(&run, RUN_TIMEOUT).await;
    assert_eq!(
        done.status,
        ExecutionStatus::Succeeded,
        "{done:?}\n{}",
        e.logs()
    );
    // The completion step has every task's result, in item order.
    let failures = |id: &str| json!({"failures": [{"itemIdentifier": id}]});
    assert_eq!(
        done.output,
        Some(json!({"tasks": [failures("m-0"), failures("m-1"), failures("m-2")]})),
        "{}",
        e.logs()
    );
    let children = e.sfn.map_run_executions(&run).await;
    assert_eq!(children.len(), 3, "{children:?}");
    for child in &children {
        assert_eq!(child.status, ExecutionStatus::Succeeded, "{child:?}");
        assert!(
            e.sfn.task_failures(&child.arn).await.is_empty(),
            "{child:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_item_is_retried_then_caught_into_the_failure_step() {
    let e = forwarding_engine("fails").await;
    // File-arrival notices the master has no GZSHIP_JOB_TEMPLATE for: Fatal.InvalidInput.
    let notices = [
        json!({"path": "/exports/a.csv"}),
        json!({"path": "/exports/b.csv"}),
    ];
    let run = e
        .sfn
        .start_execution(&e.machine, &json!({"events": notices}))
        .await;
    let done = e.sfn.wait(&run, RUN_TIMEOUT).await;
    // The failure step ran, with the Map's error, which does not name the items' (on AWS
    // neither): those are in the items' child executions.
    assert_eq!(
        done.status,
        ExecutionStatus::Failed,
        "{done:?}\n{}",
        e.logs()
    );
    assert_eq!(done.error.as_deref(), Some("JobFailed"), "{done:?}");
    assert_eq!(
        done.cause.as_deref(),
        Some("States.ExceedToleratedFailureThreshold"),
        "{done:?}"
    );
    assert_eq!(done.output, None);

    // ministack runs every item to its end (AWS may stop the others once one has failed).
    let mut children = e.sfn.map_run_executions(&run).await;
    children.sort_by_key(|c| c.input.to_string());
    let inputs: Vec<_> = children.iter().map(|c| c.input.clone()).collect();
    assert_eq!(inputs, notices, "{children:?}");
    for child in &children {
        assert_eq!(child.status, ExecutionStatus::Failed, "{child:?}");
        assert_eq!(
            child.error_type().as_deref(),
            Some("Fatal.InvalidInput"),
            "{child:?}"
        );
        let cause = child.cause.as_deref().unwrap_or_default();
        assert!(cause.contains("needs GZSHIP_JOB_TEMPLATE"), "{cause}");
        // Tried, and retried once.
        let attempts = e.sfn.task_failures(&child.arn).await;
        let types: Vec<_> = attempts.iter().map(|f| f.error_type()).collect();
        assert_eq!(
            types,
            ["Fatal.InvalidInput", "Fatal.InvalidInput"],
            "{attempts:?}\n{}",
            e.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_run_by_the_engine_fails_with_gzships_error_type_as_on_aws() {
    let sfn = StepFunctions::start().await;
    let master = sfn
        .register_binary("master", &bins::path("master"), &master_env())
        .await;
    // Retry on gzship's own error type, as the real state machine will.
    let definition = definition(&master, "Fatal.InvalidInput");
    let machine = sfn
        .create_state_machine("binary", &definition, ROLE_ARN)
        .await;
    let notice = json!({"path": "/exports/a.csv"});
    let run = sfn
        .start_execution(&machine, &json!({"events": [notice]}))
        .await;
    let done = sfn.wait(&run, RUN_TIMEOUT).await;
    assert_eq!(
        done.status,
        ExecutionStatus::Failed,
        "{done:?}\n{}",
        sfn.log()
    );
    assert_eq!(done.error.as_deref(), Some("JobFailed"), "{done:?}");

    let children = sfn.map_run_executions(&run).await;
    let [child] = children.as_slice() else {
        panic!("expected one item: {children:?}");
    };
    assert_eq!(child.input, notice);
    // The function's errorType is the task's error itself here, with no help from
    // lambda_error_type, and the Retry that names it matched.
    assert_eq!(
        child.error.as_deref(),
        Some("Fatal.InvalidInput"),
        "{child:?}"
    );
    let attempts = sfn.task_failures(&child.arn).await;
    let errors: Vec<_> = attempts.iter().map(|f| f.error.as_str()).collect();
    assert_eq!(
        errors,
        ["Fatal.InvalidInput", "Fatal.InvalidInput"],
        "{attempts:?}\n{}",
        sfn.log()
    );
    let cause = attempts[1].cause.as_deref().unwrap_or_default();
    assert!(cause.contains("needs GZSHIP_JOB_TEMPLATE"), "{cause}");
}

// --- Long jobs, end to end: the template's state machine (`infra/statemachine.asl.json`) on
// ministack, which runs the real `master` and `worker` binaries (so errors keep their types,
// as on AWS); the workers read from OpenSSH sshd and upload to moto, as in `watch.rs`. The
// master's timeout is set to 60 s, which leaves it no time for tasks (the duration model keeps
// 60 s for itself), so every job goes through the state machine.

/// The state machine's name, and so its ARN, which the master is given before it exists.
const MACHINE: &str = "gzship-jobs";
/// A job of three tasks on a 2-core machine, retries included.
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// ministack running both functions and the template's state machine, over sshd and moto.
struct Shipping {
    env: e2e::Env,
    sfn: StepFunctions,
    lambda: aws_sdk_lambda::Client,
}

/// How a [`Shipping`] is set up.
struct Setup {
    /// The worker's allowed source paths, when narrower than the master's.
    worker_sources: Option<&'static str>,
    /// The Distributed Map's MaxConcurrency.
    max_concurrency: u32,
    /// ministack's scale of Retry intervals.
    wait_scale: f64,
    /// Log in as the password user (who, unlike root, is denied a file with mode 000).
    password_user: bool,
}

fn set(vars: &mut Vec<(String, String)>, key: &str, value: String) {
    vars.retain(|(k, _)| k != key);
    vars.push((key.to_owned(), value));
}

async fn shipping(setup: Setup) -> Shipping {
    let env = e2e::servers().await;
    let sfn = StepFunctions::start_with_wait_scale(setup.wait_scale).await;
    let machine_arn = format!("arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{MACHINE}");
    let mut vars = env.functions_env(0, &env.data_dir());
    set(&mut vars, "AWS_ENDPOINT_URL_LAMBDA", sfn.endpoint_url());
    set(&mut vars, "AWS_ENDPOINT_URL_SFN", sfn.endpoint_url());
    set(&mut vars, "GZSHIP_STATE_MACHINE", machine_arn.clone());
    set(&mut vars, "GZSHIP_MASTER_TIMEOUT", "60s".into());
    if setup.password_user {
        let secrets = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&env.s3.sdk_config())
                .endpoint_url(env.s3.endpoint_url())
                .build(),
        );
        secrets
            .create_secret()
            .name(PASSWORD_SECRET)
            .secret_string(json!({ "password": PASSWORD }).to_string())
            .send()
            .await
            .unwrap();
        set(&mut vars, "GZSHIP_SSH_SECRET", PASSWORD_SECRET.into());
    }
    let master = sfn
        .register_binary("master", &bins::path("master"), &vars)
        .await;
    if let Some(sources) = setup.worker_sources {
        set(&mut vars, "GZSHIP_ALLOWED_SOURCE_PATHS", sources.into());
    }
    let worker = sfn
        .register_binary("worker", &bins::path("worker"), &vars)
        .await;
    let definition = state_machine_definition(&worker, &master, setup.max_concurrency);
    let created = sfn
        .create_state_machine(MACHINE, &definition, ROLE_ARN)
        .await;
    assert_eq!(created, machine_arn);
    let lambda = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(&gzship_testkit::s3::sdk_config())
            .endpoint_url(sfn.endpoint_url())
            .build(),
    );
    Shipping { env, sfn, lambda }
}

const PASSWORD_SECRET: &str = "gzship/e2e-password";

impl Shipping {
    /// Invokes the master as `aws lambda invoke` does: its answer, or its error reply.
    async fn invoke_master(&self, event: &Value) -> Result<Value, Value> {
        gzship_testkit::watch::invoke_function(&self.lambda, "master", event, || self.sfn.log())
            .await
    }

    /// Invokes the master with `event`, which must hand a job to the state machine.
    async fn start(&self, event: &Value) -> Value {
        let started = self
            .invoke_master(event)
            .await
            .unwrap_or_else(|e| panic!("the master failed: {e}\n{}", self.sfn.log()));
        assert!(
            started["execution_arn"].is_string(),
            "not handed to the state machine: {started}"
        );
        started
    }

    /// A job of three tasks from `file` to `key`, as the password user when `password`.
    fn job(&self, file: &str, key: &str, password: bool) -> Value {
        let mut job = self.env.job(file, key);
        if password {
            job["source"] = json!(format!(
                "sftp://{PASSWORD_USER}@127.0.0.1:{}{}",
                self.env.sshd.port(),
                self.env.sshd.data_dir().join(file).display()
            ));
        }
        job
    }

    /// The keys under the jobs prefix: job records and what they hold.
    async fn record_keys(&self) -> Vec<String> {
        let listed = self
            .env
            .s3
            .store()
            .list_objects(BUCKET, ".gzship/")
            .await
            .unwrap();
        listed.into_iter().map(|o| o.key).collect()
    }

    async fn assert_object_decodes(&self, key: &str, sha: &str) {
        let dest: ObjectUrl = format!("s3://{BUCKET}/{key}").parse().unwrap();
        let mut stream = self.env.s3.store().get_object(&dest).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let object = dir.path().join("object.gz");
        let mut gz = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            gz.extend_from_slice(&chunk.unwrap());
        }
        std::fs::write(&object, gz).unwrap();
        assert_decodes(&object, sha);
    }

    /// The task index of each child execution of `run`'s Map, with the child.
    async fn items(&self, run: &str) -> Vec<(u64, Execution)> {
        let mut items: Vec<_> = self
            .sfn
            .map_run_executions(run)
            .await
            .into_iter()
            .map(|c| {
                let index = c.input["recorded_task"]["index"].as_u64().unwrap();
                (index, c)
            })
            .collect();
        items.sort_by_key(|(i, _)| *i);
        items
    }
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Issue 13, test 1: a job too long for the master runs on the state machine, one worker per
/// task read from the job record, completes from the record and leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_job_ships_through_the_state_machine() {
    let s = shipping(Setup {
        worker_sources: None,
        max_concurrency: 2,
        wait_scale: 1.0,
        password_user: false,
    })
    .await;
    let path = s.env.sshd.data_dir().join("access.log");
    write_file(&path, DataKind::Logs, 24 * MIB + 12_345, 21).unwrap();
    let sha = sha256_file(&path).unwrap();

    let started = s
        .start(&s.job("access.log", "out/access.log.gz", false))
        .await;
    assert_eq!(started["tasks"], 3, "{started}");
    let record = started["record"].as_str().unwrap();
    assert!(
        record.starts_with(&format!("s3://{BUCKET}/.gzship/jobs/access.log.gz-")),
        "{record}"
    );
    let run = started["execution_arn"].as_str().unwrap();
    let done = s.sfn.wait(run, JOB_TIMEOUT).await;
    assert_eq!(
        done.status,
        ExecutionStatus::Succeeded,
        "{done:?}\n{}",
        s.sfn.log()
    );
    // The execution's output is the job report of the completion step.
    let report: JobReport = serde_json::from_value(done.output.clone().unwrap()).unwrap();
    assert_eq!((report.tasks, report.source_bytes), (3, 24 * MIB + 12_345));
    // One worker per task, each given the record and its index.
    let items = s.items(run).await;
    let indices: Vec<u64> = items.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, [0, 1, 2]);
    for (_, child) in &items {
        assert_eq!(child.input["recorded_task"]["record"], record);
        assert_eq!(child.status, ExecutionStatus::Succeeded, "{child:?}");
    }
    s.assert_object_decodes("out/access.log.gz", &sha).await;
    s.env.assert_no_open_uploads().await;
    assert_eq!(s.record_keys().await, Vec::<String>::new());
}

/// Issue 13, test 2: a worker that fails with a retryable error (the file is unreadable for its
/// first attempts) is retried by the state machine, and the job succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_retryable_task_failure_is_retried_by_the_state_machine() {
    let s = shipping(Setup {
        worker_sources: None,
        max_concurrency: 3,
        wait_scale: 1.0,
        password_user: true,
    })
    .await;
    let path = s.env.sshd.data_dir().join("denied.log");
    write_file(&path, DataKind::Logs, 12 * MIB, 22).unwrap();
    let sha = sha256_file(&path).unwrap();
    // Stat is allowed (the master plans), reading is not (the workers fail to open it).
    set_mode(&path, 0o000);

    let started = s
        .start(&s.job("denied.log", "out/denied.log.gz", true))
        .await;
    let run = started["execution_arn"].as_str().unwrap().to_owned();
    // Once a worker has failed, the file becomes readable before the retry (5 s later).
    let deadline = std::time::Instant::now() + JOB_TIMEOUT;
    'failed: loop {
        for (_, child) in s.items(&run).await {
            if !s.sfn.task_failures(&child.arn).await.is_empty() {
                break 'failed;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no worker failed\n{}",
            s.sfn.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    set_mode(&path, 0o644);

    let done = s.sfn.wait(&run, JOB_TIMEOUT).await;
    assert_eq!(
        done.status,
        ExecutionStatus::Succeeded,
        "{done:?}\n{}",
        s.sfn.log()
    );
    let mut failed = 0;
    for (index, child) in s.items(&run).await {
        let types: Vec<String> = s
            .sfn
            .task_failures(&child.arn)
            .await
            .iter()
            .map(|f| f.error.clone())
            .collect();
        assert!(
            types.iter().all(|t| t == "Retryable.SftpRead") && types.len() <= 1,
            "task {index}: {types:?}"
        );
        failed += types.len();
    }
    assert!(failed >= 1);
    s.assert_object_decodes("out/denied.log.gz", &sha).await;
    s.env.assert_no_open_uploads().await;
    assert_eq!(s.record_keys().await, Vec::<String>::new());
}

/// Issue 13, test 2: a fatal task error (the worker may not read the file) is not retried; the
/// failure step in the task's item aborts the job: no upload, no record, no object; the item
/// fails with the task's error and the execution in its Map.
#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_task_failure_aborts_the_job() {
    let s = shipping(Setup {
        worker_sources: Some("/nowhere/"),
        max_concurrency: 3,
        wait_scale: 1.0,
        password_user: false,
    })
    .await;
    let path = s.env.sshd.data_dir().join("big.log");
    write_file(&path, DataKind::Logs, 12 * MIB, 23).unwrap();

    let started = s.start(&s.job("big.log", "out/big.log.gz", false)).await;
    let run = started["execution_arn"].as_str().unwrap();
    let done = s.sfn.wait(run, JOB_TIMEOUT).await;
    assert_eq!(
        done.status,
        ExecutionStatus::Failed,
        "{done:?}\n{}",
        s.sfn.log()
    );
    assert_eq!(
        done.error.as_deref(),
        Some("States.ExceedToleratedFailureThreshold"),
        "{done:?}"
    );
    let mut aborted = 0;
    for (index, child) in s.items(run).await {
        // Not retried: one attempt per task.
        let attempts = s.sfn.task_failures(&child.arn).await;
        assert_eq!(attempts.len(), 1, "task {index}: {attempts:?}");
        assert_eq!(
            child.error.as_deref(),
            Some("Fatal.NotAllowed"),
            "{child:?}"
        );
        let cause = child.cause.as_deref().unwrap_or_default();
        assert!(cause.contains("/nowhere/"), "{cause}");
        // One failure step aborts the job; those running after it find no record.
        if cause.contains("the job was aborted") {
            aborted += 1;
        } else {
            assert!(cause.contains("has no record left"), "{cause}");
        }
    }
    assert!(aborted >= 1);
    s.env.assert_no_open_uploads().await;
    assert_eq!(s.record_keys().await, Vec::<String>::new());
    let dest: ObjectUrl = format!("s3://{BUCKET}/out/big.log.gz").parse().unwrap();
    assert!(s.env.s3.store().head_object(&dest).await.unwrap().is_none());
}

/// Issue 13, test 3: an execution whose last task failed for good with a retryable error leaves
/// the job resumable; `{"resume": record}` starts an execution that runs only that task, and
/// the object is whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_job_runs_only_its_failed_task() {
    let s = shipping(Setup {
        worker_sources: None,
        // One task at a time, in order: the file is made unreadable once task 1 is recorded.
        max_concurrency: 1,
        // The retries of the failing task come at once.
        wait_scale: 0.01,
        password_user: true,
    })
    .await;
    let path = s.env.sshd.data_dir().join("resumed.log");
    write_file(&path, DataKind::Logs, 12 * MIB + 777, 24).unwrap();
    let sha = sha256_file(&path).unwrap();

    let started = s
        .start(&s.job("resumed.log", "out/resumed.log.gz", true))
        .await;
    let record = started["record"].as_str().unwrap().to_owned();
    let run = started["execution_arn"].as_str().unwrap().to_owned();
    // Task 2 starts only after task 1's report is recorded (and opens the file after a
    // Lambda invoke, a read of the record and an SSH handshake): deny the file then.
    let deadline = std::time::Instant::now() + JOB_TIMEOUT;
    while !s
        .record_keys()
        .await
        .iter()
        .any(|k| k.ends_with("/tasks/00001.json"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "task 1 was not recorded\n{}",
            s.sfn.log()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    set_mode(&path, 0o000);
    let failed = s.sfn.wait(&run, JOB_TIMEOUT).await;
    assert_eq!(
        failed.status,
        ExecutionStatus::Failed,
        "{failed:?}\n{}",
        s.sfn.log()
    );
    let items = s.items(&run).await;
    // Task 2's item ran the failure step, which kept the job and said how to resume it.
    let (_, last) = &items[2];
    assert_eq!(
        last.error.as_deref(),
        Some("Retryable.SftpRead"),
        "{last:?}"
    );
    let cause = last.cause.as_deref().unwrap_or_default();
    assert!(cause.contains("kept for a resume"), "{cause}");
    let statuses: Vec<_> = items.iter().map(|(_, c)| c.status.clone()).collect();
    assert_eq!(
        statuses,
        [
            ExecutionStatus::Succeeded,
            ExecutionStatus::Succeeded,
            ExecutionStatus::Failed
        ],
        "{items:?}"
    );
    // The job is still there: its record and its upload.
    assert!(!s.record_keys().await.is_empty());

    set_mode(&path, 0o644);
    let resumed = s.start(&json!({ "resume": record })).await;
    assert_eq!(
        (resumed["tasks"].as_u64(), resumed["resumed_tasks"].as_u64()),
        (Some(1), Some(2)),
        "{resumed}"
    );
    let rerun = resumed["execution_arn"].as_str().unwrap();
    let done = s.sfn.wait(rerun, JOB_TIMEOUT).await;
    assert_eq!(
        done.status,
        ExecutionStatus::Succeeded,
        "{done:?}\n{}",
        s.sfn.log()
    );
    // The worker ran once more, for task 2 only.
    let items = s.items(rerun).await;
    let indices: Vec<u64> = items.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, [2], "{items:?}");
    s.assert_object_decodes("out/resumed.log.gz", &sha).await;
    s.env.assert_no_open_uploads().await;
    assert_eq!(s.record_keys().await, Vec::<String>::new());
}
