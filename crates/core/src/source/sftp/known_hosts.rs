//! OpenSSH known_hosts entries, parsed from text, matched as `ssh` does (sshd(8) "SSH_KNOWN_HOSTS
//! FILE FORMAT"): comma-separated host patterns with `*`/`?` wildcards and `!` negation,
//! `[host]:port` names for ports other than 22, hashed `|1|salt|hash` names (HMAC-SHA1), and the
//! `@revoked` marker. `@cert-authority` lines are skipped: certificates are not accepted.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use russh::keys::PublicKey;
use sha1::Sha1;

use crate::error::{Error, Result};

/// Parsed known_hosts entries.
#[derive(Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    line: usize,
    revoked: bool,
    hosts: HostPatterns,
    key: PublicKey,
}

#[derive(Clone)]
enum HostPatterns {
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    // (negated, pattern)
    List(Vec<(bool, String)>),
}

/// What the entries say about a host and the key it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An entry for the host lists this key.
    Trusted,
    /// The key is marked `@revoked` on this line.
    Revoked {
        /// 1-based line number.
        line: usize,
    },
    /// The host is listed, but with other keys (on these lines).
    Mismatch {
        /// 1-based line numbers.
        lines: Vec<usize>,
    },
    /// The host is not listed.
    Unknown,
}

impl KnownHosts {
    /// Parses known_hosts text. Like `ssh`, it skips lines it cannot use (comments, unknown key
    /// types, `@cert-authority`), so one odd line does not lock the user out.
    pub fn parse(text: &str) -> KnownHosts {
        let entries = text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| parse_line(i + 1, line))
            .collect();
        KnownHosts { entries }
    }

    /// Reads and parses the known_hosts file at `path`.
    pub fn from_file(path: &Path) -> Result<KnownHosts> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("read known_hosts file", path, e))?;
        Ok(Self::parse(&text))
    }

    /// Number of usable entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is usable.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks `host` (as dialled) and `port` up, and compares `key`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = if port == 22 {
            host.to_owned()
        } else {
            format!("[{host}]:{port}")
        };
        let mut mismatched = Vec::new();
        let mut trusted = false;
        for e in self.entries.iter().filter(|e| e.hosts.matches(&name)) {
            let same = e.key.key_data() == key.key_data();
            if e.revoked {
                if same {
                    return Verdict::Revoked { line: e.line };
                }
            } else if same {
                trusted = true;
            } else {
                mismatched.push(e.line);
            }
        }
        match (trusted, mismatched.is_empty()) {
            (true, _) => Verdict::Trusted,
            (false, false) => Verdict::Mismatch { lines: mismatched },
            (false, true) => Verdict::Unknown,
        }
    }
}

impl fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KnownHosts({} entries)", self.entries.len())
    }
}

fn parse_line(line_no: usize, line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            // Certificate authorities vouch for certificates, which are not accepted.
            _ => return None,
        }
        first = fields.next()?;
    }
    let algorithm = fields.next()?;
    let key_b64 = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{algorithm} {key_b64}")).ok()?;
    let hosts = if let Some(hashed) = first.strip_prefix("|1|") {
        let (salt, hash) = hashed.split_once('|')?;
        HostPatterns::Hashed {
            salt: STANDARD.decode(salt).ok()?,
            hash: STANDARD.decode(hash).ok()?,
        }
    } else {
        HostPatterns::List(
            first
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| match p.strip_prefix('!') {
                    Some(p) => (true, p.to_ascii_lowercase()),
                    None => (false, p.to_ascii_lowercase()),
                })
                .collect(),
        )
    };
    Some(Entry {
        line: line_no,
        revoked,
        hosts,
        key,
    })
}

impl HostPatterns {
    fn matches(&self, name: &str) -> bool {
        match self {
            HostPatterns::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            HostPatterns::List(patterns) => {
                let name = name.to_ascii_lowercase();
                let mut matched = false;
                for (negated, pattern) in patterns {
                    if glob(pattern.as_bytes(), name.as_bytes()) {
                        if *negated {
                            // A matching negation rejects the line, whatever else matches.
                            return false;
                        }
                        matched = true;
                    }
                }
                matched
            }
        }
    }
}

/// `*` (any run) and `?` (any one character) wildcards.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIYZ+pC2zPgAh7NnU2NH2j5NfoD+eJM4lfPQS5sTpRyO";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICA4b4pdAJPNwAUb3QsbaeScyzf5gqVu8JjlvupWm9Nu";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn plain_and_bracketed_names() {
        let kh = KnownHosts::parse(&format!(
            "# comment\nexample.com,10.0.0.1 {KEY_A}\n[example.com]:2222 {KEY_B}\n"
        ));
        assert_eq!(kh.len(), 2);
        assert_eq!(kh.check("example.com", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("10.0.0.1", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("example.com", 2222, &key(KEY_B)), Verdict::Trusted);
        assert_eq!(
            kh.check("example.com", 2222, &key(KEY_A)),
            Verdict::Mismatch { lines: vec![3] }
        );
        assert_eq!(kh.check("other", 22, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(kh.check("example.com", 2200, &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn hashed_names() {
        // What `ssh-keygen -H` writes for "[127.0.0.1]:2222" with this salt.
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} {KEY_A}",
            STANDARD.encode(salt),
            STANDARD.encode(hash)
        );
        let kh = KnownHosts::parse(&line);
        assert_eq!(kh.check("127.0.0.1", 2222, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("127.0.0.1", 22, &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let kh = KnownHosts::parse(&format!(
            "*.example.com,!bad.example.com {KEY_A}\n@revoked * {KEY_B}\n@cert-authority * {KEY_A}\n"
        ));
        assert_eq!(kh.len(), 2);
        assert_eq!(kh.check("a.example.com", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(
            kh.check("bad.example.com", 22, &key(KEY_A)),
            Verdict::Unknown
        );
        assert_eq!(
            kh.check("a.example.com", 22, &key(KEY_B)),
            Verdict::Revoked { line: 2 }
        );
        assert!(glob(b"h?st*", b"host-1"));
        assert!(!glob(b"h?st", b"hoost"));
    }
}
