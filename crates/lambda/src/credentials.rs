//! The SSH credential: from AWS Secrets Manager in Lambda (fetched on first use, then kept for
//! the life of the execution environment), or from a key file for local runs and tests.
//!
//! The secret's `SecretString` is one of:
//! - `{"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n...", "passphrase": "..."}`
//!   (`passphrase` optional);
//! - `{"password": "..."}`;
//! - the text of an OpenSSH or PEM private key file itself (unencrypted).
//!
//! Errors never include the secret's content.

use std::fmt;
use std::path::PathBuf;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use gzship_core::source::sftp::SshAuth;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::error::HandlerError;

/// Where the credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A Secrets Manager secret (name or ARN): `GZSHIP_SSH_SECRET`.
    SecretsManager(String),
    /// An OpenSSH private key file (unencrypted): `GZSHIP_IDENTITY`. For local runs.
    KeyFile(PathBuf),
}

/// The credential, loaded once. Share one per execution environment.
pub struct Credentials {
    source: CredentialSource,
    client: Option<aws_sdk_secretsmanager::Client>,
    cached: OnceCell<SshAuth>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("source", &self.source)
            .field("loaded", &self.cached.initialized())
            .finish()
    }
}

impl Credentials {
    /// Credentials from `source`; `client` is needed for [`CredentialSource::SecretsManager`].
    pub fn new(source: CredentialSource, client: Option<aws_sdk_secretsmanager::Client>) -> Self {
        Credentials {
            source,
            client,
            cached: OnceCell::new(),
        }
    }

    /// Credentials given directly (tests).
    pub fn fixed(auth: SshAuth) -> Self {
        Credentials {
            source: CredentialSource::KeyFile(PathBuf::new()),
            client: None,
            cached: OnceCell::new_with(Some(auth)),
        }
    }

    /// The credential, fetched on the first call. A failed fetch is not cached: the next
    /// invocation tries again.
    pub async fn get(&self) -> Result<SshAuth, HandlerError> {
        self.cached.get_or_try_init(|| self.load()).await.cloned()
    }

    async fn load(&self) -> Result<SshAuth, HandlerError> {
        match &self.source {
            CredentialSource::KeyFile(path) => Ok(SshAuth::private_key_file(path, None)?),
            CredentialSource::SecretsManager(secret_id) => {
                let client = self.client.as_ref().ok_or_else(|| HandlerError::Config {
                    name: "GZSHIP_SSH_SECRET",
                    reason: "no Secrets Manager client was built".into(),
                })?;
                let out = client
                    .get_secret_value()
                    .secret_id(secret_id)
                    .send()
                    .await
                    .map_err(|e| HandlerError::SecretFetch {
                        secret_id: secret_id.clone(),
                        retryable: is_retryable(&e),
                        source: Box::new(e),
                    })?;
                let text = out
                    .secret_string()
                    .ok_or_else(|| HandlerError::SecretFormat {
                        secret_id: secret_id.clone(),
                        reason: "it has no SecretString (binary secrets are not supported)".into(),
                    })?;
                tracing::info!(secret = %secret_id, "ssh credential loaded from secrets manager");
                parse_secret(secret_id, text)
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretJson {
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    passphrase: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Parses a secret's text (see the module docs).
pub fn parse_secret(secret_id: &str, text: &str) -> Result<SshAuth, HandlerError> {
    let bad = |reason: String| HandlerError::SecretFormat {
        secret_id: secret_id.to_owned(),
        reason,
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with("-----BEGIN") {
        return Ok(SshAuth::private_key(text, None));
    }
    // serde's messages can quote values: report only where the JSON is wrong.
    let json: SecretJson = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "it is neither a private key file nor JSON with private_key (and passphrase) or \
             password (error at line {} column {}; unknown fields are refused)",
            e.line(),
            e.column()
        ))
    })?;
    match json {
        SecretJson {
            private_key: Some(key),
            password: None,
            passphrase,
        } => Ok(SshAuth::private_key(key, passphrase.as_deref())),
        SecretJson {
            private_key: None,
            password: Some(password),
            passphrase: None,
        } => Ok(SshAuth::password(password)),
        SecretJson {
            private_key: Some(_),
            password: Some(_),
            ..
        } => Err(bad("it sets both private_key and password: keep one".into())),
        SecretJson {
            private_key: None, ..
        } => Err(bad(
            "it sets neither private_key nor password (a passphrase goes with private_key)".into(),
        )),
    }
}

fn is_retryable<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    gzship_core::aws_error::is_retryable(err, &["ThrottlingException", "InternalServiceError"])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY: &str =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn secrets_in_every_accepted_form() {
        let json = serde_json::json!({"private_key": KEY, "passphrase": "pw"}).to_string();
        match parse_secret("s", &json).unwrap() {
            SshAuth::PrivateKey { key, passphrase } => {
                assert_eq!(key.expose(), KEY);
                assert_eq!(passphrase.unwrap().expose(), "pw");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_secret("s", r#"{"password":"hunter2"}"#).unwrap(),
            SshAuth::Password(_)
        ));
        assert!(matches!(
            parse_secret("s", KEY).unwrap(),
            SshAuth::PrivateKey {
                passphrase: None,
                ..
            }
        ));
    }

    #[test]
    fn bad_secrets_are_refused_without_showing_them() {
        for text in [
            r#"{"password":"hunter2","private_key":"hunter2"}"#,
            r#"{"passphrase":"hunter2"}"#,
            r#"{"pasword":"hunter2"}"#,
            r#"{"password": ["hunter2"]}"#,
            "hunter2",
        ] {
            let err = parse_secret("gzship/ssh", text).unwrap_err();
            let msg = gzship_core::error::chain(&err);
            assert!(msg.contains("gzship/ssh"), "{msg}");
            assert!(!msg.contains("hunter2"), "the secret leaked: {msg}");
            assert!(!err.is_retryable());
        }
    }
}
