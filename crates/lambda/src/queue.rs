//! The arrival queue: where a scan sends one job per new file (SQS SendMessage). The queue's
//! event source mapping runs the master on each message, so files ship one message each, with
//! the queue's backpressure, retries and dead-letter queue.

use gzship_core::wire::JobRequest;

use crate::error::HandlerError;

/// SQS error codes worth another attempt.
const RETRYABLE_CODES: &[&str] = &["RequestThrottled", "ThrottlingException", "KmsThrottled"];

/// The arrival queue (`GZSHIP_ARRIVAL_QUEUE`).
#[derive(Debug, Clone)]
pub struct ArrivalQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl ArrivalQueue {
    /// The queue at `url`, through `client`.
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> ArrivalQueue {
        ArrivalQueue {
            client,
            url: url.into(),
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `job` as one message (the job JSON the master accepts); returns its message id.
    pub async fn send(&self, job: &JobRequest) -> Result<String, HandlerError> {
        let fail = |retryable: bool, source: gzship_core::error::BoxError| HandlerError::Enqueue {
            queue: self.url.clone(),
            destination: job.destination.to_string(),
            retryable,
            source,
        };
        let body = serde_json::to_string(job).map_err(|e| fail(false, e.into()))?;
        let sent = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| {
                let (retryable, source) = gzship_core::aws_error::classify(e, RETRYABLE_CODES);
                fail(retryable, source)
            })?;
        Ok(sent.message_id().unwrap_or_default().to_owned())
    }
}
