//! What the AWS SDK adapters (S3, Lambda, Secrets Manager) share: one classification of SDK
//! errors into "retry can help" or not, by error kind, HTTP status and error code, never by
//! message text.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::BoxError;

/// Whether sending the same request again can succeed: timeouts, broken or unparseable
/// responses, connection failures other than a request the connector refused, 5xx, 429, and
/// the service's own throttling and transient `retryable_codes`.
pub fn is_retryable<E: ProvideErrorMetadata>(err: &SdkError<E>, retryable_codes: &[&str]) -> bool {
    match err {
        // Timeouts and broken or unparseable responses are transient by nature.
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        // Connection refused/reset, DNS, TLS handshake: the next attempt may reach the server;
        // a "user" failure (a bad request the connector refused) will not change.
        SdkError::DispatchFailure(f) => !f.is_user(),
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            status >= 500
                || status == 429
                || e.err().code().is_some_and(|c| retryable_codes.contains(&c))
        }
        // Construction failures (a bad input) and anything the SDK adds later.
        _ => false,
    }
}

/// A failed SDK call as the adapters report it: whether sending it again can help
/// ([`is_retryable`] with `retryable_codes`), and the error as a message with its whole chain
/// of causes (the SDK's own `Display` says only "service error").
pub fn classify<E>(err: SdkError<E>, retryable_codes: &[&str]) -> (bool, BoxError)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retryable = is_retryable(&err, retryable_codes);
    (retryable, DisplayErrorContext(err).to_string().into())
}
