//! Every wire type has a checked-in fixture; each parses, validates where it can, and
//! round-trips to the same JSON.

#![allow(clippy::unwrap_used)]

use gzship_core::Error;
use gzship_core::invoke::wire_error::FunctionError;
use gzship_core::wire::{JobReport, JobRequest, Task, TaskReport};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let value: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"));
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    let again = serde_json::to_value(&value).unwrap();
    assert_eq!(again, original, "{name} does not round-trip");
    value
}

/// Adds a field the type does not know to the fixture and checks it is refused.
fn rejects_unknown_field<T: DeserializeOwned>(name: &str) {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object_mut()
        .unwrap()
        .insert("surprise".into(), 1.into());
    let err = serde_json::from_value::<T>(v)
        .err()
        .expect("unknown field accepted");
    assert!(err.to_string().contains("surprise"), "{err}");
}

#[test]
fn job_request_fixture() {
    let j: JobRequest = round_trip("job_request.json");
    assert_eq!(j.source.port, 2222);
    rejects_unknown_field::<JobRequest>("job_request.json");
}

#[test]
fn task_fixture() {
    let t: Task = round_trip("task.json");
    t.validate().unwrap();
    rejects_unknown_field::<Task>("task.json");
}

#[test]
fn task_report_fixture() {
    let r: TaskReport = round_trip("task_report.json");
    assert_eq!(r.parts.len(), 3);
    rejects_unknown_field::<TaskReport>("task_report.json");
}

#[test]
fn job_report_fixture() {
    let r: JobReport = round_trip("job_report.json");
    assert_eq!(r.tasks, 3);
    rejects_unknown_field::<JobReport>("job_report.json");
}

/// A worker's error as the Lambda runtime sends it. Unknown fields are accepted: the body is
/// Lambda's, and its own failures may carry more.
#[test]
fn function_error_fixture() {
    let e: FunctionError = round_trip("function_error.json");
    match e.into_error() {
        Error::Remote {
            error_type,
            retryable,
            ..
        } => {
            assert_eq!(error_type, "SftpRead");
            assert!(retryable);
        }
        other => panic!("{other:?}"),
    }
}
