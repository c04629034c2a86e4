//! The JSON messages of gzship: the job request (what a user or trigger asks for), the task
//! (master -> worker), the task report (worker -> master) and the job report (the result).
//!
//! Inputs reject unknown fields, so a typo in an option is an error rather than a silently
//! ignored setting. Each type has a checked-in fixture under `crates/core/tests/fixtures/`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gzip::Level;
use crate::plan::{PlannedTask, Tuning};
use crate::source::SourceStat;
use crate::store::UploadedPart;
use crate::types::{ByteRange, PartWindow, UploadId};
use crate::url::{ObjectUrl, SourceUrl};

/// What a user or a trigger asks for: one source file to one destination object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// `sftp://[user@]host[:port]/path`.
    pub source: SourceUrl,
    /// `s3://bucket/key`.
    pub destination: ObjectUrl,
    /// Compression level, 1-9 (default 6).
    #[serde(default)]
    pub level: Level,
    /// Planner knobs; defaults suit multi-GB logs.
    #[serde(default)]
    pub tuning: Tuning,
}

/// One task: master -> worker. Carries no secret: the worker has its own credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Id of the job, for logs.
    pub job_id: String,
    /// Position of the task in the plan.
    pub index: u32,
    /// The source file.
    pub source: SourceUrl,
    /// What the master saw when it planned; the worker fails if the file no longer matches.
    pub source_stat: SourceStat,
    /// The bytes to read.
    pub range: ByteRange,
    /// The object being written.
    pub destination: ObjectUrl,
    /// The multipart upload the parts belong to.
    pub upload_id: UploadId,
    /// The part numbers this task may use.
    pub window: PartWindow,
    /// Target compressed bytes per part.
    pub part_size: u64,
    /// Source bytes per gzip member.
    pub block_size: u64,
    /// Compression level.
    pub level: Level,
    /// Whether this task ends the job (only then may its last part be short).
    pub is_last: bool,
}

impl Task {
    /// Builds the task for one planned task of a job.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job_id: &str,
        planned: &PlannedTask,
        source: &SourceUrl,
        source_stat: SourceStat,
        destination: &ObjectUrl,
        upload_id: &UploadId,
        part_size: u64,
        block_size: u64,
        level: Level,
    ) -> Task {
        Task {
            job_id: job_id.to_owned(),
            index: planned.index,
            source: source.clone(),
            source_stat,
            range: planned.range,
            destination: destination.clone(),
            upload_id: upload_id.clone(),
            window: planned.window,
            part_size,
            block_size,
            level,
            is_last: planned.is_last,
        }
    }

    /// Checks the task is self-consistent before any connection is made.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::invalid("task", format!("task {}: {reason}", self.index));
        if self.range.end() > self.source_stat.size {
            return Err(bad(format!(
                "range {} reaches past the end of the {}-byte source",
                self.range, self.source_stat.size
            )));
        }
        if self.is_last != (self.range.end() == self.source_stat.size) {
            return Err(bad(format!(
                "is_last is {} but range {} {} the end of the {}-byte source",
                self.is_last,
                self.range,
                if self.is_last {
                    "does not reach"
                } else {
                    "reaches"
                },
                self.source_stat.size
            )));
        }
        if self.range.is_empty() && self.source_stat.size != 0 {
            return Err(bad(format!("range {} is empty", self.range)));
        }
        crate::assemble::check_part_size(self.part_size)?;
        Tuning {
            block_size: self.block_size,
            part_size: self.part_size,
            task_size: self.block_size.max(Tuning::default().task_size),
            ..Tuning::default()
        }
        .validate()?;
        Ok(())
    }
}

/// What a worker reports for its task: worker -> master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskReport {
    /// The task's index.
    pub index: u32,
    /// The range that was read.
    pub range: ByteRange,
    /// The uploaded parts, ascending.
    pub parts: Vec<UploadedPart>,
    /// Source bytes read (equals the range's length).
    pub bytes_read: u64,
    /// Compressed bytes uploaded, padding included.
    pub compressed_bytes: u64,
    /// CRC-32 of the range's bytes.
    pub crc32: u32,
    /// Number of gzip members written (padding included).
    pub members: u64,
    /// Wall time of the task.
    pub seconds: f64,
}

/// The result of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobReport {
    /// Id of the job.
    pub job_id: String,
    /// The source file.
    pub source: SourceUrl,
    /// Where the object is (for a local store, `s3://` names the bucket directory and key).
    pub destination: String,
    /// Source size in bytes.
    pub source_bytes: u64,
    /// Size of the object.
    pub object_bytes: u64,
    /// `source_bytes / object_bytes`.
    pub ratio: f64,
    /// Number of parts in the object.
    pub parts: u32,
    /// Number of tasks.
    pub tasks: u32,
    /// Target part size of the plan.
    pub part_size: u64,
    /// Compression level.
    pub level: Level,
    /// CRC-32 of the whole source, combined from the tasks' CRCs.
    pub crc32: u32,
    /// Wall time from stat to complete.
    pub seconds: f64,
    /// Source MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Task attempts that failed and were retried.
    pub retries: u32,
    /// Tasks skipped because the run this one resumed had done them (0 for a job run whole).
    #[serde(default)]
    pub resumed_tasks: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{GIB, PartNumber};

    fn task() -> Task {
        Task {
            job_id: "j".into(),
            index: 0,
            source: "sftp://u@h/f".parse().unwrap(),
            source_stat: SourceStat {
                size: 2 * GIB,
                mtime: Some(1),
                is_file: true,
            },
            range: ByteRange::new(0, GIB).unwrap(),
            destination: "s3://bucket/key".parse().unwrap(),
            upload_id: UploadId::new("u").unwrap(),
            window: PartWindow::new(PartNumber::FIRST, 64).unwrap(),
            part_size: 16 << 20,
            block_size: 4 << 20,
            level: Level::default(),
            is_last: false,
        }
    }

    #[test]
    fn valid_task_passes() {
        task().validate().unwrap();
    }

    #[test]
    fn range_past_end_of_file_is_refused() {
        let mut t = task();
        t.range = ByteRange::new(GIB, 3 * GIB).unwrap();
        let err = t.validate().unwrap_err().to_string();
        assert!(err.contains("past the end"), "{err}");
    }

    #[test]
    fn last_flag_must_match_the_range() {
        let mut t = task();
        t.is_last = true;
        assert!(t.validate().unwrap_err().to_string().contains("is_last"));
        let mut t = task();
        t.range = ByteRange::new(GIB, 2 * GIB).unwrap();
        assert!(t.validate().is_err());
        t.is_last = true;
        t.validate().unwrap();
    }

    #[test]
    fn bad_part_and_block_sizes_are_refused() {
        let mut t = task();
        t.part_size = 1;
        assert!(t.validate().is_err());
        let mut t = task();
        t.block_size = 1;
        assert!(t.validate().is_err());
    }

    #[test]
    fn job_request_defaults_and_unknown_fields() {
        let j: JobRequest =
            serde_json::from_str(r#"{"source":"sftp://h/f","destination":"s3://bucket/k"}"#)
                .unwrap();
        assert_eq!(j.level, Level::default());
        assert_eq!(j.tuning, Tuning::default());
        let err = serde_json::from_str::<JobRequest>(
            r#"{"source":"sftp://h/f","destination":"s3://bucket/k","levle":3}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("levle"), "{err}");
        let err = serde_json::from_str::<JobRequest>(
            r#"{"source":"sftp://h/f","destination":"s3://bucket/k","tuning":{"part_sise":1}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("part_sise"), "{err}");
        let err = serde_json::from_str::<JobRequest>(
            r#"{"source":"http://h/f","destination":"s3://bucket/k"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("sftp://"), "{err}");
    }
}
