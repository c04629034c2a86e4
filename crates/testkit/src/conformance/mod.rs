//! Conformance suites: one set of checks that every implementation of a contract must pass,
//! run by gzship's top-level `tests/conformance` against every backend (the model is arrow-rs
//! `object_store`'s `integration.rs`).
//!
//! - [`store`]: `MultipartStore` and `ObjectStore`, against moto, the local store and
//!   gzship-s3lite.
//! - [`sftp`]: the SFTP source, against OpenSSH's sshd and gzship-sftpd.
//!
//! The checks are test code: they panic, with what differed, when a backend fails them.

#![allow(clippy::unwrap_used)]

pub mod sftp;
pub mod store;
