//! Real servers and seeded data for gzship's tests.
//!
//! Module map:
//! - `sshd`: a real OpenSSH `sshd` on 127.0.0.1 with its own host key and authorized key.
//! - `s3`: a real S3 server (moto) on 127.0.0.1.
//! - `data`: seeded generators of web-server logs, random bytes and zeros.
//! - `decode`: real decoders (gzip, pigz, Python) checked against the source's SHA-256.
//! - `bins`: the workspace's binaries (`gzship`), built when missing or stale.
//! - `net`: free ports on 127.0.0.1 for servers that run in their own process.
//! - `sftpd`: gzship-sftpd set up like `sshd`, in this process.
//! - `proftpd`: ProFTPD's mod_sftp set up like `sshd`, a second real SFTP server.
//! - `pysftpd`: a paramiko SFTP server without FSTAT (and, on demand, without mtimes).
//! - `watch`: the Lambda functions under the runtime emulator, `cargo lambda watch`.
//! - `stepfunctions`: a real Step Functions engine (ministack) whose Lambda tasks run the
//!   functions under `watch`.
//! - `conformance`: the store and SFTP source suites every backend must pass.

pub mod bins;
pub mod conformance;
pub mod decode;
/// Seeded sample data (the `gzship-sample` crate, which the CLI's demo uses too).
pub use gzship_sample as data;
pub mod net;
mod process;
pub mod proftpd;
pub mod pysftpd;
pub mod s3;
pub mod sftpd;
pub mod sshd;
pub mod stepfunctions;
pub mod watch;

/// Sets the modification time of the file at `path` (a file "written an hour ago" for the
/// scans' stability rule); panics on failure.
pub fn set_mtime(path: &std::path::Path, at: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(at))
        .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
}
