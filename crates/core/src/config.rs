//! Typed configuration shared by the binaries. The library never reads the environment: binaries
//! build these once and pass them down.

use std::fmt;

use crate::error::{Error, Result};
use crate::url::{ObjectUrl, SourceUrl};

/// A secret (password, private key, passphrase) whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is handed to the protocol that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which sources and destinations a deployment may touch. Both the master and the worker
/// check it before any connection is made (a worker can be invoked directly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Allowed source path prefixes (`/var/log/` allows everything below it). `None`: any path.
    pub source_paths: Option<Vec<String>>,
    /// Allowed destinations as `s3://bucket/prefix` (or `s3://bucket` for a whole bucket).
    /// `None`: any destination.
    pub destinations: Option<Vec<String>>,
}

impl AccessPolicy {
    /// Fails unless `source`'s path is under an allowed prefix. Paths with `.` or `..`
    /// components, or repeated slashes, are refused outright: they could escape a prefix.
    pub fn check_source(&self, source: &SourceUrl) -> Result<()> {
        let path = &source.path;
        let normal = path.starts_with('/')
            && !path.contains("//")
            && !path.split('/').any(|c| c == "." || c == "..");
        if !normal {
            return Err(Error::NotAllowed {
                what: "source path",
                value: path.clone(),
                reason: "paths must be absolute, without '.', '..' or empty components".into(),
            });
        }
        let Some(prefixes) = &self.source_paths else {
            return Ok(());
        };
        if prefixes.iter().any(|p| under_prefix(path, p)) {
            Ok(())
        } else {
            Err(Error::NotAllowed {
                what: "source path",
                value: path.clone(),
                reason: format!("allowed source paths are {prefixes:?}"),
            })
        }
    }

    /// Fails unless `dest` is inside an allowed bucket and prefix.
    pub fn check_destination(&self, dest: &ObjectUrl) -> Result<()> {
        let Some(allowed) = &self.destinations else {
            return Ok(());
        };
        let ok = allowed.iter().any(|a| {
            let a = a.strip_prefix("s3://").unwrap_or(a);
            let (bucket, prefix) = a.split_once('/').unwrap_or((a, ""));
            bucket == dest.bucket && under_prefix(&dest.key, prefix)
        });
        if ok {
            Ok(())
        } else {
            Err(Error::NotAllowed {
                what: "destination",
                value: dest.to_string(),
                reason: format!("allowed destinations are {allowed:?}"),
            })
        }
    }
}

/// Whether `path` is `prefix` or lies below it; a prefix without a trailing slash matches
/// whole components only (`/data` allows `/data/x`, not `/database`).
fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() || prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn access_policy_limits_sources_and_destinations() {
        let p = AccessPolicy {
            source_paths: Some(vec!["/var/log".into(), "/exports/".into()]),
            destinations: Some(vec!["s3://archive/logs/".into(), "s3://whole".into()]),
        };
        let src = |s: &str| s.parse::<SourceUrl>().unwrap();
        let dst = |s: &str| s.parse::<ObjectUrl>().unwrap();
        assert!(p.check_source(&src("sftp://h/var/log/a.log")).is_ok());
        assert!(p.check_source(&src("sftp://h/exports/x")).is_ok());
        assert!(p.check_source(&src("sftp://h/var/logs/a")).is_err());
        assert!(
            p.check_source(&src("sftp://h/var/log/../../etc/shadow"))
                .is_err()
        );
        assert!(p.check_source(&src("sftp://h/var/log//a")).is_err());
        assert!(p.check_source(&src("sftp://h/etc/passwd")).is_err());
        assert!(p.check_destination(&dst("s3://archive/logs/a.gz")).is_ok());
        assert!(
            p.check_destination(&dst("s3://archive/other/a.gz"))
                .is_err()
        );
        assert!(p.check_destination(&dst("s3://whole/any/key")).is_ok());
        assert!(p.check_destination(&dst("s3://wholesale/k")).is_err());
        let err = p
            .check_source(&src("sftp://h/etc/passwd"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/passwd") && err.contains("/var/log"),
            "{err}"
        );
        let open = AccessPolicy::default();
        assert!(open.check_source(&src("sftp://h/etc/passwd")).is_ok());
        assert!(open.check_source(&src("sftp://h/a/../b")).is_err());
    }
}
