//! Real servers and seeded data for gzship's tests.
//!
//! Module map:
//! - `sshd`: a real OpenSSH `sshd` on 127.0.0.1 with its own host key and authorized key.
//! - `s3`: a real S3 server (moto) on 127.0.0.1.
//! - `data`: seeded generators of web-server logs, random bytes and zeros.

pub mod data;
pub mod s3;
pub mod sshd;
