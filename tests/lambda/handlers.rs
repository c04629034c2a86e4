//! The handlers on every accepted event shape (fixtures under `tests/lambda/fixtures/`), and the clear
//! errors for malformed events, unknown fields, paths outside the allow-list and tasks whose
//! range is past the end of the file: all before any connection is made. The dependencies here
//! cannot connect anywhere (a store on a closed port, an invoker that panics, a credential
//! that cannot be fetched), so an error that needed a connection would show as the wrong error.

use std::time::{SystemTime, UNIX_EPOCH};

use gzship_core::store::s3::{S3Config, S3Store};
use gzship_core::wire::Task;
use gzship_lambda::config::{MasterEnv, WorkerEnv};
use gzship_lambda::credentials::{CredentialSource, Credentials};
use gzship_lambda::error::HandlerError;
use gzship_lambda::event::{
    EventKind, ParseContext, Trigger, WorkerEvent, parse_event, parse_worker_event,
};
use gzship_lambda::master::{BatchItemFailure, MasterResponse, SqsBatchResponse, handle_event};
use gzship_lambda::worker::handle_task;
use serde_json::{Value, json};

use super::{NoInvoker, master_deps};

const FP: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
const ARRIVAL_TEMPLATE: &str = r#"{"source": "sftp://ingest@files.example.com:2222{path}",
    "destination": "s3://archive-bucket/incoming/{date}/{name}.gz"}"#;
const NIGHTLY_TEMPLATE: &str = r#"{"source": "sftp://backup@db1.example.com/var/dumps/db-{date}.sql",
    "destination": "s3://archive-bucket/db1/{date}/{name}.gz"}"#;

fn fixture(name: &str) -> Value {
    let path = format!("{}/lambda/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn vars(template: Option<&str>) -> impl Fn(&str) -> Option<String> {
    let template = template.map(str::to_owned);
    move |k: &str| -> Option<String> {
        Some(match k {
            "GZSHIP_ALLOWED_SOURCE_PATHS" => "/var/log/,/var/dumps/,/exports/".into(),
            "GZSHIP_ALLOWED_DESTINATIONS" => "s3://archive-bucket".into(),
            "GZSHIP_HOST_KEY" => FP.into(),
            "GZSHIP_SSH_SECRET" => "gzship/never-fetched".into(),
            "GZSHIP_WORKER_FUNCTION" => "gzship-worker".into(),
            "GZSHIP_JOB_TEMPLATE" => template.clone()?,
            _ => return None,
        })
    }
}

fn master_env(template: Option<&str>) -> MasterEnv {
    MasterEnv::from_lookup(&vars(template)).unwrap()
}

fn worker_env() -> WorkerEnv {
    WorkerEnv::from_lookup(&vars(None)).unwrap()
}

/// A credential that fails loudly if anything tries to fetch it.
fn unfetchable() -> Credentials {
    Credentials::new(
        CredentialSource::SecretsManager("gzship/never-fetched".into()),
        None,
    )
}

/// A store on a closed port: any request fails.
fn closed_store() -> S3Store {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    S3Store::new(
        &sdk,
        &S3Config {
            endpoint_url: Some("http://127.0.0.1:1".into()),
            force_path_style: true,
            max_attempts: 1,
            ..S3Config::default()
        },
    )
}

fn time(s: &str) -> SystemTime {
    gzship_lambda::template::parse_timestamp(s).unwrap()
}

fn single(event: &Value, env: &MasterEnv) -> (EventKind, String, String) {
    let ctx = ParseContext {
        template: env.template.as_ref(),
        policy: &env.master.policy,
        now: time("2026-01-02T03:04:05Z"),
    };
    match parse_event(event, &ctx).unwrap() {
        Trigger::Job { kind, job } => (kind, job.source.to_string(), job.destination.to_string()),
        other => panic!("expected one job, got {other:?}"),
    }
}

#[test]
fn manual_job() {
    let env = master_env(None);
    let (kind, source, destination) = single(&fixture("manual_job.json"), &env);
    assert_eq!(kind, EventKind::Manual);
    assert_eq!(
        source,
        "sftp://ingest@logs.example.com:2222/var/log/nginx/access.log"
    );
    assert_eq!(destination, "s3://archive-bucket/nginx/access.log.gz");
}

#[test]
fn template_event_and_scheduler_input() {
    let env = master_env(None);
    let (kind, source, destination) = single(&fixture("template_event.json"), &env);
    assert_eq!(kind, EventKind::Template);
    assert_eq!(
        source,
        "sftp://backup@db1.example.com:22/var/dumps/db-2026-11-22.sql"
    );
    assert_eq!(
        destination,
        "s3://archive-bucket/db1/2026-11-22/db-2026-11-22.sql.gz"
    );
    let (_, _, destination) = single(&fixture("scheduler_input.json"), &env);
    assert_eq!(
        destination,
        "s3://archive-bucket/db1/2026-11-22/020000-db-2026-11-22.sql.gz"
    );
    // Without a time, the template renders at the time the event arrived.
    let mut event = fixture("scheduler_input.json");
    event.as_object_mut().unwrap().remove("time");
    let (_, source, _) = single(&event, &env);
    assert!(source.ends_with("db-2026-01-02.sql"), "{source}");
}

#[test]
fn eventbridge_scheduled_events() {
    // An empty detail: the configured template at the event's time.
    let env = master_env(Some(NIGHTLY_TEMPLATE));
    let (kind, source, destination) = single(&fixture("scheduled_event.json"), &env);
    assert_eq!(kind, EventKind::Schedule);
    assert!(source.ends_with("/var/dumps/db-2026-11-22.sql"), "{source}");
    assert_eq!(
        destination,
        "s3://archive-bucket/db1/2026-11-22/db-2026-11-22.sql.gz"
    );
    // A detail with a template: that one, at the envelope's time.
    let env = master_env(None);
    let (kind, source, _) = single(&fixture("scheduled_event_with_job.json"), &env);
    assert_eq!(kind, EventKind::Schedule);
    assert!(source.ends_with("db-2026-11-22.sql"), "{source}");
}

#[test]
fn eventbridge_custom_event_and_sns_name_the_arrived_file() {
    let env = master_env(Some(ARRIVAL_TEMPLATE));
    let (kind, source, destination) = single(&fixture("eventbridge_custom.json"), &env);
    assert_eq!(kind, EventKind::EventBridge);
    assert_eq!(
        source,
        "sftp://ingest@files.example.com:2222/exports/orders-2026-11-21.csv"
    );
    assert_eq!(
        destination,
        "s3://archive-bucket/incoming/2026-11-22/orders-2026-11-21.csv.gz"
    );
    let (kind, source, destination) = single(&fixture("sns_notification.json"), &env);
    assert_eq!(kind, EventKind::Notice);
    assert!(
        source.ends_with("/exports/orders-2026-11-21.csv"),
        "{source}"
    );
    // SNS carries no event time: the arrival time is used.
    assert_eq!(
        destination,
        "s3://archive-bucket/incoming/2026-01-02/orders-2026-11-21.csv.gz"
    );
}

#[test]
fn sqs_batches_give_one_job_or_one_error_per_message() {
    let env = master_env(Some(ARRIVAL_TEMPLATE));
    let ctx = ParseContext {
        template: env.template.as_ref(),
        policy: &env.master.policy,
        now: UNIX_EPOCH,
    };
    let Trigger::Sqs(items) = parse_event(&fixture("sqs_batch.json"), &ctx).unwrap() else {
        panic!("expected an SQS batch");
    };
    let ids: Vec<&str> = items.iter().map(|i| i.message_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "msg-job",
            "msg-notice",
            "msg-sns",
            "msg-eventbridge",
            "msg-malformed",
            "msg-disallowed"
        ]
    );
    let job = |i: usize| {
        let (kind, job) = items[i].job.as_ref().unwrap();
        (*kind, job.source.path.clone(), job.destination.key.clone())
    };
    assert_eq!(job(0).0, EventKind::Manual);
    assert_eq!(
        job(1),
        (
            EventKind::Notice,
            "/exports/orders-2026-11-21.csv".into(),
            "incoming/2026-11-22/orders-2026-11-21.csv.gz".into()
        )
    );
    assert_eq!(job(2).1, "/exports/a.csv");
    assert_eq!(
        job(3),
        (
            EventKind::EventBridge,
            "/exports/b.csv".into(),
            "incoming/2026-11-22/b.csv.gz".into()
        )
    );
    let err = items[4].job.as_ref().unwrap_err().to_string();
    assert!(
        err.contains("msg-malformed") && err.contains("not JSON"),
        "{err}"
    );
    let err = items[5].job.as_ref().unwrap_err().to_string();
    assert!(
        err.contains("/etc/shadow") && err.contains("not allowed"),
        "{err}"
    );
}

#[tokio::test]
async fn sqs_messages_that_fail_are_reported_as_batch_item_failures() {
    let env = master_env(Some(ARRIVAL_TEMPLATE));
    let mut event = fixture("sqs_batch.json");
    let records = event["Records"].as_array_mut().unwrap();
    records.retain(|r| r["messageId"] == "msg-malformed" || r["messageId"] == "msg-disallowed");
    let store = closed_store();
    let credentials = unfetchable();
    let deps = master_deps(&credentials, &store, &NoInvoker);
    let response = handle_event(event, "req", UNIX_EPOCH, &env, &deps)
        .await
        .unwrap();
    let MasterResponse::Batch(batch) = &response else {
        panic!("expected a batch response, got {response:?}");
    };
    assert_eq!(
        *batch,
        SqsBatchResponse {
            batch_item_failures: vec![
                BatchItemFailure {
                    item_identifier: "msg-malformed".into()
                },
                BatchItemFailure {
                    item_identifier: "msg-disallowed".into()
                },
            ]
        }
    );
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"batchItemFailures": [{"itemIdentifier": "msg-malformed"},
                                     {"itemIdentifier": "msg-disallowed"}]})
    );
}

async fn master_error(event: Value, template: Option<&str>) -> HandlerError {
    let env = master_env(template);
    let store = closed_store();
    let credentials = unfetchable();
    let deps = master_deps(&credentials, &store, &NoInvoker);
    match handle_event(event, "req", UNIX_EPOCH, &env, &deps).await {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn malformed_master_events_get_clear_errors() {
    let job = fixture("manual_job.json");
    let with = |mut v: Value, key: &str, value: Value| {
        v.as_object_mut().unwrap().insert(key.into(), value);
        v
    };
    let mut eventbridge_bad_detail = fixture("eventbridge_custom.json");
    eventbridge_bad_detail["detail"] = json!("/exports/x.csv");
    let mut bad_time = fixture("template_event.json");
    bad_time["time"] = json!("yesterday");
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (json!([1, 2]), None, "expected a JSON object"),
        (json!({}), None, "unrecognised event"),
        (json!({"job": job.clone()}), None, "unrecognised event"),
        (
            with(job.clone(), "levle", json!(3)),
            None,
            "unknown field `levle`",
        ),
        (
            json!({"source": "sftp://h/var/log/a", "destination": "s3://archive-bucket/k",
                   "tuning": {"part_sise": 1}}),
            None,
            "unknown field `part_sise`",
        ),
        (
            json!({"source": "http://h/var/log/a", "destination": "s3://archive-bucket/k"}),
            None,
            "sftp://",
        ),
        (
            json!({"source": "sftp://h/var/log/a"}),
            None,
            "missing field `destination`",
        ),
        (
            with(fixture("template_event.json"), "when", json!("now")),
            None,
            "unknown field `when`",
        ),
        (bad_time, None, "yesterday"),
        (
            json!({"template": {"source": "sftp://h/var/log/{hour}.log",
                                "destination": "s3://archive-bucket/k"}}),
            None,
            "{hour}",
        ),
        (
            json!({"path": "/exports/a.csv"}),
            None,
            "needs GZSHIP_JOB_TEMPLATE",
        ),
        (
            json!({"path": "exports/a.csv"}),
            Some(ARRIVAL_TEMPLATE),
            "not an absolute file path",
        ),
        (
            json!({"path": "/exports/a.csv", "size": 10}),
            Some(ARRIVAL_TEMPLATE),
            "unknown field `size`",
        ),
        (fixture("scheduled_event.json"), None, "carries no job"),
        (
            fixture("scheduled_event.json"),
            Some(ARRIVAL_TEMPLATE),
            "only file-arrival notices give",
        ),
        (eventbridge_bad_detail, None, "not an object"),
        (json!({"Records": []}), None, "non-empty array"),
        (
            json!({"Records": [{"eventSource": "aws:s3", "s3": {}}]}),
            None,
            "aws:s3 are not supported",
        ),
        (
            json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "not json"}}]}),
            None,
            "the SNS message is not JSON",
        ),
        (
            json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m", "body": "{}"},
                               {"EventSource": "aws:sns"}]}),
            None,
            "mix event sources",
        ),
    ];
    for (event, template, want) in cases {
        let shown = event.to_string();
        let err = master_error(event, template).await;
        let d = lambda_runtime::Diagnostic::from(err);
        assert_eq!(d.error_type, "Fatal.InvalidInput", "{shown}: {d:?}");
        assert!(
            d.error_message.contains(want),
            "{shown}: expected {want:?} in {:?}",
            d.error_message
        );
    }
}

#[tokio::test]
async fn master_refuses_paths_outside_the_allow_list() {
    let cases = [
        (
            json!({"source": "sftp://h/etc/passwd", "destination": "s3://archive-bucket/k"}),
            None,
            "/etc/passwd",
        ),
        (
            json!({"source": "sftp://h/var/log/../../etc/passwd",
                   "destination": "s3://archive-bucket/k"}),
            None,
            "'..'",
        ),
        (
            json!({"source": "sftp://h/var/log/a", "destination": "s3://other-bucket/k"}),
            None,
            "s3://other-bucket/k",
        ),
        (
            json!({"path": "/etc/shadow"}),
            Some(ARRIVAL_TEMPLATE),
            "/etc/shadow",
        ),
    ];
    for (event, template, want) in cases {
        let shown = event.to_string();
        let d = lambda_runtime::Diagnostic::from(master_error(event, template).await);
        assert_eq!(d.error_type, "Fatal.NotAllowed", "{shown}: {d:?}");
        assert!(d.error_message.contains(want), "{shown}: {d:?}");
    }
}

async fn worker_error(task: Value) -> lambda_runtime::Diagnostic {
    let env = worker_env();
    let store = closed_store();
    let spool = env.tuning.spool_budget();
    match handle_task(task, &env, &unfetchable(), &store, &spool).await {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.into(),
    }
}

#[test]
fn worker_task_fixture_is_a_valid_task() {
    let task: Task = serde_json::from_value(fixture("task.json")).unwrap();
    task.validate().unwrap();
    let env = worker_env();
    env.policy.check_source(&task.source).unwrap();
    env.policy.check_destination(&task.destination).unwrap();
}

#[tokio::test]
async fn worker_refuses_bad_tasks_before_connecting() {
    let task = fixture("task.json");
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut t = task.clone();
        f(&mut t);
        t
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            edit(&|t| t["surprise"] = json!(1)),
            "Fatal.InvalidInput",
            "unknown field `surprise`",
        ),
        (json!("not a task"), "Fatal.InvalidInput", "not a task"),
        (
            edit(&|t| t["range"] = json!({"start": 2147483648u64, "end": 4294967296u64})),
            "Fatal.InvalidInput",
            "past the end",
        ),
        (
            edit(&|t| t["is_last"] = json!(true)),
            "Fatal.InvalidInput",
            "is_last",
        ),
        (
            edit(&|t| t["source"] = json!("sftp://ingest@h/etc/shadow")),
            "Fatal.NotAllowed",
            "/etc/shadow",
        ),
        (
            edit(&|t| t["destination"] = json!("s3://other-bucket/k.gz")),
            "Fatal.NotAllowed",
            "s3://other-bucket/k.gz",
        ),
    ];
    for (task, want_type, want) in cases {
        let shown = task.to_string();
        let d = worker_error(task).await;
        assert_eq!(d.error_type, want_type, "{shown}: {d:?}");
        assert!(d.error_message.contains(want), "{shown}: {d:?}");
    }
}

#[tokio::test]
async fn a_credential_that_cannot_be_had_is_a_clear_error() {
    // A valid task reaches the credential; this one cannot be fetched (no client).
    let d = worker_error(fixture("task.json")).await;
    assert_eq!(d.error_type, "Fatal.Config", "{d:?}");
    assert!(d.error_message.contains("GZSHIP_SSH_SECRET"), "{d:?}");
}

/// The state machine's events and a resume parse into their triggers; a worker's recorded
/// task too; unknown fields and bad URLs are refused with the shape expected.
#[tokio::test]
async fn job_record_events_parse_strictly() {
    let env = master_env(None);
    let ctx = ParseContext {
        template: None,
        policy: &env.master.policy,
        now: UNIX_EPOCH,
    };
    let record = "s3://archive-bucket/.gzship/jobs/orders.csv.gz-1764488400123-9f2c";
    match parse_event(&fixture("resume.json"), &ctx).unwrap() {
        Trigger::Resume(url) => assert_eq!(url.to_string(), record),
        other => panic!("{other:?}"),
    }
    match parse_event(&fixture("complete_step.json"), &ctx).unwrap() {
        Trigger::Complete(url) => assert_eq!(url.to_string(), record),
        other => panic!("{other:?}"),
    }
    match parse_event(&fixture("failed_step.json"), &ctx).unwrap() {
        Trigger::Failed(step) => {
            assert_eq!(step.record.to_string(), record);
            assert_eq!(step.error.error, "States.ExceedToleratedFailureThreshold");
        }
        other => panic!("{other:?}"),
    }
    match parse_worker_event(fixture("recorded_task.json")).unwrap() {
        WorkerEvent::Recorded(t) => {
            assert_eq!((t.record.to_string().as_str(), t.index), (record, 3));
        }
        other => panic!("{other:?}"),
    }
    let bad: Vec<(Value, &str)> = vec![
        (json!({"resume": 7}), "resume event"),
        (
            json!({"resume": record, "now": true}),
            "unknown field `now`",
        ),
        (
            json!({"complete": {"record": record, "x": 1}}),
            "unknown field `x`",
        ),
        (json!({"complete": {}}), "missing field `record`"),
        (
            json!({"failed": {"record": record}}),
            "missing field `error`",
        ),
    ];
    for (event, want) in bad {
        let err = parse_event(&event, &ctx).unwrap_err().to_string();
        assert!(err.contains(want), "{event}: {err}");
    }
    let err = parse_worker_event(json!({"recorded_task": {"record": record, "index": 1, "y": 0}}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `y`"), "{err}");
    // A URL outside the jobs prefix is not a record, said before any request.
    let d = lambda_runtime::Diagnostic::from(
        master_error(json!({"resume": "s3://archive-bucket/logs/a.gz"}), None).await,
    );
    assert_eq!(d.error_type, "Fatal.InvalidInput");
    assert!(d.error_message.contains("not a job record's URL"), "{d:?}");
    let d = worker_error(json!({"recorded_task": {"record": "s3://archive-bucket/x", "index": 0}}))
        .await;
    assert_eq!(d.error_type, "Fatal.InvalidInput");
    assert!(d.error_message.contains(".gzship/jobs/"), "{d:?}");
}
