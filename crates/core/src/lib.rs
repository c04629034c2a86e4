//! gzship's engine: ship one huge file from an SFTP server into S3 as a multi-member gzip
//! object, in parallel.
//!
//! Module map (words as in the glossary of `DESIGN.md`):
//! - [`types`]: domain values: [`ByteRange`], [`PartNumber`], [`PartWindow`], [`UploadId`],
//!   [`ETag`], and S3's limits on parts.
//! - [`url`]: the two kinds of location, [`SourceUrl`] (`sftp://`) and [`ObjectUrl`] (`s3://`).
//! - [`plan`]: the planner: file size and tuning in, tasks (ranges, part windows) and part size
//!   out, holding S3's rules for any data.
//! - [`gzip`]: framing: one block of input becomes one complete gzip member; padding members.
//! - [`gunzip`]: decoding a multi-member object from a stream of chunks (`gzship verify`).
//! - [`assemble`]: the part assembler: a task's ordered members in, legal parts out, their
//!   bytes handed to a sink (memory, or the spool).
//! - [`wire`]: the JSON messages: job request, task, task report, job report.
//! - [`source`]: the [`Source`](source::Source) trait and its SFTP adapter.
//! - [`store`]: the [`MultipartStore`](store::MultipartStore) contract and the
//!   [`ObjectStore`](store::ObjectStore) reads around it, S3 and local adapters, and S3's
//!   completion rules ([`store::rules`]).
//! - [`master`]: a whole job: stat, plan, create, fan out, check, complete or abort.
//! - [`scan`]: scans of a remote directory: the glob, the destinations, which files are new and
//!   complete, the Lambda scan's claim on each file.
//! - [`invoke`]: the [`Invoker`](invoke::Invoker) trait; the in-process invoker
//!   ([`invoke::local`]); with the feature `lambda`, the AWS Lambda invoker (`invoke::lambda`);
//!   and how a worker's error crosses the Lambda wire, both ways ([`invoke::wire_error`]).
//! - [`worker`]: one task: read a range, compress on every core, upload parts, report.
//! - [`spool`]: parts too big for memory: the spool directory's budget, the spool file sink,
//!   stale-file cleanup.
//! - [`aws_error`]: one classification of AWS SDK errors as retryable or not.
//! - [`settings`]: the one settings surface: every knob's name, unit, default and doc, parsed
//!   once from the CLI's flags or a function's environment.
//! - [`duration`]: the one model of a job's duration (task sizes, time limits, estimates).
//! - [`backoff`]: the one bounded, jittered backoff of every retry loop.
//! - [`config`]: the access policy and [`Secret`](config::Secret).
//! - [`error`]: the one [`Error`] type.

pub mod assemble;
pub mod aws_error;
pub mod backoff;
pub mod config;
pub mod duration;
pub mod error;
pub mod gunzip;
pub mod gzip;
pub mod invoke;
pub mod job;
pub mod master;
pub mod plan;
pub mod scan;
pub mod settings;
pub mod source;
pub mod spool;
pub mod store;
pub mod types;
pub mod url;
pub mod wire;
pub mod worker;

pub use error::{Error, Result};
pub use types::{ByteRange, ETag, PartNumber, PartWindow, UploadId};
pub use url::{ObjectUrl, SourceUrl};
