//! The functions' IAM policies, proven against moto with IAM enforced (issue 12, item 3).
//!
//! The policies are read from `infra/template.yaml` ([`super::cfn`]): each role's inline
//! statements, resolved for this test's bucket, become the policy of an IAM user in moto, and
//! the master's and the workers' S3 calls are signed with their own user's keys. Once the
//! users exist, moto is switched to enforcing (`/moto-api/reset-auth` sets its
//! `INITIAL_NO_AUTH_ACTION_COUNT` to 0): every later request is checked against the policies
//! of the user who signed it. The functions run in this process with the template's
//! environment: the master's handler runs jobs whose workers are invoked in-process through
//! the worker's handler, so every S3 call of both roles is made by the code that makes it on
//! Lambda, from a real OpenSSH sshd.
//!
//! The jobs cover every S3 path of the roles: a job the master runs to the end (claim, record,
//! create, parts, complete, tag, remove the record); a job run as the state machine runs it
//! (workers read their task from the record and record their report, the completion step
//! lists and reads the reports); a resume (ListParts confirms a recorded task) ended by the
//! failure step (abort, remove); and a failure step that finds an upload no record claims
//! (lists the jobs and the open uploads, aborts it). Each job is checked as a user would: the
//! object decodes to the source, it carries the CRC-32 tag, and no upload or record is left.
//!
//! Then each S3 statement of each role is removed in turn, and the same jobs must fail.
//!
//! What this cannot show, with the reason, is in [`NOT_EXERCISED`]; and moto ignores
//! `Condition`s it does not know (`StringLike` among them), so the master's ListBucket
//! condition on the jobs prefix is not checked here.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
// The SDK's credential types, as every aws-sdk crate re-exports them.
use aws_sdk_lambda::config::{Credentials as AwsCredentials, SharedCredentialsProvider};
use gzship_core::invoke::Invoker;
use gzship_core::job::JobRef;
use gzship_core::master as core_master;
use gzship_core::source::sftp::SshAuth;
use gzship_core::spool::SpoolBudget;
use gzship_core::store::ObjectStore;
use gzship_core::store::s3::{S3Config, S3Store};
use gzship_core::types::{KIB, MIB};
use gzship_core::wire::{JobRequest, Task, TaskReport};
use gzship_core::{ObjectUrl, master::CRC32_TAG};
use gzship_lambda::config::{MasterEnv, WorkerEnv};
use gzship_lambda::credentials::Credentials;
use gzship_lambda::master::{MasterResponse, handle_event};
use gzship_lambda::worker::{WorkerResponse, handle_task, sftp_source};
use gzship_testkit::data::{DataKind, sha256, sha256_file, write_file};
use gzship_testkit::s3::{REGION, S3Server};
use gzship_testkit::sshd::Sshd;
use serde_json::{Value, json};

use super::cfn::Resolver;
use super::master_deps;

const BUCKET: &str = "iam-bucket";

/// Statements whose actions this test cannot exercise, by action prefix, with the reason. A
/// statement with any other action must be S3-only (and is then removed in turn); a new
/// kind of statement fails the test until it is exercised or listed here.
const NOT_EXERCISED: &[(&str, &str)] = &[
    (
        "lambda:",
        "the master invokes its workers in this process (moto's Lambda needs Docker); the \
         cargo lambda watch and Step Functions tests invoke them without IAM",
    ),
    (
        "states:",
        "moto checks Step Functions actions against resource \"*\" only, never the state \
         machine's ARN; the jobs here fit the master, and the state machine's steps are called \
         directly",
    ),
    (
        "secretsmanager:",
        "moto checks Secrets Manager actions against resource \"*\" only, never the secret's \
         ARN; the functions get the SSH key directly",
    ),
    (
        "sqs:",
        "Lambda's event source mapping polls the queue with the master's role, and a scan \
         enqueues files: neither is part of these jobs",
    ),
    (
        "kms:",
        "moto's S3 encrypts with SSE-KMS without asking KMS for the caller: the key's \
         statements are granted only when KmsKeyArn is set, and the kms test checks the upload",
    ),
];

/// Creates one IAM user per policy (a managed policy of the given statements, and access
/// keys), prints the keys, then makes moto enforce IAM on every later request.
const SETUP: &str = r#"
import json, sys, urllib.request
import boto3
endpoint = sys.argv[1]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
keys = {}
for user, statements in json.load(sys.stdin).items():
    iam.create_user(UserName=user)
    document = json.dumps({"Version": "2012-10-17", "Statement": statements})
    arn = iam.create_policy(PolicyName=user, PolicyDocument=document)["Policy"]["Arn"]
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    keys[user] = [key["AccessKeyId"], key["SecretAccessKey"]]
# Not a form: moto reads the count from the raw body.
request = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
assert json.load(urllib.request.urlopen(request))["status"] == "ok"
json.dump(keys, sys.stdout)
"#;

/// Everything the jobs need: the servers, the functions' configuration from the template, and
/// an S3 store per IAM user.
struct World {
    sshd: Sshd,
    s3: S3Server,
    master_env: MasterEnv,
    worker_env: WorkerEnv,
    credentials: Credentials,
    keys: BTreeMap<String, (String, String)>,
    /// The source file's URL and SHA-256.
    source: String,
    sha: String,
    dest_prefix: String,
    jobs_prefix: String,
}

/// One role's statements: which ones the test removes in turn.
struct Role {
    name: &'static str,
    statements: Vec<Value>,
    removable: Vec<usize>,
}

fn role(resolver: &Resolver, name: &'static str) -> Role {
    let statements = resolver.role_statements(name);
    let mut removable = Vec::new();
    for (i, s) in statements.iter().enumerate() {
        let actions: Vec<&str> = match &s["Action"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap()).collect(),
            other => panic!("{name}: a statement's Action is {other}"),
        };
        if actions.iter().all(|a| a.starts_with("s3:")) {
            removable.push(i);
            continue;
        }
        for a in actions {
            assert!(
                NOT_EXERCISED.iter().any(|(p, _)| a.starts_with(p)),
                "{name}: statement {s} mixes S3 with other actions, or grants {a}, which this \
                 test neither exercises nor lists in NOT_EXERCISED"
            );
        }
    }
    Role {
        name,
        statements,
        removable,
    }
}

impl Role {
    fn user(&self) -> String {
        self.name.to_lowercase()
    }

    fn user_without(&self, i: usize) -> String {
        format!("{}-without-{i}", self.user())
    }

    /// This role's users: the whole policy, and the policy without each removable statement.
    fn users(&self) -> Vec<(String, Vec<Value>)> {
        let mut users = vec![(self.user(), self.statements.clone())];
        for &i in &self.removable {
            let mut statements = self.statements.clone();
            statements.remove(i);
            users.push((self.user_without(i), statements));
        }
        users
    }
}

/// Starts the servers, deploys the template's functions and roles (`users` gives each IAM
/// user's statements, from the resolver with every parameter set) and enforces IAM. With
/// `kms`, a key is created in moto's KMS and given as the `KmsKeyArn` parameter.
async fn world(
    resolver: &mut Resolver,
    kms: bool,
    users: impl FnOnce(&Resolver) -> Vec<(String, Vec<Value>)>,
) -> World {
    let sshd = Sshd::start();
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    if kms {
        resolver.set_param("KmsKeyArn", &create_kms_key(&s3));
    }
    let path = sshd.data_dir().join("access.log");
    write_file(&path, DataKind::Logs, 2 * MIB + 12_345, 31).unwrap();
    let sha = sha256_file(&path).unwrap();

    resolver
        .set_param("HostKeyFingerprint", sshd.host_key_fingerprint())
        .set_param(
            "AllowedSourcePaths",
            &format!("{}/", sshd.data_dir().display()),
        );
    let env_of = |function: &str| {
        let mut vars = resolver.function_env(function);
        // Quick retries and starts; the rest is the template's.
        vars.insert("GZSHIP_START_INTERVAL".into(), "10ms".into());
        vars.insert("GZSHIP_RETRY_DELAY".into(), "10ms".into());
        vars.insert("GZSHIP_COMPRESS_PARALLELISM".into(), "2".into());
        move |k: &str| vars.get(k).cloned()
    };
    let master_env = MasterEnv::from_lookup(&env_of("MasterFunction")).unwrap();
    let worker_env = WorkerEnv::from_lookup(&env_of("WorkerFunction")).unwrap();
    let params = resolver.properties("WorkerFunction")["Environment"]["Variables"].clone();
    let dest_prefix = params["GZSHIP_ALLOWED_DESTINATIONS"]
        .as_str()
        .unwrap()
        .to_owned();
    let jobs_prefix = params["GZSHIP_JOBS_PREFIX"].as_str().unwrap().to_owned();

    let mut admin = vec![(
        "admin".to_owned(),
        vec![json!({"Effect": "Allow", "Action": "*", "Resource": "*"})],
    )];
    admin.extend(users(resolver));
    let keys = create_users(&s3, &admin.into_iter().collect());
    World {
        credentials: Credentials::fixed(SshAuth::private_key(
            sshd.client_key().private_key_pem.clone(),
            None,
        )),
        source: sshd.url("access.log"),
        sshd,
        s3,
        master_env,
        worker_env,
        keys,
        sha,
        dest_prefix,
        jobs_prefix,
    }
}

/// A new key in moto's KMS: its ARN.
fn create_kms_key(s3: &S3Server) -> String {
    const CREATE: &str = r#"
import sys, boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
print(kms.create_key(Description="gzship test")["KeyMetadata"]["Arn"])
"#;
    let out = Command::new("python3")
        .args(["-c", CREATE, &s3.endpoint_url()])
        .output()
        .expect("run python3 (boto3 comes with moto: scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "create a KMS key in moto: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs [`SETUP`]: the users' keys, by user; IAM is enforced from then on.
fn create_users(
    s3: &S3Server,
    users: &BTreeMap<String, Vec<Value>>,
) -> BTreeMap<String, (String, String)> {
    let mut child = Command::new("python3")
        .args(["-c", SETUP, &s3.endpoint_url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (boto3 comes with moto: scripts/install-test-deps.sh)");
    serde_json::to_writer(child.stdin.take().unwrap(), users).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "create the IAM users in moto: {}\nmoto's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s3.log()
    );
    let keys: BTreeMap<String, (String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    keys
}

impl World {
    /// A store that signs as `user`, with the master's S3 settings (the same as the
    /// workers') at moto's endpoint.
    fn store_as(&self, user: &str) -> S3Store {
        let (id, secret) = &self.keys[user];
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new(AwsCredentials::new(
                id,
                secret,
                None,
                None,
                "gzship-iam-test",
            )))
            .build();
        let config = S3Config {
            sse_kms_key: self.master_env.s3.sse_kms_key.clone(),
            ..self.s3.s3_config()
        };
        assert_eq!(
            self.master_env.s3.sse_kms_key, self.worker_env.s3.sse_kms_key,
            "the master and the workers encrypt alike"
        );
        S3Store::new(&sdk, &config)
    }

    fn dest(&self, run: &str, name: &str) -> String {
        format!("{}{run}/{name}.gz", self.dest_prefix)
    }

    fn job(&self, dest: &str) -> Value {
        json!({
            "source": self.source,
            "destination": dest,
            "tuning": {"tasks": 2, "block_size": 256 * KIB, "part_size": 5 * MIB},
        })
    }

    /// Runs the four jobs with the master's store signing as `master` and the workers' as
    /// `worker`; `Err` says which job failed and how.
    async fn run_jobs(&self, run: &str, master: &str, worker: &str) -> Result<(), String> {
        let (m, w, admin) = (
            self.store_as(master),
            self.store_as(worker),
            self.store_as("admin"),
        );
        let result = self.jobs(run, &m, &w, &admin).await;
        clean_up(&admin, &self.jobs_prefix).await;
        result
    }

    async fn jobs(
        &self,
        run: &str,
        master: &S3Store,
        worker: &S3Store,
        admin: &S3Store,
    ) -> Result<(), String> {
        let spool = self.worker_env.tuning.spool_budget();
        let invoker = InProcessWorker {
            env: &self.worker_env,
            credentials: &self.credentials,
            store: worker,
            spool: spool.clone(),
            time_limit: self.master_env.worker_timeout,
        };
        let deps = master_deps(&self.credentials, master, &invoker);
        let master_event =
            |event: Value| handle_event(event, "iam", SystemTime::now(), &self.master_env, &deps);

        // 1. A job the master runs to the end.
        let dest = self.dest(run, "direct");
        match master_event(self.job(&dest)).await {
            Ok(MasterResponse::Job(_)) => {}
            other => return Err(format!("the master's job: {}", shown(other))),
        }
        self.check_shipped(admin, &dest, "the master's job").await?;

        // 2. The same job as the state machine runs it: started by the master, its tasks run
        // by workers from the record, completed by the completion step.
        let dest = self.dest(run, "recorded");
        let (at, record) = self.start(master, &dest).await?;
        for task in &record.plan.tasks {
            let event =
                json!({"recorded_task": {"record": at.url().to_string(), "index": task.index}});
            handle_task(event, &self.worker_env, &self.credentials, worker, &spool)
                .await
                .map_err(|e| format!("recorded task {}: {}", task.index, chain(&e)))?;
        }
        match master_event(json!({"complete": {"record": at.url().to_string()}})).await {
            Ok(MasterResponse::Job(_)) => {}
            other => return Err(format!("the completion step: {}", shown(other))),
        }
        self.check_shipped(admin, &dest, "the state machine's job")
            .await?;

        // 3. A resume confirms a recorded task with ListParts; the failure step aborts the job.
        let dest = self.dest(run, "resumed");
        let (at, record) = self.start(master, &dest).await?;
        let event = json!({"recorded_task": {"record": at.url().to_string(), "index": 0}});
        handle_task(event, &self.worker_env, &self.credentials, worker, &spool)
            .await
            .map_err(|e| format!("recorded task 0: {}", chain(&e)))?;
        let source = sftp_source(&record.source, &self.master_env.ssh, &self.credentials)
            .await
            .map_err(|e| chain(&e))?;
        let (_, done) =
            core_master::prepare_resume(&at, record, &source, master, &self.master_env.master)
                .await
                .map_err(|e| format!("resume: {}", chain(&e)))?;
        if done.len() != 1 {
            return Err(format!("resume: tasks done {done:?}, expected [0]"));
        }
        self.fail_step(&master_event, &at).await?;
        self.check_gone(admin, "the resumed job").await?;

        // 4. A job that stopped between creating its upload and recording it: the failure
        // step lists the jobs and the open uploads, and aborts the upload no record claims.
        let dest = self.dest(run, "unrecorded");
        let (at, mut record) = self.start(master, &dest).await?;
        record.upload_id = None;
        at.write(admin, &record).await.unwrap();
        self.fail_step(&master_event, &at).await?;
        self.check_gone(admin, "the unrecorded upload's job")
            .await?;
        Ok(())
    }

    /// Starts a job as the master does before handing it to the state machine.
    async fn start(
        &self,
        master: &S3Store,
        dest: &str,
    ) -> Result<(JobRef, gzship_core::job::JobRecord), String> {
        let request: JobRequest = serde_json::from_value(self.job(dest)).unwrap();
        let source = sftp_source(&request.source, &self.master_env.ssh, &self.credentials)
            .await
            .map_err(|e| chain(&e))?;
        let id = gzship_core::job::new_id(&request.destination);
        core_master::start(
            &request,
            &id,
            &source,
            master,
            Some(self.master_env.worker_timeout),
            &self.master_env.master,
        )
        .await
        .map_err(|e| format!("start job {id}: {}", chain(&e)))
    }

    /// The failure step with a fatal error: the job must be aborted.
    async fn fail_step<F, Fut>(&self, master_event: &F, at: &JobRef) -> Result<(), String>
    where
        F: Fn(Value) -> Fut,
        Fut: std::future::Future<Output = Result<MasterResponse, gzship_lambda::error::HandlerError>>,
    {
        let event = json!({"failed": {"record": at.url().to_string(),
                                      "error": {"Error": "Fatal.Test", "Cause": "a test"}}});
        match master_event(event).await {
            Ok(MasterResponse::Ended(e)) if e.aborted => Ok(()),
            other => Err(format!("the failure step: {}", shown(other))),
        }
    }

    /// The object decodes to the source and has its CRC-32 tag; nothing is left behind.
    async fn check_shipped(&self, admin: &S3Store, dest: &str, what: &str) -> Result<(), String> {
        let url: ObjectUrl = dest.parse().unwrap();
        let mut stream = admin.get_object(&url).await.unwrap();
        let mut gz = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            gz.extend_from_slice(&chunk.unwrap());
        }
        let mut data = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(
            sha256(&data),
            self.sha,
            "{what}: {dest} decodes to another file"
        );
        let tags = admin.get_tags(&url).await.unwrap();
        if !tags.contains_key(CRC32_TAG) {
            return Err(format!(
                "end state of {what}: {dest} has no {CRC32_TAG} tag"
            ));
        }
        self.check_gone(admin, what).await
    }

    /// No upload is open and no record is left.
    async fn check_gone(&self, admin: &S3Store, what: &str) -> Result<(), String> {
        let open = admin.list_uploads(BUCKET, "").await.unwrap();
        let records = admin.list_objects(BUCKET, &self.jobs_prefix).await.unwrap();
        if open.is_empty() && records.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "end state of {what}: uploads {open:?} and records {records:?} are left"
            ))
        }
    }
}

/// Removes what a failed run left: open uploads and records.
async fn clean_up(admin: &S3Store, jobs_prefix: &str) {
    use gzship_core::store::MultipartStore;
    for open in admin.list_uploads(BUCKET, "").await.unwrap() {
        let url = ObjectUrl {
            bucket: BUCKET.into(),
            key: open.key,
        };
        admin.abort_upload(&url, &open.upload_id).await.unwrap();
    }
    for o in admin.list_objects(BUCKET, jobs_prefix).await.unwrap() {
        let url = ObjectUrl {
            bucket: BUCKET.into(),
            key: o.key,
        };
        admin.delete_object(&url).await.unwrap();
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    gzship_core::error::chain(e)
}

fn shown(r: Result<MasterResponse, gzship_lambda::error::HandlerError>) -> String {
    match r {
        Ok(r) => format!("unexpected answer {}", serde_json::to_string(&r).unwrap()),
        Err(e) => chain(&e),
    }
}

/// Workers invoked in this process through the worker's handler, with the worker's store; an
/// error crosses back as it does over Lambda's wire.
struct InProcessWorker<'a> {
    env: &'a WorkerEnv,
    credentials: &'a Credentials,
    store: &'a S3Store,
    spool: SpoolBudget,
    time_limit: Duration,
}

impl Invoker for InProcessWorker<'_> {
    async fn invoke(&self, task: Task) -> gzship_core::Result<TaskReport> {
        let payload = serde_json::to_value(&task).expect("a task serializes");
        match handle_task(payload, self.env, self.credentials, self.store, &self.spool).await {
            Ok(WorkerResponse::Report(report)) => Ok(report),
            Ok(other) => panic!("a task answered {other:?}"),
            Err(e) => Err(e.to_function_error().into_error()),
        }
    }

    fn time_limit(&self) -> Option<Duration> {
        Some(self.time_limit)
    }
}

/// The template's policies let the jobs succeed, and without any one of their S3 statements
/// the jobs fail.
#[tokio::test(flavor = "multi_thread")]
async fn the_templates_policies_allow_the_jobs_and_each_s3_statement_is_needed() {
    let mut resolver = Resolver::new(super::cfn::template(), BUCKET);
    let roles = [role(&resolver, "MasterRole"), role(&resolver, "WorkerRole")];
    let users = roles.iter().flat_map(Role::users).collect();
    let w = world(&mut resolver, false, |_| users).await;
    let (master, worker) = (roles[0].user(), roles[1].user());

    if let Err(e) = w.run_jobs("whole", &master, &worker).await {
        panic!(
            "the jobs fail with the template's policies: {e}\nsshd log:\n{}",
            w.sshd.log()
        );
    }
    for role in &roles {
        for &i in &role.removable {
            let user = role.user_without(i);
            let (m, wk) = if role.name == "MasterRole" {
                (user.as_str(), worker.as_str())
            } else {
                (master.as_str(), user.as_str())
            };
            let statement = &role.statements[i];
            match w.run_jobs(&format!("{}-{i}", role.user()), m, wk).await {
                Ok(()) => panic!(
                    "{}: the jobs succeed without statement {i} {statement}: it is not needed \
                     (or the test does not exercise it)",
                    role.name
                ),
                Err(e) => {
                    assert!(
                        e.contains("AccessDenied") || e.starts_with("end state"),
                        "{}: without statement {i} the jobs fail, but not for want of it: {e}",
                        role.name
                    );
                    eprintln!("{} without statement {i} {statement}: {e}", role.name);
                }
            }
        }
    }
}

/// Issue 12, item 9: with the template's `KmsKeyArn` set, both roles get exactly
/// kms:GenerateDataKey and kms:Decrypt on the key, the functions get it as
/// `GZSHIP_SSE_KMS_KEY`, and a job run with the roles' credentials makes an object encrypted
/// with SSE-KMS under that key, as HeadObject reports.
#[tokio::test(flavor = "multi_thread")]
async fn a_kms_key_in_the_template_encrypts_the_object_with_sse_kms() {
    let mut resolver = Resolver::new(super::cfn::template(), BUCKET);
    let w = world(&mut resolver, true, |r| {
        ["MasterRole", "WorkerRole"]
            .into_iter()
            .map(|name| (name.to_lowercase(), r.role_statements(name)))
            .collect()
    })
    .await;
    let key = w
        .master_env
        .s3
        .sse_kms_key
        .clone()
        .expect("the master has the key");
    assert!(key.starts_with("arn:aws:kms:"), "{key}");
    for role in ["MasterRole", "WorkerRole"] {
        let kms: Vec<Value> = resolver
            .role_statements(role)
            .into_iter()
            .filter(|s| s.to_string().contains("kms:"))
            .collect();
        assert_eq!(
            kms,
            [
                json!({"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                    "Resource": key})
            ],
            "{role}"
        );
    }

    let (master, worker) = (w.store_as("masterrole"), w.store_as("workerrole"));
    let invoker = InProcessWorker {
        env: &w.worker_env,
        credentials: &w.credentials,
        store: &worker,
        spool: w.worker_env.tuning.spool_budget(),
        time_limit: w.master_env.worker_timeout,
    };
    let deps = master_deps(&w.credentials, &master, &invoker);
    let dest = w.dest("kms", "encrypted");
    let answer = handle_event(w.job(&dest), "kms", SystemTime::now(), &w.master_env, &deps).await;
    assert!(
        matches!(answer, Ok(MasterResponse::Job(_))),
        "{}",
        shown(answer)
    );
    let admin = w.store_as("admin");
    w.check_shipped(&admin, &dest, "the encrypted job")
        .await
        .unwrap();

    let url: ObjectUrl = dest.parse().unwrap();
    let head = admin
        .client()
        .head_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    assert_eq!(head.ssekms_key_id(), Some(key.as_str()));
}
