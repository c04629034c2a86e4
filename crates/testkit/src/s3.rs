//! A real S3 server for tests: moto's server (`moto.server`, [`MOTO_VERSION`]) on 127.0.0.1.
//!
//! moto speaks the S3 REST protocol, keeps multipart uploads in memory, enforces
//! `EntityTooSmall` at CompleteMultipartUpload and allows part-number gaps, as S3 does. Each test
//! starts its own server (about a second) and creates its own buckets; the process is killed
//! when the [`S3Server`] is dropped.
//!
//! ```no_run
//! # async fn demo() {
//! let server = gzship_testkit::s3::S3Server::start().await;
//! server.create_bucket("my-bucket").await;
//! let store = server.store();
//! # }
//! ```

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use gzship_core::backoff::Backoff;
use gzship_core::store::s3::{S3Config, S3Store};

/// The static access key tests sign with (moto accepts any).
pub const ACCESS_KEY_ID: &str = "gzship-test-key";
/// The static secret key tests sign with.
pub const SECRET_ACCESS_KEY: &str = "gzship-test-secret";
/// The region tests use.
pub const REGION: &str = "us-east-1";

/// The moto version tests run against, installed by `scripts/install-test-deps.sh`.
/// moto 5.2's new response serializer names the root elements of some replies
/// `...Response` instead of S3's `...Result`, which aws-sdk-s3 rejects: CompleteMultipartUpload
/// in 5.2.1, ListParts in 5.2.1 to 5.2.5 at least. 5.1.22 answers as S3 does.
pub const MOTO_VERSION: &str = "5.1.22";

/// Starts moto's server after checking its version, so a wrong install fails with the fix
/// instead of with a confusing protocol error later.
const LAUNCHER: &str = r#"
import sys
try:
    import crc32c  # without it moto computes CRC32 where S3 computes CRC32C
    import moto
    from moto.server import main
except ImportError as e:
    sys.exit(f"gzship-testkit: moto or crc32c is not installed ({e})")
want = sys.argv[1]
if moto.__version__ != want:
    sys.exit(f"gzship-testkit: moto {moto.__version__} is installed, the tests need {want}")

# With IAM enforced (INITIAL_NO_AUTH_ACTION_COUNT), moto checks SigV4 signatures against the
# URL werkzeug rebuilt, whose query has '/' unescaped: a request with %2F in its query
# (ListObjectsV2 with a prefix) fails with SignatureDoesNotMatch. Encode the query as SigV4's
# canonical request does before moto signs it. Only IAM checks call this.
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from moto.iam import access_control
_create = access_control.IAMRequestBase._create_aws_request
def _create_aws_request(self):
    request = _create(self)
    parts = urlsplit(request.url)
    if parts.query:
        pairs = (p.partition("=") for p in parts.query.split("&"))
        request.url = urlunsplit(parts._replace(query="&".join(
            quote(unquote(k), safe="-_.~") + "=" + quote(unquote(v), safe="-_.~")
            for k, _, v in pairs)))
    return request
access_control.IAMRequestBase._create_aws_request = _create_aws_request

main(sys.argv[2:])
"#;

/// How long moto may take to start listening (importing moto alone takes about a second).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Wait between readiness checks while moto starts: short at first, at most 100 ms apart.
const POLL: Backoff = Backoff {
    base: Duration::from_millis(10),
    max: Duration::from_millis(100),
};
/// Attempts to start on a free port (another process may take the port between our probe and
/// moto's bind).
const START_ATTEMPTS: u32 = 3;

/// A running moto server; killed on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    addr: SocketAddr,
    /// Holds moto's log (stderr and stdout) until the server is dropped.
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts moto on a free port of 127.0.0.1 and waits until it answers HTTP.
    ///
    /// Panics with the fix ("run scripts/install-test-deps.sh") when moto is not installed, and
    /// with moto's log when it does not start.
    pub async fn start() -> S3Server {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start().await {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("moto server did not start after {START_ATTEMPTS} attempts; its log:\n{last_log}");
    }

    /// One start; `Err` carries moto's log when the process died or never answered.
    async fn try_start() -> Result<S3Server, String> {
        let dir = tempfile::tempdir().expect("create a temporary directory for moto's log");
        let log_path = dir.path().join("moto.log");
        let port = crate::net::free_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = File::create(&log_path).expect("create moto's log file");
        let log2 = log.try_clone().expect("clone moto's log file handle");
        let child = Command::new("python3")
            .args(["-c", LAUNCHER, MOTO_VERSION, "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .env("MOTO_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("python3 is not installed: run scripts/install-test-deps.sh ({e})")
            }
            Err(e) => panic!("spawn python3 to run moto's server: {e}"),
        };
        let mut server = S3Server {
            child: Some(child),
            addr,
            dir,
        };
        let startup = crate::net::Startup {
            addr,
            timeout: START_TIMEOUT,
            poll: POLL,
            launcher_marker: "gzship-testkit: moto",
            hint: "run scripts/install-test-deps.sh",
        };
        crate::net::wait_until_serving(startup, &mut server, Self::child_exited, Self::log).await?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address moto listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An SDK configuration with the test credentials and region, and nothing read from the
    /// environment or profile files.
    pub fn sdk_config(&self) -> SdkConfig {
        sdk_config()
    }

    /// Tuning for this server: see [`s3_config`].
    pub fn s3_config(&self) -> S3Config {
        s3_config(&self.endpoint_url())
    }

    /// An [`S3Store`] on this server.
    pub fn store(&self) -> S3Store {
        store_at(&self.endpoint_url())
    }

    /// Creates a bucket; panics if the server refuses.
    pub async fn create_bucket(&self, name: &str) {
        self.store()
            .client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create bucket {name} on moto: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
    }

    /// An SQS client for moto's queues, which it serves at the same endpoint.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk_config())
                .endpoint_url(self.endpoint_url())
                .build(),
        )
    }

    /// Creates a queue and returns its URL; panics if the server refuses.
    pub async fn create_queue(&self, name: &str) -> String {
        let created = self
            .sqs()
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create queue {name} on moto: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            });
        created
            .queue_url()
            .unwrap_or_else(|| panic!("moto created queue {name} without a URL"))
            .to_owned()
    }

    /// Kills the server now (the store's later requests fail to connect).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// moto's output so far (request log and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("moto.log")
    }

    fn child_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Tuning for a test S3 server at `endpoint_url` (moto, gzship-s3lite): path-style addressing,
/// and short timeouts and few attempts so that a failing test fails fast.
pub fn s3_config(endpoint_url: &str) -> S3Config {
    S3Config {
        endpoint_url: Some(endpoint_url.to_owned()),
        force_path_style: true,
        region: None,
        max_attempts: 2,
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(60),
        operation_timeout: Duration::from_secs(120),
        sse_kms_key: None,
    }
}

/// An [`S3Store`] on the test S3 server at `endpoint_url`, with [`sdk_config`] and
/// [`s3_config`].
pub fn store_at(endpoint_url: &str) -> S3Store {
    S3Store::new(&sdk_config(), &s3_config(endpoint_url))
}

/// The SDK configuration tests use: static credentials, [`REGION`], no environment.
pub fn sdk_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "gzship-testkit",
        )))
        .build()
}
