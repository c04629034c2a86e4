//! The HTTP client of the Lambda invoker: the SDK's usual hyper + rustls stack, with TCP
//! keepalive on every connection.
//!
//! A synchronous invoke sends nothing while the worker runs, up to 15 minutes. In a VPC the
//! master reaches the Lambda API through a NAT gateway, which drops a TCP flow idle for 350 s
//! without telling either end: the master would then wait out its whole attempt timeout for an
//! answer that can no longer arrive, and cancel a job whose workers all succeeded. Keepalive
//! probes every [`KEEPALIVE_INTERVAL`] after [`KEEPALIVE_IDLE`] keep the flow alive. The SDK's
//! own client (aws-smithy-http-client 1.1) has no keepalive setting, hence this one.
//!
//! Connect timeouts come from the SDK's connector settings; the attempt timeout is the SDK's
//! (set in [`LambdaInvoker::client_config`](super::lambda::LambdaInvoker::client_config)).

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Idle time before the first keepalive probe: well under the 350 s after which a NAT gateway
/// drops an idle flow.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between probes once they start.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Unanswered probes before the kernel declares the connection dead (and the invoke fails
/// with an I/O error the master retries): 60 s + 4 x 30 s = 3 minutes.
const KEEPALIVE_RETRIES: u32 = 4;

/// An SDK HTTP client (HTTPS with the system's roots, or plain HTTP for local endpoints) whose
/// connections have TCP keepalive.
pub fn http_client() -> SharedHttpClient {
    SharedHttpClient::new(KeepaliveClient::default())
}

/// Builds its [`Connector`] once per connect timeout: the SDK asks for a connector on every
/// request attempt, and each connector holds a connection pool and the system's TLS roots.
#[derive(Debug, Default)]
struct KeepaliveClient {
    connectors: Mutex<Vec<(Option<Duration>, SharedHttpConnector)>>,
}

impl HttpClient for KeepaliveClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeout = settings.connect_timeout();
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, connector)) = connectors.iter().find(|(t, _)| *t == timeout) {
            return connector.clone();
        }
        let connector = SharedHttpConnector::new(Connector::new(timeout));
        connectors.push((timeout, connector.clone()));
        connector
    }
}

/// A hyper client over keepalive TCP and rustls.
#[derive(Clone)]
struct Connector {
    client: Arc<Client<HttpsConnector<TcpConnector>, SdkBody>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("keepalive", &KEEPALIVE_IDLE)
            .finish()
    }
}

impl Connector {
    fn new(connect_timeout: Option<Duration>) -> Self {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        tcp.set_keepalive(Some(KEEPALIVE_IDLE));
        tcp.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
        tcp.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .unwrap_or_else(|e| {
                // No usable system roots: every HTTPS request fails with a certificate error
                // that says so; plain HTTP (local endpoints) still works.
                tracing::warn!(error = %e, "no TLS root certificates found");
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .expect("aws-lc-rs supports the default TLS versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                )
            })
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(https);
        Connector {
            client: Arc::new(client),
        }
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let sent = self.client.request(request);
        HttpConnectorFuture::new(async move {
            let response = sent.await.map_err(connector_error)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Connecting and I/O failures are I/O errors (the SDK marks them transient); anything else is
/// reported as it is.
fn connector_error(e: hyper_util::client::legacy::Error) -> ConnectorError {
    let io = e.is_connect() || {
        let mut source = e.source();
        let mut found = false;
        while let Some(s) = source {
            found |= s.is::<std::io::Error>();
            source = s.source();
        }
        found
    };
    if io {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::invoke::lambda::LambdaInvoker;

    /// The invoker's client really sets SO_KEEPALIVE: while an invoke waits for its answer,
    /// the kernel (`ss -o`) shows a keepalive timer on the client's socket, due within
    /// KEEPALIVE_IDLE. The server is a plain socket that answers like Lambda once checked.
    #[tokio::test]
    async fn invoke_connections_have_tcp_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_sdk_lambda::config::SharedCredentialsProvider::new(
                Credentials::for_tests(),
            ))
            .endpoint_url(endpoint)
            .build();
        let config = LambdaInvoker::client_config(&sdk, std::time::Duration::from_secs(900));
        let client = aws_sdk_lambda::Client::from_conf(config);
        let first = client.clone();
        let invoke = tokio::spawn(async move {
            first
                .invoke()
                .function_name("worker")
                .payload(aws_sdk_lambda::primitives::Blob::new(b"{}".to_vec()))
                .send()
                .await
        });

        let (mut conn, client_addr) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 64 * 1024];
        let n = conn.read(&mut request).await.unwrap();
        assert!(request[..n].starts_with(b"POST /2015-03-31/functions/worker/invocations"));
        let filter = format!("( sport = :{} )", client_addr.port());
        let ss = Command::new("ss")
            .args(["-tnoH", "state", "established", &filter])
            .output()
            .expect("run ss (iproute2): run scripts/install-test-deps.sh");
        let ss = String::from_utf8_lossy(&ss.stdout);
        let timer = ss
            .split("timer:(keepalive,")
            .nth(1)
            .unwrap_or_else(|| panic!("no keepalive timer on the invoke's socket: {ss:?}"));
        let due = timer
            .split(',')
            .next()
            .and_then(ss_duration)
            .unwrap_or_else(|| panic!("unreadable keepalive timer: {ss:?}"));
        assert!(
            due <= super::KEEPALIVE_IDLE,
            "the first probe is due within KEEPALIVE_IDLE: {ss:?}"
        );

        let body = br#"{"ok":true}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(body).await.unwrap();
        let out = invoke
            .await
            .unwrap()
            .expect("the invoke succeeds over the keepalive client");
        assert_eq!(out.payload().map(|b| b.as_ref()), Some(&body[..]));

        // The next invoke reuses the connection: the connector (and its pool) is kept, not
        // built again for every request.
        let again = tokio::spawn(async move {
            client
                .invoke()
                .function_name("worker")
                .payload(aws_sdk_lambda::primitives::Blob::new(b"{}".to_vec()))
                .send()
                .await
        });
        let n = tokio::select! {
            n = conn.read(&mut request) => n.unwrap(),
            _ = listener.accept() => panic!("the second invoke opened a new connection"),
        };
        assert!(
            request[..n].starts_with(b"POST /2015-03-31/functions/worker/invocations"),
            "the second invoke came on the first one's connection"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(body).await.unwrap();
        again.await.unwrap().expect("the second invoke succeeds");
    }

    /// A duration as `ss -o` prints timers: `59sec`, `1min`, `1min30sec`, `200ms`.
    fn ss_duration(text: &str) -> Option<std::time::Duration> {
        let mut total = std::time::Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit())?;
            let n: u64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let (unit, len) = [("min", 60_000), ("sec", 1_000), ("ms", 1)]
                .into_iter()
                .find(|(u, _)| rest.starts_with(u))
                .map(|(u, ms)| (ms, u.len()))?;
            total += std::time::Duration::from_millis(n * unit);
            rest = &rest[len..];
        }
        (!text.is_empty()).then_some(total)
    }

    #[test]
    fn ss_timers_parse() {
        use std::time::Duration;
        assert_eq!(ss_duration("59sec"), Some(Duration::from_secs(59)));
        assert_eq!(ss_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(ss_duration("1min30sec"), Some(Duration::from_secs(90)));
        assert_eq!(ss_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(ss_duration(""), None);
        assert_eq!(ss_duration("soon"), None);
    }
}
