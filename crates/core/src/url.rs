//! The two kinds of location: [`SourceUrl`] (`sftp://[user@]host[:port]/path`) and
//! [`ObjectUrl`] (`s3://bucket/key`). Both parse strictly, print in a form that parses back to
//! the same value, and travel on the wire as that string.
//!
//! A source's user and path are percent-decoded (`a%20b` is `a b`; a malformed escape is an
//! error) and percent-encoded when printed; an object's key is taken as it is, as S3 does.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where the source file lives: `sftp://[user@]host[:port]/path`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceUrl {
    /// Login name; `None` means "the configured default user".
    pub user: Option<String>,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port, 22 unless given.
    pub port: u16,
    /// Absolute path of the file on the server.
    pub path: String,
}

impl SourceUrl {
    /// The default SSH port.
    pub const DEFAULT_PORT: u16 = 22;

    /// `host:port` as a connect address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for SourceUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidUrl {
            url: s.to_owned(),
            reason,
        };
        let rest = s.strip_prefix("sftp://").ok_or_else(|| {
            bad("a source must start with sftp:// (sftp://[user@]host[:port]/path)".into())
        })?;
        let slash = rest
            .find('/')
            .ok_or_else(|| bad("the path is missing (sftp://[user@]host[:port]/path)".into()))?;
        let (authority, path) = rest.split_at(slash);
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, hp)) => {
                if u.is_empty() {
                    return Err(bad("the user before '@' is empty".into()));
                }
                (Some(percent_decode(u).map_err(bad)?), hp)
            }
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).map_err(bad)?;
        let path = percent_decode(path).map_err(bad)?;
        if path == "/" || path.ends_with('/') {
            return Err(bad(format!(
                "the path {path:?} names a directory, not a file"
            )));
        }
        Ok(SourceUrl {
            user,
            host,
            port: port.unwrap_or(Self::DEFAULT_PORT),
            path,
        })
    }
}

impl TryFrom<String> for SourceUrl {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<SourceUrl> for String {
    fn from(u: SourceUrl) -> String {
        u.to_string()
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sftp://")?;
        if let Some(user) = &self.user {
            write!(f, "{}@", utf8_percent_encode(user, USER))?;
        }
        write!(
            f,
            "{}{}",
            self.authority(),
            utf8_percent_encode(&self.path, PATH)
        )
    }
}

impl fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Where the object goes: `s3://bucket/key`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectUrl {
    /// Bucket name.
    pub bucket: String,
    /// Object key (no leading slash).
    pub key: String,
}

impl ObjectUrl {
    /// The last component of the key: `app.log.gz` of `s3://b/logs/app.log.gz`.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl FromStr for ObjectUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidUrl {
            url: s.to_owned(),
            reason,
        };
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("a destination must start with s3:// (s3://bucket/key)".into()))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| bad("the key is missing (s3://bucket/key)".into()))?;
        validate_bucket(bucket).map_err(bad)?;
        if key.is_empty() || key.ends_with('/') {
            return Err(bad(format!(
                "the key {key:?} is empty or ends with '/': name the object"
            )));
        }
        if key.len() > 1024 {
            return Err(bad(format!(
                "the key is {} bytes long; S3 allows 1024",
                key.len()
            )));
        }
        Ok(ObjectUrl {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

fn validate_bucket(bucket: &str) -> std::result::Result<(), String> {
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ok_ends = bucket
        .bytes()
        .next()
        .zip(bucket.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if !(3..=63).contains(&bucket.len()) || !ok_chars || !ok_ends {
        return Err(format!(
            "the bucket {bucket:?} is not a valid S3 bucket name \
             (3-63 characters: lowercase letters, digits, '.' and '-')"
        ));
    }
    Ok(())
}

impl TryFrom<String> for ObjectUrl {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<ObjectUrl> for String {
    fn from(u: ObjectUrl) -> String {
        u.to_string()
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl fmt::Debug for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

fn split_host_port(hostport: &str) -> std::result::Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 host lacks its closing ']'".to_owned())?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {p:?} after the IPv6 host"))?,
            ),
        };
        (host, port)
    } else {
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        // Printed, a host with a ':' is bracketed; unbracketed, it is ambiguous (`fe80::1`).
        if host.contains(':') {
            return Err(format!(
                "the host {host:?} has a ':': write an IPv6 address in brackets ([::1]:22)"
            ));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    // Brackets only delimit an IPv6 address; inside a host they would not print back.
    if host.contains(['[', ']']) {
        return Err(format!("the host {host:?} has a '[' or ']'"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("the port {p:?} is not a number in 1..=65535"))
        })
        .transpose()?;
    Ok((host.to_owned(), port))
}

/// Percent-decodes `s` to UTF-8. The `percent-encoding` crate passes a malformed escape
/// through as it is; a URL with one is refused instead, so that a typo does not name another
/// file.
fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let bad = (0..bytes.len()).find(|&i| {
        bytes[i] == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if let Some(i) = bad {
        return Err(format!("bad percent escape at byte {i} of {s:?}"));
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// What a user name keeps as it is: letters, digits and RFC 3986's other unreserved
/// characters (`-._~`); everything else is escaped (`@` and `:` included), non-ASCII as UTF-8.
const USER: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a path keeps as it is: a user name's, plus the separators `/` and the sub-delimiters
/// common in file names (`+,=:`).
const PATH: &AsciiSet = &USER
    .remove(b'/')
    .remove(b'+')
    .remove(b',')
    .remove(b'=')
    .remove(b':');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sftp_urls() {
        let u: SourceUrl = "sftp://alice@example.com:2222/var/log/app.log"
            .parse()
            .unwrap();
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, 2222);
        assert_eq!(u.path, "/var/log/app.log");
        assert_eq!(
            u.to_string(),
            "sftp://alice@example.com:2222/var/log/app.log"
        );

        let u: SourceUrl = "sftp://[::1]/data/a%20b.gz".parse().unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 22);
        assert_eq!(u.path, "/data/a b.gz");
        assert_eq!(u.authority(), "[::1]:22");
        assert_eq!(u.to_string().parse::<SourceUrl>().unwrap(), u);
    }

    #[test]
    fn sftp_url_errors_name_the_bad_part() {
        let err = |s: &str| s.parse::<SourceUrl>().unwrap_err().to_string();
        assert!(err("ssh://h/x").contains("sftp://"));
        assert!(err("sftp://host").contains("path is missing"));
        assert!(err("sftp://host:99999/x").contains("port"));
        assert!(err("sftp://host:0/x").contains("port"));
        assert!(err("sftp://@host/x").contains("user"));
        assert!(err("sftp://:22/x").contains("host is empty"));
        assert!(err("sftp://h/dir/").contains("directory"));
        assert!(err("sftp://h/%zz").contains("percent"));
    }

    #[test]
    fn hosts_that_would_not_print_back_are_refused() {
        // Found by the `urls` fuzz target: this parsed as host "h:1" and printed as
        // "sftp://[h:1]:22/x"; "sftp://fe80::1/x" parsed as host "fe80:" and port 1.
        for url in [
            "sftp://h:1:22/x",
            "sftp://fe80::1/x",
            "sftp://Yfe80::1%0eth0]:22/x",
        ] {
            let msg = url.parse::<SourceUrl>().unwrap_err().to_string();
            assert!(msg.contains("brackets"), "{url}: {msg}");
        }
        // And a host with a bracket inside ("[1" printed as "sftp://[1:22/x").
        for url in ["sftp://[[1]/x", "sftp://a]b/x", "sftp://[a[b]:22/x"] {
            let msg = url.parse::<SourceUrl>().unwrap_err().to_string();
            assert!(msg.contains("'[' or ']'"), "{url}: {msg}");
        }
        let u: SourceUrl = "sftp://[fe80::1]:2222/x".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fe80::1", 2222));
        assert_eq!(u.to_string().parse::<SourceUrl>().unwrap(), u);
    }

    #[test]
    fn parses_s3_urls() {
        let u: ObjectUrl = "s3://my-bucket/logs/2026/app.log.gz".parse().unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.key, "logs/2026/app.log.gz");
        assert_eq!(u.to_string(), "s3://my-bucket/logs/2026/app.log.gz");
        assert_eq!(u.file_name(), "app.log.gz");
        let err = |s: &str| s.parse::<ObjectUrl>().unwrap_err().to_string();
        assert!(err("https://b/k").contains("s3://"));
        assert!(err("s3://bucket").contains("key is missing"));
        assert!(err("s3://bucket/").contains("key"));
        assert!(err("s3://Bad_Bucket/k").contains("bucket"));
        assert!(err("s3://ab/k").contains("bucket"));
    }

    #[test]
    fn sftp_urls_escape_what_a_url_cannot_hold() {
        let cases = [
            // (URL as printed, user, path)
            ("sftp://h:22/data/a%20b.gz", None, "/data/a b.gz"),
            (
                "sftp://h:22/data/caf%C3%A9/%E6%97%A5%E5%BF%97.log",
                None,
                "/data/café/日志.log",
            ),
            ("sftp://h:22/data/100%25.log", None, "/data/100%.log"),
            ("sftp://h:22/data/a%3Fb%23c.log", None, "/data/a?b#c.log"),
            (
                "sftp://h:22/keep/-._~+,=:/x.log",
                None,
                "/keep/-._~+,=:/x.log",
            ),
            ("sftp://alice%40corp@h:22/f", Some("alice@corp"), "/f"),
            ("sftp://a%3Ab%20c@h:22/f", Some("a:b c"), "/f"),
            ("sftp://J%C3%BCrgen@h:22/f", Some("Jürgen"), "/f"),
        ];
        for (printed, user, path) in cases {
            let u: SourceUrl = printed.parse().unwrap();
            assert_eq!(u.user.as_deref(), user, "{printed}");
            assert_eq!(u.path, path, "{printed}");
            assert_eq!(u.to_string(), printed);
            let json = serde_json::to_string(&u).unwrap();
            assert_eq!(serde_json::from_str::<SourceUrl>(&json).unwrap(), u);
        }
        // What need not be escaped may be, in either case; and the last '@' ends the user.
        let u: SourceUrl = "sftp://h/data/%61%2fb".parse().unwrap();
        assert_eq!(u.path, "/data/a/b");
        let u: SourceUrl = "sftp://alice@corp@h/f".parse().unwrap();
        assert_eq!(u.user.as_deref(), Some("alice@corp"));
        assert_eq!(u.to_string(), "sftp://alice%40corp@h:22/f");
    }

    #[test]
    fn bad_percent_escapes_are_refused_with_their_place() {
        let err = |s: &str| s.parse::<SourceUrl>().unwrap_err().to_string();
        for (url, at) in [
            ("sftp://h/%zz", "byte 1 of \"/%zz\""),
            ("sftp://h/a%4", "byte 2 of \"/a%4\""),
            ("sftp://h/a%", "byte 2 of \"/a%\""),
            ("sftp://h/a%+1", "byte 2 of \"/a%+1\""),
            ("sftp://h/a%%41", "byte 2 of \"/a%%41\""),
            ("sftp://al%g1ce@h/f", "byte 2 of \"al%g1ce\""),
        ] {
            let msg = err(url);
            assert!(msg.contains("bad percent escape"), "{url}: {msg}");
            assert!(msg.contains(at), "{url}: {msg}");
        }
        let msg = err("sftp://h/a%FF");
        assert!(msg.contains("does not decode to UTF-8"), "{msg}");
    }

    proptest::proptest! {
        /// Any user and any file path print as ASCII to a URL that parses back to them.
        #[test]
        fn sftp_urls_round_trip(user in "\\PC{1,12}", path in "(/[^/\\p{C}]{1,8}){1,3}") {
            let url = SourceUrl {
                user: Some(user),
                host: "h".into(),
                port: 22,
                path,
            };
            let printed = url.to_string();
            proptest::prop_assert!(printed.is_ascii(), "{}", printed);
            let back: SourceUrl = printed.parse().map_err(|e| {
                proptest::test_runner::TestCaseError::fail(format!("{printed}: {e}"))
            })?;
            proptest::prop_assert_eq!(back, url);
        }
    }
}
