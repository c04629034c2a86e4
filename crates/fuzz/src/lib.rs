//! gzship's fuzz targets: one function per parser of untrusted bytes. Each takes any bytes,
//! must not panic, and checks what the parser promises (a URL prints back to itself, a job
//! that passes the access policy passes it again, the server answers with well-formed replies).
//!
//! | target | parser | hostile party |
//! |---|---|---|
//! | [`lambda_event`] | the master's and worker's events (`gzship_lambda::event`) | whoever may invoke the functions or send to their queue |
//! | [`job_template`] | job templates and event timestamps (`gzship_lambda::template`) | the same |
//! | [`wire_json`] | job requests, tasks, task and job reports, job records, task errors (`gzship_core::wire`, `gzship_core::job`) | whoever writes the jobs prefix of the bucket |
//! | [`urls`] | `sftp://` and `s3://` URLs (`gzship_core::url`) | any of the above |
//! | [`known_hosts`] | known_hosts files (`gzship_core::source::sftp::KnownHosts`) | a shared or generated known_hosts |
//! | [`sftpd_packets`] | gzship-sftpd's SFTP packet handling, a whole session | any client of `gzship demo`'s server |
//! | [`s3lite_http`] | gzship-s3lite's requests: HTTP, query strings, headers, XML bodies | any client of the benchmark server |
//! | [`gunzip`] | the gzip member parser of `gzship verify` (`gzship_core::gunzip`) | whoever writes the object |
//!
//! Two runners call them:
//! - `fuzz/` (its own workspace): `cargo fuzz run <target>` for coverage-guided runs, whose
//!   minimised corpora are committed under `fuzz/corpus/<target>/`;
//! - this crate's tests (`tests/targets.rs`), in the normal test build: every committed corpus
//!   file, then a bounded number of seeded mutations of them ([`mutate`]). That is what CI runs.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use gzship_core::config::AccessPolicy;
use gzship_core::gunzip::Gunzip;
use gzship_core::job::{JobRecord, TaskError};
use gzship_core::source::sftp::{KnownHosts, Verdict};
use gzship_core::wire::{JobReport, JobRequest, Task, TaskReport};
use gzship_core::{ObjectUrl, SourceUrl};
use gzship_lambda::event::{ParseContext, Trigger, parse_event, parse_worker_event};
use gzship_lambda::template::{JobTemplate, TemplateVars, parse_timestamp};
use russh_sftp::protocol::Packet;

pub mod mutate;

/// A fuzz target: its name (the directory of its corpus) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by the name of its corpus directory and its `fuzz/fuzz_targets/` file.
pub const TARGETS: &[Target] = &[
    ("lambda_event", lambda_event),
    ("job_template", job_template),
    ("wire_json", wire_json),
    ("urls", urls),
    ("known_hosts", known_hosts),
    ("sftpd_packets", sftpd_packets),
    ("s3lite_http", s3lite_http),
    ("gunzip", gunzip),
];

/// The committed corpus of `target`: `fuzz/corpus/<target>/`.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn template(source: &str, destination: &str) -> JobTemplate {
    JobTemplate {
        source: source.to_owned(),
        destination: destination.to_owned(),
        level: Default::default(),
        tuning: Default::default(),
    }
}

/// The master's events, as JSON: with a `{path}` template and an open policy, and with a
/// scheduled template and a restrictive policy. Every job that comes out obeys the policy and
/// survives a JSON round trip; the worker's parser sees the same value.
pub fn lambda_event(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let on_arrival = template(
        "sftp://ingest@sftp.example.com{path}",
        "s3://bucket/in/{name}.gz",
    );
    let scheduled = template(
        "sftp://db1.internal:2222/dumps/db-{date}.sql",
        "s3://archive/db1/{date}/{time}.gz",
    );
    let open = AccessPolicy::default();
    let closed = AccessPolicy {
        source_paths: Some(vec!["/var/log/".into(), "/dumps".into()]),
        destinations: Some(vec!["s3://bucket/in".into(), "s3://archive".into()]),
    };
    for (t, policy) in [(&on_arrival, &open), (&scheduled, &closed)] {
        let ctx = ParseContext {
            template: Some(t),
            policy,
            now: UNIX_EPOCH + Duration::from_secs(1_764_488_400),
        };
        let jobs = match parse_event(&event, &ctx) {
            Ok(Trigger::Job { job, .. }) => vec![job],
            Ok(Trigger::Sqs(items)) => items
                .into_iter()
                .filter_map(|i| i.job.ok())
                .map(|j| j.1)
                .collect(),
            _ => Vec::new(),
        };
        for job in jobs {
            policy
                .check_source(&job.source)
                .expect("a parsed job obeys the policy");
            policy
                .check_destination(&job.destination)
                .expect("a parsed job obeys the policy");
            round_trip(&job);
        }
    }
    let _ = parse_worker_event(event);
}

/// A job template (JSON) after a first line that is an event time and, for notices, a path. A
/// template that validates renders to valid URLs.
pub fn job_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, json) = text.split_once('\n').unwrap_or((text, ""));
    let time = parse_timestamp(first).unwrap_or(UNIX_EPOCH);
    let Ok(t) = serde_json::from_str::<JobTemplate>(json) else {
        return;
    };
    let valid = t.validate().is_ok();
    let path = t.uses_path().then(|| {
        if first.starts_with('/') && !first.ends_with('/') {
            first.to_owned()
        } else {
            "/incoming/a.log".to_owned()
        }
    });
    let rendered = t.render(&TemplateVars { time, path });
    if let Ok(job) = rendered {
        round_trip(&job);
    } else if valid && !t.uses_path() {
        // Only the time and the path vary between validation and rendering; without a path,
        // a valid template renders at any time.
        panic!("a valid template failed to render at {first:?}: {t:?}");
    }
}

/// The JSON documents gzship reads back: job requests, tasks, reports, job records, task
/// errors. Whatever parses is used as its reader uses it, and prints back to itself.
pub fn wire_json(data: &[u8]) {
    if let Ok(job) = serde_json::from_slice::<JobRequest>(data) {
        let _ = job.tuning.validate();
        round_trip(&job);
    }
    if let Ok(task) = serde_json::from_slice::<Task>(data) {
        let _ = task.validate();
        round_trip(&task);
    }
    if let Ok(report) = serde_json::from_slice::<TaskReport>(data) {
        serde_json::to_vec(&report).expect("a task report encodes");
    }
    if let Ok(report) = serde_json::from_slice::<JobReport>(data) {
        serde_json::to_vec(&report).expect("a job report encodes");
    }
    if let Ok(error) = serde_json::from_slice::<TaskError>(data) {
        round_trip(&error);
    }
    if let Ok(record) = serde_json::from_slice::<JobRecord>(data) {
        round_trip(&record);
        let _ = record.plan.reserved_parts();
        let all = record.plan.tasks.iter().map(|t| t.index).collect();
        let _ = record.bytes_of(&all);
        let _ = record.age();
        for i in [0, 1, record.plan.tasks.len() as u32, u32::MAX] {
            if let Ok(task) = record.task(i) {
                let _ = task.validate();
            }
        }
    }
}

/// `sftp://` and `s3://` URLs: what parses prints to a URL that parses back to the same value.
pub fn urls(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = text.parse::<SourceUrl>() {
        let printed = u.to_string();
        let back: SourceUrl = printed
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(back, u, "{text:?} printed as {printed:?}");
        let _ = u.authority();
    }
    if let Ok(u) = text.parse::<ObjectUrl>() {
        let printed = u.to_string();
        let back: ObjectUrl = printed
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(back, u);
        let _ = u.file_name();
    }
}

/// The host key the known_hosts target checks: its corpus lists it for some hosts.
const FUZZ_HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKsgO4VizbV2s2L7/gTGtgoegwPj2oRMw6q6H6DrLRzB";

/// A known_hosts file after a first line naming the host dialled (`host` or `host:port`).
pub fn known_hosts(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (first, file) = text.split_once('\n').unwrap_or((&text, ""));
    let (host, port) = match first.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(22)),
        None => (first, 22),
    };
    let hosts = KnownHosts::parse(file);
    let key = russh::keys::PublicKey::from_openssh(FUZZ_HOST_KEY).expect("a valid key");
    match hosts.check(host, port, &key) {
        Verdict::Trusted | Verdict::Unknown => {}
        Verdict::Revoked { line } => assert!(line >= 1 && line <= file.lines().count()),
        Verdict::Mismatch { lines } => {
            assert!(!lines.is_empty() && lines.iter().all(|&l| l >= 1 && l <= file.lines().count()))
        }
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's current-thread runtime (with a blocking pool, for file work).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
        });
        rt.block_on(f)
    })
}

/// Fills `dir` with what [`sftpd_packets`] serves: a file, an empty file, a directory, and
/// symlinks pointing inside and outside.
pub fn sftpd_fixture(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("a.log"), b"0123456789abcdef\n".repeat(64))?;
    std::fs::write(dir.join("empty"), b"")?;
    std::fs::create_dir_all(dir.join("logs/old"))?;
    std::fs::write(dir.join("logs/app.log"), b"line\n")?;
    let _ = std::os::unix::fs::symlink("a.log", dir.join("inside"));
    let _ = std::os::unix::fs::symlink("/etc/hostname", dir.join("outside"));
    Ok(())
}

/// gzship-sftpd's packet handling over one session whose client sent `data`, served from a
/// fixture directory made once per process. See [`sftpd_packets_in`].
pub fn sftpd_packets(data: &[u8]) {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        sftpd_fixture(dir.path()).expect("the sftpd fixture");
        dir
    });
    sftpd_packets_in(root.path(), data);
}

/// gzship-sftpd's packet handling: a session over `data` in the directory `dir` (made by
/// [`sftpd_fixture`]). Every reply is one well-formed SFTP packet.
pub fn sftpd_packets_in(dir: &Path, data: &[u8]) {
    let replies = block_on(gzship_sftpd::fuzzing::sftp_session(dir, data)).expect("the fixture");
    for reply in replies {
        check_reply(reply);
    }
}

fn check_reply(reply: Bytes) {
    assert!(reply.len() >= 5, "a reply of {} bytes", reply.len());
    let len = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize;
    assert_eq!(len + 4, reply.len(), "a reply's length field");
    let mut body = reply.slice(4..);
    if let Err(e) = Packet::try_from(&mut body) {
        panic!("the server sent a reply it cannot decode ({e}): {reply:?}");
    }
}

/// gzship-s3lite's request handling over one connection whose client sent `data` (HTTP/1.1,
/// pipelined requests allowed).
pub fn s3lite_http(data: &[u8]) {
    let written = block_on(gzship_s3lite::fuzzing::http_session(data)).expect("a server");
    if !written.is_empty() {
        assert!(
            written.starts_with(b"HTTP/1.1 ") || written.starts_with(b"HTTP/1.0 "),
            "a reply that is not HTTP: {:?}",
            String::from_utf8_lossy(&written)
        );
    }
}

/// The gzip member parser of `gzship verify`: the object (after the first byte) fed in chunks
/// of the first byte's size. Chunking does not change the result.
pub fn gunzip(data: &[u8]) {
    let Some((&chunk, object)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let decode = |chunk: usize| -> Option<Vec<u8>> {
        let mut g = Gunzip::new(Vec::new());
        for c in object.chunks(chunk) {
            g.write(c).ok()?;
        }
        assert_eq!(g.compressed(), object.len() as u64);
        g.finish().ok()
    };
    assert_eq!(
        decode(chunk),
        decode(object.len().max(1)),
        "the result depends on chunking"
    );
}

/// Serialises `v` and parses it back: it must be the same value.
fn round_trip<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(v).expect("encodes");
    let back: T = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "{v:?} encodes as {} which does not parse back: {e}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(&back, v);
}
