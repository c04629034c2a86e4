//! Ports on 127.0.0.1 for servers that run in their own process.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

/// A TCP port of 127.0.0.1 that was free a moment ago, for servers that take a port number
/// (OpenSSH sshd, moto, `cargo lambda watch`) and cannot take a bound listener.
///
/// The port is released before it is returned, so another process may take it before the
/// server binds it: a caller starting a server retries with a new port when the server fails to
/// listen. Servers in this process bind `127.0.0.1:0` themselves and report their address
/// instead (gzship-sftpd, gzship-s3lite). A caller that wants a port with nothing behind it (a
/// refused connection) can use this too.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// Whether something at `addr` answers an HTTP request (any status: the server is up), for
/// servers that take a moment to start (moto, ministack).
pub(crate) async fn http_answers(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        conn.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 5];
        conn.read_exact(&mut head).await.ok()?;
        (&head == b"HTTP/").then_some(())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// How a server started as a child process came up, for [`wait_until_serving`].
pub(crate) struct Startup<'a> {
    /// Where it should answer HTTP.
    pub addr: SocketAddr,
    /// How long it may take.
    pub timeout: Duration,
    /// Between readiness checks.
    pub poll: gzship_core::backoff::Backoff,
    /// A line the launcher prints when the server itself is missing or the wrong version: its
    /// exit is then a panic with `hint`, not a reason to retry on another port.
    pub launcher_marker: &'a str,
    /// What to do about a missing server (the install script to run).
    pub hint: &'a str,
}

/// Waits until `server`'s child process is running and `addr` answers HTTP. `Err` (with the
/// child's log) when it exited or did not answer in time: the caller retries on a new port.
pub(crate) async fn wait_until_serving<S>(
    startup: Startup<'_>,
    server: &mut S,
    exited: fn(&mut S) -> Option<std::process::ExitStatus>,
    log: fn(&S) -> String,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + startup.timeout;
    let mut attempt = 0;
    loop {
        if let Some(status) = exited(server) {
            let log = log(server);
            if log.contains(startup.launcher_marker) {
                panic!("the server exited with {status}: {}\n{log}", startup.hint);
            }
            return Err(format!("exited with {status}\n{log}"));
        }
        if http_answers(startup.addr).await {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "no HTTP answer on {} within {:?}\n{}",
                startup.addr,
                startup.timeout,
                log(server)
            ));
        }
        attempt += 1;
        tokio::time::sleep(startup.poll.delay(attempt)).await;
    }
}
