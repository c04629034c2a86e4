//! The state machine that runs jobs longer than the master's timeout
//! (`infra/statemachine.asl.json`, deployed by `infra/template.yaml`): a DISTRIBUTED Map over
//! the indices of the tasks to run, each item a worker that reads its task from the job record
//! and records its report there; then the master completes the job from the record; a Catch
//! leads to the master's failure step. The master hands a job to it with [`StateMachine::start`].

use gzship_core::ObjectUrl;
use serde::{Deserialize, Serialize};

use crate::error::HandlerError;

/// The longest execution name Step Functions accepts.
pub const MAX_EXECUTION_NAME: usize = 80;

/// StartExecution errors that another attempt can fix besides throttling and 5xx.
const RETRYABLE_CODES: &[&str] = &["ThrottlingException", "ServiceUnavailable"];

/// An execution's input: the job record and the tasks to run. About 6 bytes a task: 10,000
/// tasks stay far below Step Functions' 256 KiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionInput {
    /// The job record's URL.
    pub record: ObjectUrl,
    /// Indices of the tasks to run.
    pub tasks: Vec<u32>,
}

/// A deployed state machine and a client to start it.
#[derive(Debug, Clone)]
pub struct StateMachine {
    client: aws_sdk_sfn::Client,
    arn: String,
}

impl StateMachine {
    /// The state machine `arn`, started through `client`.
    pub fn new(client: aws_sdk_sfn::Client, arn: impl Into<String>) -> StateMachine {
        StateMachine {
            client,
            arn: arn.into(),
        }
    }

    /// Its ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Starts an execution named `name` over `input`; returns its ARN.
    pub async fn start(&self, name: &str, input: &ExecutionInput) -> Result<String, HandlerError> {
        let fail =
            |retryable: bool, source: gzship_core::error::BoxError| HandlerError::StartExecution {
                state_machine: self.arn.clone(),
                retryable,
                source,
            };
        let input = serde_json::to_string(input).map_err(|e| fail(false, e.into()))?;
        let started = self
            .client
            .start_execution()
            .state_machine_arn(&self.arn)
            .name(name)
            .input(input)
            .send()
            .await
            .map_err(|e| {
                let (retryable, source) = gzship_core::aws_error::classify(e, RETRYABLE_CODES);
                fail(retryable, source)
            })?;
        Ok(started.execution_arn().to_owned())
    }
}

/// An execution name for job `job_id`: its characters other than letters, digits, `-` and `_`
/// replaced by `_`, then `suffix` (a resume's, to differ from the first execution), cut from
/// the front to [`MAX_EXECUTION_NAME`] (a job id ends in its unique part).
pub fn execution_name(job_id: &str, suffix: &str) -> String {
    let clean: String = job_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .chain(suffix.chars())
        .collect();
    let skip = clean.len().saturating_sub(MAX_EXECUTION_NAME);
    clean[skip..].to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn execution_names_are_legal_and_keep_the_unique_end() {
        assert_eq!(
            execution_name("access.log.gz-1764488400123-9f2c", ""),
            "access_log_gz-1764488400123-9f2c"
        );
        let long = format!("{}-1764488400123-9f2c", "x".repeat(100));
        let name = execution_name(&long, "-r1764488400999");
        assert_eq!(name.len(), MAX_EXECUTION_NAME);
        assert!(
            name.ends_with("-1764488400123-9f2c-r1764488400999"),
            "{name}"
        );
    }

    #[test]
    fn ten_thousand_tasks_fit_an_execution_input() {
        let input = ExecutionInput {
            record: format!("s3://{}/.gzship/jobs/{}", "b".repeat(63), "j".repeat(120))
                .parse()
                .unwrap(),
            tasks: (0..10_000).collect(),
        };
        let json = serde_json::to_string(&input).unwrap();
        assert!(json.len() < 256 * 1024 / 4, "{} bytes", json.len());
    }
}
