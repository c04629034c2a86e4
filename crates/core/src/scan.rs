//! Scans: every new, complete file of a remote directory, each shipped to its own object. The
//! CLI (`gzship run 'sftp://u@h/exports/*.csv' s3://b/p/`) and the Lambda master's scan event
//! pick files by the same rules, here.
//!
//! - A scan's source is an `sftp://` URL whose last path segment is a [`Glob`] (`*.csv`).
//! - Its destination is a [`Destinations`] pattern: `s3://bucket/prefix/` ships each file to
//!   `prefix/<name>.gz`, `s3://bucket/p/{name}.gz` says where `{name}` goes.
//! - [`scan`] lists the directory and sorts each matching entry into a [`Picked`] file or a
//!   [`Skipped`] one, with the reason. A file is picked when it is a regular file (or a symlink
//!   to one), allowed by the access policy, has not been modified for [`ScanRules::stable_for`],
//!   is not shipped already (its destination records the same source size and mtime), can be
//!   opened for reading and has the same size and mtime at a second stat. At most
//!   [`ScanRules::max_files`] files are picked; the rest wait for the next scan.
//!
//! A scan does not claim what it picks: the CLI's jobs claim their destination when they start
//! ([`crate::job::JobRef::claim`]) and the Lambda master claims each file before it enqueues it
//! ([`claim_file`]), so two scans that overlap never ship one file twice at the same time.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::AccessPolicy;
use crate::error::{Error, Result, chain};
use crate::source::{EntryKind, Source, SourceStat};
use crate::store::ObjectStore;
use crate::url::{ObjectUrl, SourceUrl};

/// How a scan picks files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanRules {
    /// A file modified less than this long ago may still be written: it waits for a later
    /// scan. Default 60 s.
    pub stable_for: Duration,
    /// The most files one scan picks; the others wait for the next scan. Default 100.
    pub max_files: usize,
}

impl Default for ScanRules {
    fn default() -> Self {
        ScanRules {
            stable_for: Duration::from_secs(60),
            max_files: 100,
        }
    }
}

/// The characters that make a path segment a glob.
const GLOB_CHARS: &[char] = &['*', '?', '['];

/// Whether the last segment of `path` is a glob: the source is a scan of its directory.
pub fn is_glob(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.contains(GLOB_CHARS))
}

/// A glob in the last segment of an absolute path: `/exports/*.csv`. `*` matches any run of
/// characters, `?` one character, `[abc]`, `[a-z]` and `[!abc]` one of (or none of) a set. As
/// in a shell, a name starting with `.` is matched only by a pattern starting with `.`, so
/// hidden files (often uploads in progress, such as `.data.csv.part`) are left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    dir: String,
    pattern: Vec<char>,
}

impl Glob {
    /// Parses an absolute path whose last segment is the pattern; the directory has no glob.
    pub fn parse(path: &str) -> Result<Glob> {
        let bad = |reason: &str| Error::invalid("scan source", format!("{path:?} {reason}"));
        let (dir, pattern) = path
            .rsplit_once('/')
            .filter(|_| path.starts_with('/'))
            .ok_or_else(|| bad("is not an absolute path"))?;
        if pattern.is_empty() {
            return Err(bad("ends with '/': name the files, e.g. /exports/*.csv"));
        }
        if dir.contains(GLOB_CHARS) {
            return Err(bad(
                "has a glob outside its last segment: only file names are matched",
            ));
        }
        let glob = Glob {
            dir: if dir.is_empty() {
                "/".into()
            } else {
                dir.into()
            },
            pattern: pattern.chars().collect(),
        };
        // An unclosed `[` would match nothing, silently.
        let mut rest = &glob.pattern[..];
        while let Some(i) = rest.iter().position(|&c| c == '[') {
            let Some(close) = rest[i + 1..].iter().skip(1).position(|&c| c == ']') else {
                return Err(bad("has a '[' without its ']'"));
            };
            rest = &rest[i + close + 3..];
        }
        Ok(glob)
    }

    /// The directory listed.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The pattern, as given.
    pub fn pattern(&self) -> String {
        self.pattern.iter().collect()
    }

    /// The path of the entry `name` of the directory.
    pub fn path_of(&self, name: &str) -> String {
        format!("{}/{name}", self.dir.trim_end_matches('/'))
    }

    /// Whether the file name `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        if name.first() == Some(&'.') && self.pattern.first() != Some(&'.') {
            return false;
        }
        matches_at(&self.pattern, &name)
    }
}

fn matches_at(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|skip| matches_at(&pattern[1..], &name[skip..])),
        Some('?') => !name.is_empty() && matches_at(&pattern[1..], &name[1..]),
        Some('[') => {
            let Some((&c, rest)) = name.split_first() else {
                return false;
            };
            let negate = pattern.get(1) == Some(&'!');
            let start = if negate { 2 } else { 1 };
            // The first character of a set may be `]` itself.
            let Some(len) = pattern
                .get(start + 1..)
                .and_then(|p| p.iter().position(|&c| c == ']'))
            else {
                return false;
            };
            let set = &pattern[start..start + 1 + len];
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && matches_at(&pattern[start + 2 + len..], rest)
        }
        Some(&p) => name.first() == Some(&p) && matches_at(&pattern[1..], &name[1..]),
    }
}

/// Where a scan ships each file: an `s3://` URL pattern in which `{name}` is the file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    pattern: String,
}

impl Destinations {
    /// `s3://bucket/prefix/` (each file to `prefix/<name>.gz`) or a URL with `{name}`
    /// (`s3://bucket/p/{name}.gz`).
    pub fn parse(destination: &str) -> Result<Destinations> {
        let bad = |reason: String| Error::invalid("scan destination", reason);
        if !destination.starts_with("s3://") {
            return Err(bad(format!(
                "{destination:?}: a scan ships to S3: give s3://bucket/prefix/"
            )));
        }
        let pattern = if destination.ends_with('/') {
            format!("{destination}{{name}}.gz")
        } else if destination.contains("{name}") {
            destination.to_owned()
        } else {
            return Err(bad(format!(
                "{destination:?} names one object, and a scan ships every matching file to its \
                 own: end it with '/' (s3://bucket/prefix/ ships each file to \
                 prefix/<name>.gz) or put {{name}} in it"
            )));
        };
        let dest = Destinations { pattern };
        dest.for_name("name")?;
        Ok(dest)
    }

    /// The object of the file `name`.
    pub fn for_name(&self, name: &str) -> Result<ObjectUrl> {
        self.pattern.replace("{name}", name).parse()
    }

    /// The pattern, `{name}` for the file name.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// A file a scan picked: new, complete and not shipped yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    /// Its name in the directory.
    pub name: String,
    /// The file.
    pub source: SourceUrl,
    /// Its object.
    pub destination: ObjectUrl,
    /// Its stat, the same at the listing and at a second stat.
    pub stat: SourceStat,
}

/// A file a scan passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Its name in the directory.
    pub name: String,
    /// Why it was passed over.
    pub reason: String,
    /// Whether it will never be shipped as it is (a directory, an unreadable file, a path the
    /// access policy refuses): worth a warning. Files not stable yet, or shipped already, are
    /// not.
    pub warn: bool,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// The directory listed.
    pub dir: String,
    /// Entries whose name matches the glob.
    pub matched: usize,
    /// Files to ship, by name.
    pub picked: Vec<Picked>,
    /// Matching entries passed over, by name.
    pub skipped: Vec<Skipped>,
    /// Files that would have been picked past [`ScanRules::max_files`]: the next scan's.
    pub left: usize,
}

/// Whether an object's metadata records this very source: its size and mtime as the master
/// writes them ([`crate::master`]'s `gzship-source-size` and `gzship-source-mtime`).
pub fn holds_source(meta: &crate::store::ObjectMeta, stat: &SourceStat) -> bool {
    let m = &meta.metadata;
    m.get("gzship-source-size") == Some(&stat.size.to_string())
        && m.get("gzship-source-mtime").cloned() == stat.mtime.map(|t| t.to_string())
}

/// Lists the directory of `source`'s glob and picks the files to ship, as the module doc says.
/// `now` is the time in seconds since the Unix epoch. Fails when the directory cannot be
/// listed; a directory without a match is an outcome with `matched == 0`.
pub async fn scan<S: Source, M: ObjectStore>(
    source: &S,
    store: &M,
    url: &SourceUrl,
    destinations: &Destinations,
    rules: &ScanRules,
    policy: &AccessPolicy,
    now: u64,
) -> Result<ScanOutcome> {
    let glob = Glob::parse(&url.path)?;
    let mut entries = source.list(glob.dir()).await?;
    entries.retain(|e| glob.matches(&e.name));
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut outcome = ScanOutcome {
        dir: glob.dir().to_owned(),
        matched: entries.len(),
        ..ScanOutcome::default()
    };
    let stable_for = rules.stable_for.as_secs();
    for entry in entries {
        let skip = |reason: String, warn: bool| Skipped {
            name: entry.name.clone(),
            reason,
            warn,
        };
        let stat = match entry.kind {
            EntryKind::File(stat) => stat,
            EntryKind::Dir => {
                outcome
                    .skipped
                    .push(skip("a directory (scans do not descend)".into(), true));
                continue;
            }
            EntryKind::Other(why) => {
                outcome.skipped.push(skip(why, true));
                continue;
            }
        };
        let file = SourceUrl {
            path: glob.path_of(&entry.name),
            ..url.clone()
        };
        let destination = match destinations.for_name(&entry.name).and_then(|d| {
            policy.check_source(&file)?;
            policy.check_destination(&d)?;
            Ok(d)
        }) {
            Ok(d) => d,
            Err(e) => {
                outcome.skipped.push(skip(chain(&e), true));
                continue;
            }
        };
        if let Some(mtime) = stat.mtime
            && now < mtime.saturating_add(stable_for)
        {
            outcome.skipped.push(skip(
                format!(
                    "may still be written: modified {} s ago, under the {} s it must be stable for",
                    now.saturating_sub(mtime),
                    stable_for
                ),
                false,
            ));
            continue;
        }
        if let Some((_, meta)) = store.head_object(&destination).await?
            && holds_source(&meta, &stat)
        {
            outcome
                .skipped
                .push(skip(format!("already shipped to {destination}"), false));
            continue;
        }
        if outcome.picked.len() >= rules.max_files {
            outcome.left += 1;
            continue;
        }
        match source.probe(&file.path).await {
            Err(e) => outcome
                .skipped
                .push(skip(format!("cannot be read: {}", chain(&e)), true)),
            Ok(again) => match stat.change_to(&again) {
                Some(change) => outcome.skipped.push(skip(
                    format!("may still be written: it changed between two stats ({change})"),
                    false,
                )),
                None if !again.is_file => outcome
                    .skipped
                    .push(skip("no longer a regular file".into(), true)),
                None => outcome.picked.push(Picked {
                    name: entry.name,
                    source: file,
                    destination,
                    stat,
                }),
            },
        }
    }
    Ok(outcome)
}

/// The scan's claim on one file, under the jobs prefix: `<prefix>scans/<hash>.json`, taken
/// with a conditional write before the file is enqueued and removed when its job ends
/// ([`release_file`]). A claim older than its expiry is stale (its job was lost: a message
/// that went to the dead-letter queue, a master that died) and is taken over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClaim {
    source: SourceUrl,
    destination: ObjectUrl,
    /// Seconds since the Unix epoch after which the claim is stale.
    expires: u64,
}

/// Where the scan claim of the file shipped to `dest` is.
fn file_claim_url(dest: &ObjectUrl, jobs_prefix: &str) -> ObjectUrl {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dest.to_string().as_bytes());
    ObjectUrl {
        bucket: dest.bucket.clone(),
        key: format!("{jobs_prefix}scans/{}.json", hex::encode(&digest[..16])),
    }
}

/// Claims `file` for one scan until `now + expiry`: `true` when this scan may enqueue it,
/// `false` when another scan claimed it and its claim has not expired.
pub async fn claim_file<M: ObjectStore>(
    store: &M,
    file: &Picked,
    jobs_prefix: &str,
    expiry: Duration,
    now: u64,
) -> Result<bool> {
    let url = file_claim_url(&file.destination, jobs_prefix);
    let claim = FileClaim {
        source: file.source.clone(),
        destination: file.destination.clone(),
        expires: now.saturating_add(expiry.as_secs()),
    };
    let body = serde_json::to_vec(&claim)
        .map_err(|e| Error::invalid("scan claim", format!("encode {url}: {e}")))?;
    // Twice: once more after removing an expired claim.
    for _ in 0..2 {
        if store
            .put_object_if_absent(&url, Bytes::from(body.clone()))
            .await?
        {
            return Ok(true);
        }
        let Some(held) = read_claim(store, &url).await? else {
            continue;
        };
        if held.expires > now {
            return Ok(false);
        }
        tracing::warn!(claim = %url, file = %file.source, "taking over an expired scan claim");
        store.delete_object(&url).await?;
    }
    Ok(false)
}

/// Removes the scan claim on the file shipped to `dest`, if any: its job ended (shipped, or
/// failed for good), so the next scan decides anew.
pub async fn release_file<M: ObjectStore>(
    store: &M,
    dest: &ObjectUrl,
    jobs_prefix: &str,
) -> Result<()> {
    store
        .delete_object(&file_claim_url(dest, jobs_prefix))
        .await
}

async fn read_claim<M: ObjectStore>(store: &M, url: &ObjectUrl) -> Result<Option<FileClaim>> {
    use futures::TryStreamExt;
    if store.head_object(url).await?.is_none() {
        return Ok(None);
    }
    let body: Vec<Bytes> = match store.get_object(url).await {
        Ok(stream) => stream.try_collect().await?,
        // Removed between the two requests.
        Err(e) if e.s3_code() == Some("NoSuchKey") => return Ok(None),
        Err(e) => return Err(e),
    };
    let body = body.concat();
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::invalid("scan claim", format!("{url} is not a scan claim: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs_match_file_names_as_a_shell_does() {
        let g = |p: &str| Glob::parse(p).unwrap();
        let csv = g("/exports/*.csv");
        assert_eq!(csv.dir(), "/exports");
        assert_eq!(csv.path_of("a b.csv"), "/exports/a b.csv");
        for name in ["a.csv", ".csv", "données été.csv", "x y.csv", "a.b.csv"] {
            assert_eq!(csv.matches(name), !name.starts_with('.'), "{name}");
        }
        for name in ["a.csv.part", "a.CSV", "csv", ""] {
            assert!(!csv.matches(name), "{name}");
        }
        assert!(g("/d/.*.tmp").matches(".x.tmp"));
        let set = g("/d/log-[0-9]?.[!g]z");
        assert!(set.matches("log-1a.xz"));
        assert!(set.matches("log-9é.bz"));
        assert!(!set.matches("log-xa.xz"));
        assert!(!set.matches("log-1a.gz"));
        assert!(!set.matches("log-1.xz"));
        assert!(g("/d/[]]x").matches("]x"));
        assert!(g("/*").matches("top"));
        assert_eq!(g("/*").path_of("top"), "/top");
        assert!(g("/d/exact.csv").matches("exact.csv"));
        assert!(is_glob("/d/*.csv") && is_glob("/d/f?") && !is_glob("/d*/f"));
    }

    #[test]
    fn bad_globs_are_refused_with_the_reason() {
        for (path, says) in [
            ("exports/*.csv", "absolute"),
            ("/exports/", "ends with '/'"),
            ("/ex*/a.csv", "outside its last segment"),
            ("/exports/[a-z.csv", "without its ']'"),
        ] {
            let err = Glob::parse(path).unwrap_err().to_string();
            assert!(err.contains(says), "{path}: {err}");
        }
    }

    #[test]
    fn destinations_name_one_object_per_file() {
        let d = Destinations::parse("s3://bkt/in/").unwrap();
        assert_eq!(d.for_name("a b.csv").unwrap().key, "in/a b.csv.gz");
        let d = Destinations::parse("s3://bkt/p/{name}.gz").unwrap();
        assert_eq!(
            d.for_name("x.csv").unwrap().to_string(),
            "s3://bkt/p/x.csv.gz"
        );
        let err = Destinations::parse("s3://bkt/p/one.gz")
            .unwrap_err()
            .to_string();
        assert!(err.contains("end it with '/'"), "{err}");
        let err = Destinations::parse("/tmp/out/").unwrap_err().to_string();
        assert!(err.contains("s3://"), "{err}");
    }
}
