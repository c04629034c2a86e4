//! The events the master accepts, told apart by their shape and parsed strictly, before any
//! connection is made.
//!
//! | shape | recognised by | gives |
//! |---|---|---|
//! | job | top-level `source`/`destination` | that job |
//! | template event | top-level `template` (and optional `time`) | the rendered template |
//! | file-arrival notice | top-level `path` (and optional `time`) | `GZSHIP_JOB_TEMPLATE` rendered with `{path}` |
//! | EventBridge scheduled event | `detail-type: "Scheduled Event"` | its `detail` if not empty, else `GZSHIP_JOB_TEMPLATE`, at the event's `time` |
//! | EventBridge custom event | any other `detail-type` | its `detail`: a job, template event or notice |
//! | SNS notification | `Records[].EventSource: "aws:sns"` | its `Message`, parsed as above |
//! | SQS batch | `Records[].eventSource: "aws:sqs"` | one job per record from its `body` (which may also be an SNS envelope or an EventBridge event) |
//! | scan | `{"scan": {"source": "sftp://u@h/dir/*.csv", "destination": "s3://b/p/{name}.gz", "stable_for_secs": 120}}` (a schedule's input) | each new, complete file's job, sent to the arrival queue |
//! | resume | `{"resume": "s3://bucket/.gzship/jobs/ID"}` | the recorded job's remaining tasks, on the state machine |
//! | completion step | `{"complete": {"record": URL}}` (the state machine's) | complete the job from its record |
//! | failure step | `{"failed": {"record": URL, "error": {"Error", "Cause"}}}` (the state machine's) | abort the job, or keep it for a resume |
//!
//! The worker takes a [`Task`], or a [`RecordedTask`] (`{"recorded_task": {"record": URL,
//! "index": N}}`, the state machine's items) whose task it reads from the job record.
//!
//! Our own shapes (job, template event, notice) refuse unknown fields; AWS's envelopes are read
//! for the fields named above only, since AWS adds fields over time. Anything else is refused
//! with the list of accepted shapes. Every job is checked against the access policy here.

use std::time::SystemTime;

use gzship_core::config::AccessPolicy;
use gzship_core::scan::{Destinations, Glob};
use gzship_core::wire::{JobRequest, Task};
use gzship_core::{Error, ObjectUrl, Result, SourceUrl};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::template::{JobTemplate, TemplateVars, parse_timestamp};

/// What the master was asked to do.
#[derive(Debug)]
pub enum Trigger {
    /// One job.
    Job {
        /// Which kind of event asked for it, for logs.
        kind: EventKind,
        /// The job.
        job: JobRequest,
    },
    /// An SQS batch: one job (or the reason there is none) per message. A message's failure
    /// does not fail the others: they are reported as partial batch failures.
    Sqs(Vec<SqsItem>),
    /// Continue the job recorded at this URL: run its tasks without a confirmed report on the
    /// state machine.
    Resume(ObjectUrl),
    /// The state machine's completion step: complete the job recorded at this URL.
    Complete(ObjectUrl),
    /// The state machine's failure step.
    Failed(FailedStep),
    /// Scan a remote directory and send each new, complete file's job to the arrival queue.
    Scan(ScanRequest),
}

/// A scan of a remote directory: `{"scan": {...}}`, e.g. a schedule's constant input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    /// `sftp://[user@]host[:port]/dir/GLOB`: the glob in the last segment.
    pub source: SourceUrl,
    /// `s3://bucket/prefix/` (each file to `prefix/<name>.gz`) or a URL with `{name}`.
    pub destination: String,
    /// Overrides `GZSHIP_STABLE_FOR`: a file modified less than this many seconds ago waits.
    #[serde(default)]
    pub stable_for_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanEvent {
    scan: ScanRequest,
}

impl ScanRequest {
    /// Checks the glob and the destination, and that the directory's files and their objects
    /// may be touched at all (each file is checked again when it is listed).
    pub fn validate(&self, policy: &AccessPolicy) -> Result<Destinations> {
        let glob = Glob::parse(&self.source.path)?;
        let destinations = Destinations::parse(&self.destination)?;
        let sample = "file";
        policy.check_source(&SourceUrl {
            path: glob.path_of(sample),
            ..self.source.clone()
        })?;
        policy.check_destination(&destinations.for_name(sample)?)?;
        Ok(destinations)
    }
}

/// The state machine's failure step: the job and the error its Catch caught.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedStep {
    /// The job record's URL.
    pub record: ObjectUrl,
    /// What failed, as Step Functions' Catch gives it.
    pub error: StepError,
}

/// An error caught by a Step Functions `Catch`: `{"Error": ..., "Cause": ...}` (AWS's shape, so
/// other fields are accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// The error name: a function's `errorType`, or Step Functions' own (`States.*`).
    #[serde(rename = "Error")]
    pub error: String,
    /// Its cause: for a Lambda task, the function's error reply.
    #[serde(rename = "Cause", default)]
    pub cause: Option<String>,
}

/// One task of a recorded job, as the state machine gives it to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedTask {
    /// The job record's URL (`s3://bucket/.gzship/jobs/ID`).
    pub record: ObjectUrl,
    /// The task's index in the record's plan.
    pub index: u32,
}

/// What a worker was asked to run.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// A whole task (the master's direct fan-out).
    Task(Box<Task>),
    /// A task to read from a job record (the state machine's items).
    Recorded(RecordedTask),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedTaskEvent {
    recorded_task: RecordedTask,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeEvent {
    resume: ObjectUrl,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteEvent {
    complete: RecordArg,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordArg {
    record: ObjectUrl,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailedEvent {
    failed: FailedStep,
}

/// Parses a worker's payload: a task, or `{"recorded_task": {"record": URL, "index": N}}`.
pub fn parse_worker_event(payload: Value) -> Result<WorkerEvent> {
    if payload.get("recorded_task").is_some() {
        let e: RecordedTaskEvent = serde_json::from_value(payload)
            .map_err(|e| Error::invalid("task", format!("recorded task: {e}")))?;
        return Ok(WorkerEvent::Recorded(e.recorded_task));
    }
    let task: Task = serde_json::from_value(payload)
        .map_err(|e| Error::invalid("task", format!("the payload is not a task: {e}")))?;
    Ok(WorkerEvent::Task(Box::new(task)))
}

/// The job-record events (`resume`, `complete`, `failed`), if `obj` is one.
fn parse_record_event(obj: &Map<String, Value>) -> Option<Result<Trigger>> {
    let value = || Value::Object(obj.clone());
    let parsed = if obj.contains_key("resume") {
        serde_json::from_value::<ResumeEvent>(value())
            .map(|e| Trigger::Resume(e.resume))
            .map_err(|e| bad(format!("resume event {{\"resume\": \"s3://...\"}}: {e}")))
    } else if obj.contains_key("complete") {
        serde_json::from_value::<CompleteEvent>(value())
            .map(|e| Trigger::Complete(e.complete.record))
            .map_err(|e| {
                bad(format!(
                    "completion step {{\"complete\": {{\"record\": ...}}}}: {e}"
                ))
            })
    } else if obj.contains_key("scan") {
        serde_json::from_value::<ScanEvent>(value())
            .map(|e| Trigger::Scan(e.scan))
            .map_err(|e| {
                bad(format!(
                    "scan event {{\"scan\": {{\"source\": \"sftp://.../*.csv\", \
                     \"destination\": \"s3://bucket/prefix/\"}}}}: {e}"
                ))
            })
    } else if obj.contains_key("failed") {
        serde_json::from_value::<FailedEvent>(value())
            .map(|e| Trigger::Failed(e.failed))
            .map_err(|e| {
                bad(format!(
                    "failure step {{\"failed\": {{\"record\": ..., \"error\": ...}}}}: {e}"
                ))
            })
    } else {
        return None;
    };
    Some(parsed)
}

/// One SQS message.
#[derive(Debug)]
pub struct SqsItem {
    /// The message's `messageId`, which a partial batch failure names.
    pub message_id: String,
    /// Its `body` as received (the whole record as JSON when it has no body string): what a
    /// dead letter carries.
    pub body: String,
    /// The kind of event in its body and its job, or why it has none.
    pub job: Result<(EventKind, JobRequest)>,
}

/// The kind of event a job came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A job JSON.
    Manual,
    /// A template event (`{"template": ...}`).
    Template,
    /// An EventBridge scheduled event.
    Schedule,
    /// A file-arrival notice (`{"path": ...}`).
    Notice,
    /// An EventBridge custom event.
    EventBridge,
}

impl EventKind {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Manual => "manual",
            EventKind::Template => "template",
            EventKind::Schedule => "schedule",
            EventKind::Notice => "file-arrival notice",
            EventKind::EventBridge => "eventbridge",
        }
    }
}

/// What parsing needs besides the event.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext<'a> {
    /// `GZSHIP_JOB_TEMPLATE`.
    pub template: Option<&'a JobTemplate>,
    /// Checked on every job.
    pub policy: &'a AccessPolicy,
    /// The time used when an event carries none.
    pub now: SystemTime,
}

const SHAPES: &str = "a job {\"source\": \"sftp://...\", \"destination\": \"s3://...\"}, a template \
     event {\"template\": {...}}, a file-arrival notice {\"path\": \"/...\"}, an EventBridge event, \
     an SNS notification, an SQS batch, a scan {\"scan\": {...}} or a resume \
     {\"resume\": \"s3://bucket/.gzship/jobs/ID\"}";

/// Nesting allowed inside envelopes (SQS body -> SNS envelope -> EventBridge event -> detail).
const MAX_DEPTH: u8 = 4;

fn bad(reason: impl Into<String>) -> Error {
    Error::invalid("event", reason)
}

/// A template event: a template and the time to render it at.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateEvent {
    template: JobTemplate,
    #[serde(default)]
    time: Option<String>,
}

/// A file-arrival notice: the path of a file that has arrived on the server named by
/// `GZSHIP_JOB_TEMPLATE`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Notice {
    path: String,
    #[serde(default)]
    time: Option<String>,
}

/// Recognises and parses a master event.
pub fn parse_event(event: &Value, ctx: &ParseContext<'_>) -> Result<Trigger> {
    let obj = event.as_object().ok_or_else(|| {
        bad(format!(
            "expected a JSON object ({SHAPES}), got {}",
            kind_of(event)
        ))
    })?;
    if let Some(records) = obj.get("Records") {
        return parse_records(records, ctx);
    }
    if let Some(trigger) = parse_record_event(obj) {
        return trigger;
    }
    let (kind, job) = parse_message(obj, ctx, None, 0)?;
    Ok(Trigger::Job { kind, job })
}

fn parse_records(records: &Value, ctx: &ParseContext<'_>) -> Result<Trigger> {
    let records = records
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad("Records is not a non-empty array"))?;
    let source_of = |r: &Value| {
        r.get("eventSource")
            .or_else(|| r.get("EventSource"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let first = source_of(&records[0]);
    if let Some(other) = records.iter().map(source_of).find(|s| *s != first) {
        return Err(bad(format!(
            "Records mix event sources {first:?} and {other:?}"
        )));
    }
    match first.as_str() {
        "aws:sqs" => Ok(Trigger::Sqs(
            records
                .iter()
                .enumerate()
                .map(|(i, r)| parse_sqs_record(i, r, ctx))
                .collect(),
        )),
        "aws:sns" => {
            if records.len() != 1 {
                return Err(bad(format!(
                    "an SNS event has {} records; Lambda delivers one",
                    records.len()
                )));
            }
            let message = records[0]
                .pointer("/Sns/Message")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("the SNS record has no Sns.Message string"))?;
            let (kind, job) = parse_text(message, "the SNS message", ctx, None, 1)?;
            Ok(Trigger::Job { kind, job })
        }
        "" => Err(bad(
            "Records carry no eventSource: expected SQS (aws:sqs) or SNS (aws:sns) records",
        )),
        other => Err(bad(format!(
            "records from {other} are not supported: expected SQS (aws:sqs) or SNS (aws:sns) \
             records whose body names a file on the SFTP server"
        ))),
    }
}

fn parse_sqs_record(i: usize, record: &Value, ctx: &ParseContext<'_>) -> SqsItem {
    let message_id = record
        .get("messageId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let job = match (&message_id, record.get("body").and_then(Value::as_str)) {
        (None, _) => Err(bad(format!("SQS record {i} has no messageId"))),
        (Some(id), None) => Err(bad(format!("SQS message {id} has no body string"))),
        (Some(id), Some(body)) => parse_text(body, &format!("SQS message {id}"), ctx, None, 1),
    };
    let body = match record.get("body").and_then(Value::as_str) {
        Some(body) => body.to_owned(),
        None => record.to_string(),
    };
    SqsItem {
        message_id: message_id.unwrap_or_default(),
        body,
        job,
    }
}

/// Parses a message given as text (an SQS body, an SNS Message).
fn parse_text(
    text: &str,
    what: &str,
    ctx: &ParseContext<'_>,
    time: Option<SystemTime>,
    depth: u8,
) -> Result<(EventKind, JobRequest)> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("{what} is not JSON ({e})")))?;
    let obj = value.as_object().ok_or_else(|| {
        bad(format!(
            "{what} is {}, not a JSON object ({SHAPES})",
            kind_of(&value)
        ))
    })?;
    parse_message(obj, ctx, time, depth).map_err(|e| match e {
        Error::Invalid { what: w, reason } => Error::Invalid {
            what: w,
            reason: format!("{what}: {reason}"),
        },
        other => other,
    })
}

/// Parses one message: a job, a template event, a notice, or an envelope around one.
/// `time` is the enclosing envelope's time, if any.
fn parse_message(
    obj: &Map<String, Value>,
    ctx: &ParseContext<'_>,
    time: Option<SystemTime>,
    depth: u8,
) -> Result<(EventKind, JobRequest)> {
    if depth > MAX_DEPTH {
        return Err(bad("envelopes are nested too deeply"));
    }
    let value = Value::Object(obj.clone());
    let (kind, job) = if obj.contains_key("detail-type") {
        parse_eventbridge(obj, ctx, depth)?
    } else if obj.get("Type").and_then(Value::as_str) == Some("Notification")
        && obj.contains_key("Message")
    {
        // An SNS envelope inside an SQS body (SNS -> SQS without raw message delivery).
        let message = obj
            .get("Message")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("the SNS envelope's Message is not a string"))?;
        parse_text(message, "the SNS message", ctx, time, depth + 1)?
    } else if obj.contains_key("Records") {
        return Err(bad("Records may only appear at the top level of an event"));
    } else if obj.contains_key("template") {
        let event: TemplateEvent =
            serde_json::from_value(value).map_err(|e| bad(format!("template event: {e}")))?;
        event.template.validate()?;
        let time = resolve_time(event.time.as_deref(), time, ctx)?;
        (
            EventKind::Template,
            event.template.render(&TemplateVars { time, path: None })?,
        )
    } else if obj.contains_key("path") {
        let notice: Notice =
            serde_json::from_value(value).map_err(|e| bad(format!("file-arrival notice: {e}")))?;
        if !notice.path.starts_with('/') || notice.path.ends_with('/') {
            return Err(bad(format!(
                "file-arrival notice: path {:?} is not an absolute file path",
                notice.path
            )));
        }
        let template = ctx.template.filter(|t| t.uses_path()).ok_or_else(|| {
            bad(
                "a file-arrival notice needs GZSHIP_JOB_TEMPLATE with {path} in its source \
                 (e.g. {\"source\": \"sftp://user@host{path}\", \"destination\": \
                 \"s3://bucket/incoming/{name}.gz\"})",
            )
        })?;
        let time = resolve_time(notice.time.as_deref(), time, ctx)?;
        let vars = TemplateVars {
            time,
            path: Some(notice.path),
        };
        (EventKind::Notice, template.render(&vars)?)
    } else if obj.contains_key("source") || obj.contains_key("destination") {
        let job: JobRequest =
            serde_json::from_value(value).map_err(|e| bad(format!("job: {e}")))?;
        (EventKind::Manual, job)
    } else {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        return Err(bad(format!(
            "unrecognised event with fields {keys:?}: expected {SHAPES}"
        )));
    };
    ctx.policy.check_source(&job.source)?;
    ctx.policy.check_destination(&job.destination)?;
    Ok((kind, job))
}

fn parse_eventbridge(
    obj: &Map<String, Value>,
    ctx: &ParseContext<'_>,
    depth: u8,
) -> Result<(EventKind, JobRequest)> {
    let detail_type = obj
        .get("detail-type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the EventBridge event's detail-type is not a string"))?;
    let time = obj
        .get("time")
        .and_then(Value::as_str)
        .map(parse_timestamp)
        .transpose()?;
    let detail = obj.get("detail").ok_or_else(|| {
        bad(format!(
            "the EventBridge event {detail_type:?} has no detail"
        ))
    })?;
    let detail = detail.as_object().ok_or_else(|| {
        bad(format!(
            "the detail of EventBridge event {detail_type:?} is {}, not an object",
            kind_of(detail)
        ))
    })?;
    let scheduled = detail_type == "Scheduled Event";
    if scheduled && detail.is_empty() {
        let template = ctx.template.ok_or_else(|| {
            bad(
                "the scheduled event carries no job: give the rule's target an input \
                 ({\"template\": {...}} or a job) or set GZSHIP_JOB_TEMPLATE",
            )
        })?;
        if template.uses_path() {
            return Err(bad(
                "the scheduled event carries no job and GZSHIP_JOB_TEMPLATE needs a {path}, \
                 which only file-arrival notices give: give the rule's target an input",
            ));
        }
        let time = time.unwrap_or(ctx.now);
        let job = template.render(&TemplateVars { time, path: None })?;
        ctx.policy.check_source(&job.source)?;
        ctx.policy.check_destination(&job.destination)?;
        return Ok((EventKind::Schedule, job));
    }
    let (_, job) = parse_message(detail, ctx, time, depth + 1)
        .map_err(|e| prefix(e, &format!("detail of EventBridge event {detail_type:?}")))?;
    Ok((
        if scheduled {
            EventKind::Schedule
        } else {
            EventKind::EventBridge
        },
        job,
    ))
}

fn prefix(e: Error, context: &str) -> Error {
    match e {
        Error::Invalid { what, reason } => Error::Invalid {
            what,
            reason: format!("{context}: {reason}"),
        },
        other => other,
    }
}

/// The event's own time, else the envelope's, else now.
fn resolve_time(
    own: Option<&str>,
    envelope: Option<SystemTime>,
    ctx: &ParseContext<'_>,
) -> Result<SystemTime> {
    match own {
        Some(t) => parse_timestamp(t),
        None => Ok(envelope.unwrap_or(ctx.now)),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
