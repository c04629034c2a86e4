//! End to end, as in AWS: both functions run under the Lambda runtime emulator
//! (`cargo lambda watch`) on 127.0.0.1, the test invokes the master through aws-sdk-lambda, the
//! master invokes the workers the same way, the workers read from a real OpenSSH sshd with a
//! credential from Secrets Manager and upload to S3 (both served by moto). Checked as a user
//! would: the object decompresses with gzip, pigz and Python to the source's SHA-256, and a
//! failed worker leaves no multipart upload behind.
//!
//! Each emulator ([`Watch`]) gets the environment of the functions it serves, as each function
//! has its own in AWS.

use gzship_core::ObjectUrl;
use gzship_core::store::ObjectStore;
use gzship_core::types::MIB;
use gzship_core::wire::JobReport;
use gzship_testkit::data::{DataKind, sha256_file, write_file};
use gzship_testkit::decode::assert_decodes;
use gzship_testkit::net::free_port;
use gzship_testkit::s3::{ACCESS_KEY_ID, REGION, S3Server, SECRET_ACCESS_KEY};
use gzship_testkit::sshd::Sshd;
use gzship_testkit::watch::Watch;
use serde_json::{Value, json};

pub(super) const BUCKET: &str = "e2e-lambda";
pub(super) const SECRET: &str = "gzship/e2e-ssh";

/// The servers both functions reach: sshd, and moto for S3 and Secrets Manager. Shared with
/// the Step Functions tests (`stepfunctions.rs`).
pub(super) struct Env {
    pub(super) sshd: Sshd,
    pub(super) s3: S3Server,
}

pub(super) async fn servers() -> Env {
    let sshd = Sshd::start();
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    // The workers' credential, in (moto's) Secrets Manager as in AWS.
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&s3.sdk_config())
            .endpoint_url(s3.endpoint_url())
            .build(),
    );
    let secret = json!({"private_key": sshd.client_key().private_key_pem}).to_string();
    secrets
        .create_secret()
        .name(SECRET)
        .secret_string(secret)
        .send()
        .await
        .unwrap();
    Env { sshd, s3 }
}

impl Env {
    /// The environment of both functions; `lambda_port` is where the master invokes workers.
    pub(super) fn functions_env(
        &self,
        lambda_port: u16,
        allowed_sources: &str,
    ) -> Vec<(String, String)> {
        let moto = self.s3.endpoint_url();
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.clone()),
            (
                "AWS_ENDPOINT_URL_LAMBDA",
                format!("http://127.0.0.1:{lambda_port}"),
            ),
            ("GZSHIP_S3_ENDPOINT", moto),
            ("GZSHIP_SSH_SECRET", SECRET.to_owned()),
            (
                "GZSHIP_HOST_KEY",
                self.sshd.host_key_fingerprint().to_owned(),
            ),
            ("GZSHIP_ALLOWED_SOURCE_PATHS", allowed_sources.to_owned()),
            ("GZSHIP_ALLOWED_DESTINATIONS", format!("s3://{BUCKET}/out/")),
            ("GZSHIP_WORKER_FUNCTION", "worker".to_owned()),
            ("GZSHIP_WORKER_TIMEOUT", "300s".to_owned()),
            ("GZSHIP_CONCURRENCY", "3".to_owned()),
            ("GZSHIP_START_INTERVAL", "50ms".to_owned()),
            ("GZSHIP_RETRY_DELAY", "100ms".to_owned()),
            ("GZSHIP_COMPRESS_PARALLELISM", "2".to_owned()),
            ("GZSHIP_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub(super) fn data_dir(&self) -> String {
        format!("{}/", self.sshd.data_dir().display())
    }

    pub(super) fn job(&self, file: &str, key: &str) -> Value {
        json!({
            "source": self.sshd.url(file),
            "destination": format!("s3://{BUCKET}/{key}"),
            "tuning": {"tasks": 3, "block_size": MIB, "part_size": 5 * MIB},
        })
    }

    pub(super) async fn assert_no_open_uploads(&self) {
        let open = self.s3.store().list_uploads(BUCKET, "").await.unwrap();
        assert!(open.is_empty(), "multipart uploads left open: {open:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn master_and_workers_ship_a_file_through_the_emulator() {
    let env = servers().await;
    let path = env.sshd.data_dir().join("access.log");
    write_file(&path, DataKind::Logs, 24 * MIB + 12_345, 11).unwrap();
    let sha = sha256_file(&path).unwrap();

    let port = free_port();
    let watch = Watch::start(port, &env.functions_env(port, &env.data_dir()));
    let answer = watch
        .invoke("master", &env.job("access.log", "out/access.log.gz"))
        .await;
    let report =
        answer.unwrap_or_else(|e| panic!("the master failed: {e}\nemulator log:\n{}", watch.log()));
    let report: JobReport = serde_json::from_value(report).unwrap();
    assert_eq!(report.tasks, 3);
    assert_eq!(report.source_bytes, 24 * MIB + 12_345);
    assert_eq!(
        report.destination,
        format!("s3://{BUCKET}/out/access.log.gz")
    );
    // Three workers ran, each in its own function instance.
    let spawned = watch.log().matches("spawning function instance").count();
    assert!(
        spawned >= 2,
        "expected master and workers:\n{}",
        watch.log()
    );

    let dest: ObjectUrl = format!("s3://{BUCKET}/out/access.log.gz").parse().unwrap();
    let mut stream = env.s3.store().get_object(&dest).await.unwrap();
    let mut gz = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        gz.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(gz.len() as u64, report.object_bytes);
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("access.log.gz");
    std::fs::write(&object, gz).unwrap();
    assert_decodes(&object, &sha);
    env.assert_no_open_uploads().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_worker_makes_the_master_abort() {
    let env = servers().await;
    write_file(
        &env.sshd.data_dir().join("big.log"),
        DataKind::Logs,
        12 * MIB,
        3,
    )
    .unwrap();
    // The workers run in their own emulator whose allow-list excludes the file, as a worker
    // function configured more narrowly than its master would: every task fails there.
    let worker_port = free_port();
    let workers = Watch::start(worker_port, &env.functions_env(worker_port, "/nowhere/"));
    let master_port = free_port();
    let master = Watch::start(
        master_port,
        &env.functions_env(worker_port, &env.data_dir()),
    );
    let answer = master
        .invoke("master", &env.job("big.log", "out/big.log.gz"))
        .await;
    let err = match answer {
        Ok(report) => panic!("the master succeeded: {report}"),
        Err(e) => e,
    };
    assert_eq!(err["errorType"], "Fatal.NotAllowed", "{err}");
    let message = err["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("worker failed with NotAllowed") && message.contains("/nowhere/"),
        "{message}\nworker log:\n{}",
        workers.log()
    );
    env.assert_no_open_uploads().await;
    let dest: ObjectUrl = format!("s3://{BUCKET}/out/big.log.gz").parse().unwrap();
    assert!(
        env.s3.store().head_object(&dest).await.unwrap().is_none(),
        "an object appeared at the key"
    );
}
