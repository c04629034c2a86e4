//! gzship's end-to-end and conformance tests, one test binary (`integration`) with a module per
//! suite, against real servers started on 127.0.0.1 by `gzship-testkit`:
//!
//! - [`cli`]: the `gzship` binary runs jobs from OpenSSH sshd into moto, as a user would.
//! - [`lambda`]: the `master` and `worker` functions under `cargo lambda watch`, their handlers
//!   on every event shape, and the deployable template under `cfn-lint`.
//! - [`conformance`]: the test kit's conformance suites run against every backend: the store
//!   suite against moto, the local store and gzship-s3lite; the SFTP source suite against
//!   OpenSSH sshd and gzship-sftpd.
//! - [`master`] and [`worker`]: the master's fan-out, retries and aborts over the local store,
//!   and the worker pipeline against sshd and moto, with the faults each must survive.
//! - [`decoders`]: gzship's framing decoded by gzip, pigz and Python.
//! - [`s3lite`]: what gzship-s3lite does beyond the store suite (storage modes, paging, `put`).
//!
//! Binaries of other packages are found (and built when missing or stale) by
//! `gzship_testkit::bins`; `CARGO_BIN_EXE_*` only names a package's own binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod conformance;
mod decoders;
mod lambda;
mod master;
mod s3lite;
mod worker;
