//! The master owns retries of worker invokes: when an invoke's connection breaks after the
//! worker ran (a NAT dropping the flow, a reset), the master tries the task again once, after
//! its backoff, and the SDK does not retry underneath it (its standard policy would run the
//! same range up to three times per master attempt). Under `cargo lambda watch`, with a TCP
//! proxy between the master and the emulator that drops the first invoke's answer and counts
//! the invokes that reach the emulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gzship_core::types::MIB;
use gzship_core::wire::JobReport;
use gzship_testkit::data::{DataKind, sha256_file, write_file};
use gzship_testkit::net::free_port;
use gzship_testkit::watch::Watch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::watch::{BUCKET, servers};

/// What a worker invoke starts with on the wire.
const INVOKE: &[u8] = b"POST /2015-03-31/functions/worker/invocations";

/// Forwards 127.0.0.1:<its port> to `upstream`, counting worker invokes; on the first
/// `drop_answers` connections it closes the client's side as soon as the answer begins, so
/// the invoke ran but its caller sees the connection break.
struct Proxy {
    port: u16,
    invokes: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: u16, drop_answers: usize) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let invokes = Arc::new(AtomicUsize::new(0));
        let counted = invokes.clone();
        tokio::spawn(async move {
            let mut connections = 0usize;
            while let Ok((client, _)) = listener.accept().await {
                let drop_answer = connections < drop_answers;
                connections += 1;
                tokio::spawn(forward(client, upstream, drop_answer, counted.clone()));
            }
        });
        Proxy { port, invokes }
    }
}

async fn forward(client: TcpStream, upstream: u16, drop_answer: bool, invokes: Arc<AtomicUsize>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async move {
        // The last bytes of the previous read, so a request line split across reads counts.
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            tail.extend_from_slice(&buf[..n]);
            let found = tail.windows(INVOKE.len()).filter(|w| *w == INVOKE).count();
            invokes.fetch_add(found, Ordering::SeqCst);
            let keep = tail.len().min(INVOKE.len() - 1);
            let drop_to = if found > 0 {
                tail.len()
            } else {
                tail.len() - keep
            };
            tail.drain(..drop_to);
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if drop_answer {
                // The worker has answered: break the caller's connection instead.
                break;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_tx.shutdown().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_invoke_runs_the_worker_once_more_not_three_times() {
    let env = servers().await;
    let path = env.sshd.data_dir().join("one.log");
    write_file(&path, DataKind::Logs, 6 * MIB, 17).unwrap();
    let sha = sha256_file(&path).unwrap();

    let port = free_port();
    let proxy = Proxy::start(port, 1).await;
    // The master invokes workers through the proxy; the test invokes the master directly.
    let watch = Watch::start(port, &env.functions_env(proxy.port, &env.data_dir()));
    let mut job = env.job("one.log", "out/one.log.gz");
    job["tuning"]["tasks"] = 1.into();
    let answer = watch.invoke("master", &job).await;
    let report =
        answer.unwrap_or_else(|e| panic!("the master failed: {e}\nemulator log:\n{}", watch.log()));
    let report: JobReport = serde_json::from_value(report).unwrap();

    // The first invoke ran the worker and lost its answer; the master retried once.
    assert_eq!(report.tasks, 1);
    assert_eq!(
        report.retries, 1,
        "the master did not see the broken invoke"
    );
    assert_eq!(
        proxy.invokes.load(Ordering::SeqCst),
        2,
        "worker invokes: the SDK retried under the master\n{}",
        watch.log()
    );
    let dest: gzship_core::ObjectUrl = format!("s3://{BUCKET}/out/one.log.gz").parse().unwrap();
    let gz = gzship_testkit::conformance::store::read_all(&env.s3.store(), &dest).await;
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("one.log.gz");
    std::fs::write(&object, gz).unwrap();
    gzship_testkit::decode::assert_decodes(&object, &sha);
    env.assert_no_open_uploads().await;
}
