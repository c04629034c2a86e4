//! gzship-sftpd against a real russh client and russh-sftp client that pin its host key: one
//! test binary, with the protocol tests ([`server`]) and an ignored read measurement
//! ([`throughput`]).

mod common;
mod server;
mod throughput;
