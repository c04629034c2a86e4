//! Queued jobs that fail for good are not retried: the master sends such a message to the
//! dead-letter queue at once (its body unchanged, the error in its attributes) and acknowledges
//! it, while a message whose job may succeed later is handed back for redelivery. Against
//! moto's SQS, a real sshd, and a store on a closed port for the retryable failure.

use std::time::SystemTime;

use gzship_core::store::s3::{S3Config, S3Store};
use gzship_lambda::config::MasterEnv;
use gzship_lambda::credentials::{CredentialSource, Credentials};
use gzship_lambda::master::{
    BatchItemFailure, MasterDeps, MasterResponse, SqsBatchResponse, handle_event,
};
use gzship_lambda::queue::DeadLetterQueue;
use gzship_testkit::data::{DataKind, write_file};
use gzship_testkit::s3::{S3Server, sdk_config};
use gzship_testkit::sshd::Sshd;
use serde_json::{Value, json};

use super::{NoInvoker, master_deps};

/// A store on a closed port: every request fails at once with a retryable error.
fn closed_store() -> S3Store {
    S3Store::new(
        &sdk_config(),
        &S3Config {
            endpoint_url: Some("http://127.0.0.1:1".into()),
            force_path_style: true,
            max_attempts: 1,
            ..S3Config::default()
        },
    )
}

fn record(message_id: &str, body: &str) -> Value {
    json!({"messageId": message_id, "receiptHandle": format!("rh-{message_id}"), "body": body,
           "eventSource": "aws:sqs",
           "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:arrivals"})
}

struct Setup {
    sshd: Sshd,
    s3: S3Server,
    sqs: aws_sdk_sqs::Client,
    dead_letter_url: String,
}

async fn setup() -> Setup {
    let sshd = Sshd::start();
    write_file(&sshd.data_dir().join("a.log"), DataKind::Logs, 10_000, 1).unwrap();
    let s3 = S3Server::start().await;
    let sqs = s3.sqs();
    let dead_letter_url = s3.create_queue("arrivals-dead-letters").await;
    Setup {
        sshd,
        s3,
        sqs,
        dead_letter_url,
    }
}

impl Setup {
    fn env(&self) -> MasterEnv {
        let data = format!("{}/", self.sshd.data_dir().display());
        let fingerprint = self.sshd.host_key_fingerprint().to_owned();
        let key = self
            .sshd
            .client_key()
            .private_key_path
            .display()
            .to_string();
        MasterEnv::from_lookup(&|k: &str| -> Option<String> {
            Some(match k {
                "GZSHIP_ALLOWED_SOURCE_PATHS" => data.clone(),
                "GZSHIP_ALLOWED_DESTINATIONS" => "s3://archive".into(),
                "GZSHIP_HOST_KEY" => fingerprint.clone(),
                "GZSHIP_IDENTITY" => key.clone(),
                "GZSHIP_WORKER_FUNCTION" => "gzship-worker".into(),
                "GZSHIP_SFTP_HANDSHAKE_ATTEMPTS" => "1".into(),
                _ => return None,
            })
        })
        .unwrap()
    }

    fn credentials(&self) -> Credentials {
        Credentials::new(
            CredentialSource::KeyFile(self.sshd.client_key().private_key_path.clone()),
            None,
        )
    }

    /// Runs the master on an SQS batch of `records` with the dead-letter queue at `url` and
    /// a store on a closed port; returns the ids of the messages handed back for redelivery.
    async fn failed_messages(&self, url: &str, records: Vec<Value>) -> Vec<String> {
        let (credentials, store) = (self.credentials(), closed_store());
        let dead_letters = DeadLetterQueue::new(self.sqs.clone(), url);
        let deps = MasterDeps {
            dead_letter_queue: Some(&dead_letters),
            ..master_deps(&credentials, &store, &NoInvoker)
        };
        let event = json!({ "Records": records });
        let response = handle_event(event, "req", SystemTime::now(), &self.env(), &deps)
            .await
            .unwrap();
        let MasterResponse::Batch(SqsBatchResponse {
            batch_item_failures,
        }) = response
        else {
            panic!("expected a batch response, got {response:?}");
        };
        batch_item_failures
            .into_iter()
            .map(|f: BatchItemFailure| f.item_identifier)
            .collect()
    }

    /// The messages in the dead-letter queue: (body, attributes by name).
    async fn dead_letters(&self) -> Vec<(String, Vec<(String, String)>)> {
        let mut letters = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.dead_letter_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            if got.messages().is_empty() {
                return letters;
            }
            for m in got.messages() {
                let mut attributes: Vec<(String, String)> = m
                    .message_attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_owned()))
                    .collect();
                attributes.sort();
                letters.push((m.body().unwrap().to_owned(), attributes));
            }
        }
    }
}

fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> &'a str {
    attributes
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no attribute {name} in {attributes:?}"))
}

#[tokio::test]
async fn a_fatal_sqs_message_goes_to_the_dead_letter_queue_at_once() {
    let setup = setup().await;
    let not_json = "{\"source\": ";
    let disallowed = json!({"source": setup.sshd.url("/etc/passwd"),
                            "destination": "s3://archive/passwd.gz"})
    .to_string();
    let missing = json!({"source": setup.sshd.url("no-such-file.log"),
                         "destination": "s3://archive/missing.gz"})
    .to_string();
    // The file is there and allowed; only the store cannot be reached: worth another delivery.
    let retryable =
        json!({"source": setup.sshd.url("a.log"), "destination": "s3://archive/a.gz"}).to_string();
    let records = vec![
        record("m-not-json", not_json),
        record("m-disallowed", &disallowed),
        record("m-missing", &missing),
        record("m-retryable", &retryable),
    ];
    assert_eq!(
        setup.failed_messages(&setup.dead_letter_url, records).await,
        ["m-retryable"],
        "only the retryable message is handed back for redelivery"
    );

    let mut letters = setup.dead_letters().await;
    letters.sort_by(|a, b| {
        attribute(&a.1, "gzship-message-id").cmp(attribute(&b.1, "gzship-message-id"))
    });
    let ids: Vec<&str> = letters
        .iter()
        .map(|(_, a)| attribute(a, "gzship-message-id"))
        .collect();
    assert_eq!(ids, ["m-disallowed", "m-missing", "m-not-json"]);
    // The body is the original message, so it can be moved back once the cause is fixed.
    let want = [
        ("m-not-json", not_json, "not JSON"),
        ("m-disallowed", disallowed.as_str(), "/etc/passwd"),
        ("m-missing", missing.as_str(), "no-such-file.log"),
    ];
    for (id, want_body, names) in want {
        let (body, attributes) = letters
            .iter()
            .find(|(_, a)| attribute(a, "gzship-message-id") == id)
            .unwrap();
        assert_eq!(body, want_body, "{id}");
        assert!(
            attribute(attributes, "gzship-error-type").starts_with("Fatal."),
            "{id}: {attributes:?}"
        );
        assert!(
            attribute(attributes, "gzship-error").contains(names),
            "{id}: {attributes:?}"
        );
    }
    drop(setup.s3);
}

/// When the dead letter cannot be sent, the message is not lost: it is handed back to SQS,
/// which redelivers it and, after its maxReceiveCount, moves it to the dead-letter queue.
#[tokio::test]
async fn a_fatal_message_is_redelivered_when_the_dead_letter_queue_refuses_it() {
    let setup = setup().await;
    let url = setup
        .dead_letter_url
        .replace("arrivals-dead-letters", "no-such-queue");
    let records = vec![record("m-not-json", "not json")];
    assert_eq!(setup.failed_messages(&url, records).await, ["m-not-json"]);
    assert!(setup.dead_letters().await.is_empty());
}
