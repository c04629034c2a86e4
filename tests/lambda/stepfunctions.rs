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

use std::time::Duration;

use gzship_testkit::bins;
use gzship_testkit::net::free_port;
use gzship_testkit::s3::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use gzship_testkit::stepfunctions::{ExecutionStatus, ROLE_ARN, StepFunctions};
use gzship_testkit::watch::{INVOKE_TIMEOUT, Watch};
use serde_json::{Value, json};

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
