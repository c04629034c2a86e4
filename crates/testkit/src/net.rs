//! Ports on 127.0.0.1 for servers that run in their own process.

use std::net::{Ipv4Addr, TcpListener};

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
