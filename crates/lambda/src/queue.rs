//! The SQS queues the master sends to: the arrival queue, where a scan sends one job per new
//! file (the queue's event source mapping runs the master on each message, so files ship one
//! message each, with the queue's backpressure, retries and dead-letter queue); and that
//! dead-letter queue, where the master moves a message at once when its job fails for good
//! (a `Fatal.*` error), so that SQS does not deliver it again to fail the same way.

use aws_sdk_sqs::types::MessageAttributeValue;
use gzship_core::types::prefix_within;
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
        send_message(&self.client, &self.url, body, Vec::new())
            .await
            .map_err(|(retryable, source)| fail(retryable, source))
    }
}

/// The most bytes of an error's text a dead letter carries (a message and its attributes may
/// hold 256 KiB; the body, which is the original message, keeps the rest).
pub const DEAD_LETTER_ERROR_BYTES: usize = 4096;

/// The dead-letter queue of the arrival queue (`GZSHIP_DEAD_LETTER_QUEUE`).
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl DeadLetterQueue {
    /// The queue at `url`, through `client`.
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> DeadLetterQueue {
        DeadLetterQueue {
            client,
            url: url.into(),
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the message `message_id` (its `body` unchanged, so that it can be moved back to
    /// the arrival queue once the cause is fixed) with why its job failed, as the message
    /// attributes `gzship-error-type`, `gzship-error` (at most [`DEAD_LETTER_ERROR_BYTES`]) and
    /// `gzship-message-id`. Returns the new message's id.
    pub async fn send(
        &self,
        message_id: &str,
        body: &str,
        error: &HandlerError,
    ) -> Result<String, HandlerError> {
        let text = gzship_core::error::chain(error);
        let attributes = [
            ("gzship-error-type", error.error_type()),
            (
                "gzship-error",
                // Replaced, then cut: a replacement character takes 3 bytes where the
                // character it replaces took 1.
                prefix_within(&attribute_text(&text), DEAD_LETTER_ERROR_BYTES).to_owned(),
            ),
            ("gzship-message-id", message_id.to_owned()),
        ];
        send_message(&self.client, &self.url, body.to_owned(), attributes.into())
            .await
            .map_err(|(retryable, source)| HandlerError::DeadLetter {
                queue: self.url.clone(),
                message_id: message_id.to_owned(),
                retryable,
                source,
            })
    }
}

/// SendMessage of `body` with string `attributes`; on failure, whether another attempt can help
/// and the SDK error with its causes.
async fn send_message(
    client: &aws_sdk_sqs::Client,
    url: &str,
    body: String,
    attributes: Vec<(&str, String)>,
) -> Result<String, (bool, gzship_core::error::BoxError)> {
    let mut request = client.send_message().queue_url(url).message_body(body);
    // SQS refuses empty attribute values.
    for (name, value) in attributes.into_iter().filter(|(_, v)| !v.is_empty()) {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(|e| (false, e.into()))?;
        request = request.message_attributes(name, value);
    }
    let sent = request
        .send()
        .await
        .map_err(|e| gzship_core::aws_error::classify(e, RETRYABLE_CODES))?;
    Ok(sent.message_id().unwrap_or_default().to_owned())
}

/// `text` with the characters SQS refuses in a message attribute (control characters but
/// tab, newline and carriage return; U+FFFE and U+FFFF) replaced by U+FFFD, so that an error
/// naming an odd file still reaches the dead-letter queue.
fn attribute_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::attribute_text;

    #[test]
    fn attribute_text_has_only_what_sqs_takes() {
        assert_eq!(attribute_text("a\tb\nc\rd"), "a\tb\nc\rd");
        assert_eq!(
            attribute_text("bad\u{1}name\u{FFFF}"),
            "bad\u{FFFD}name\u{FFFD}"
        );
        assert_eq!(attribute_text("ü/路径"), "ü/路径");
    }
}
