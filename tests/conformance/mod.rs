//! The test kit's conformance suites (`gzship_testkit::conformance`) run against every backend,
//! plus what is particular to one backend.

mod sftp;
mod store;
