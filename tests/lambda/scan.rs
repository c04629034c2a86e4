//! The master's scan event against a real sshd and moto (S3 and SQS at one endpoint): the new,
//! complete files of the directory are sent to the arrival queue, one message each, as jobs the
//! master accepts; a file that may still be written is not; a second scan sends nothing, since
//! each file is claimed before it is enqueued.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use gzship_core::wire::JobRequest;
use gzship_lambda::config::MasterEnv;
use gzship_lambda::credentials::{CredentialSource, Credentials};
use gzship_lambda::master::{MasterDeps, MasterResponse, handle_event};
use gzship_lambda::queue::ArrivalQueue;
use gzship_testkit::data::{DataKind, write_file};
use gzship_testkit::s3::S3Server;
use gzship_testkit::set_mtime;
use gzship_testkit::sshd::Sshd;
use serde_json::json;

use super::{NoInvoker, master_deps};

const BUCKET: &str = "scans";

#[tokio::test]
async fn a_scan_enqueues_one_message_per_new_complete_file() {
    let sshd = Sshd::start();
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let sqs = s3.sqs();
    let queue_url = s3.create_queue("arrivals").await;

    let dir = sshd.data_dir().join("exports");
    std::fs::create_dir_all(&dir).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for (i, name) in ["a.csv", "b c.csv", "ü.csv", "fresh.csv"]
        .iter()
        .enumerate()
    {
        write_file(&dir.join(name), DataKind::Logs, 10_000, i as u64).unwrap();
        if *name != "fresh.csv" {
            set_mtime(&dir.join(name), hour_ago);
        }
    }

    let data = format!("{}/", sshd.data_dir().display());
    let endpoint = s3.endpoint_url();
    let key = sshd.client_key().private_key_path.display().to_string();
    let vars = |k: &str| -> Option<String> {
        Some(match k {
            "GZSHIP_ALLOWED_SOURCE_PATHS" => data.clone(),
            "GZSHIP_ALLOWED_DESTINATIONS" => format!("s3://{BUCKET}"),
            "GZSHIP_HOST_KEY" => sshd.host_key_fingerprint().to_owned(),
            "GZSHIP_IDENTITY" => key.clone(),
            "GZSHIP_WORKER_FUNCTION" => "gzship-worker".into(),
            "GZSHIP_ARRIVAL_QUEUE" => queue_url.clone(),
            "GZSHIP_S3_ENDPOINT" => endpoint.clone(),
            _ => return None,
        })
    };
    let env = MasterEnv::from_lookup(&vars).unwrap();
    let credentials = Credentials::new(
        CredentialSource::KeyFile(sshd.client_key().private_key_path.clone()),
        None,
    );
    let store = s3.store();
    let queue = ArrivalQueue::new(sqs.clone(), &queue_url);
    let deps = MasterDeps {
        arrival_queue: Some(&queue),
        ..master_deps(&credentials, &store, &NoInvoker)
    };
    let event = json!({"scan": {
        "source": sshd.url("exports/*.csv"),
        "destination": format!("s3://{BUCKET}/in/{{name}}.gz"),
        "stable_for_secs": 120,
    }});

    let scan = |id: &'static str| handle_event(event.clone(), id, SystemTime::now(), &env, &deps);
    let MasterResponse::Scanned(first) = scan("first").await.unwrap() else {
        panic!("a scan answers with its report")
    };
    let want: BTreeSet<String> = ["a.csv", "b c.csv", "ü.csv"]
        .iter()
        .map(|n| format!("s3://{BUCKET}/in/{n}.gz"))
        .collect();
    assert_eq!(
        first.enqueued.iter().cloned().collect::<BTreeSet<_>>(),
        want
    );
    assert_eq!(first.matched, 4);
    assert!(
        first
            .skipped
            .iter()
            .any(|s| s.name == "fresh.csv" && s.reason.contains("may still be written")),
        "{first:?}"
    );

    // A second scan (an overlapping or duplicate schedule delivery) finds every file claimed.
    let MasterResponse::Scanned(second) = scan("second").await.unwrap() else {
        panic!("a scan answers with its report")
    };
    assert!(second.enqueued.is_empty(), "{second:?}");

    // One message per file, each a job the master accepts.
    let mut bodies = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = got.messages();
        if messages.is_empty() {
            break;
        }
        bodies.extend(messages.iter().map(|m| m.body().unwrap().to_owned()));
    }
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let jobs: BTreeSet<String> = bodies
        .iter()
        .map(|b| {
            let job: JobRequest = serde_json::from_str(b).unwrap();
            assert!(job.source.path.starts_with(&data), "{job:?}");
            job.destination.to_string()
        })
        .collect();
    assert_eq!(jobs, want);
}
