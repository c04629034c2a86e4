//! Job templates: a job whose source and destination contain placeholders, filled in when a
//! schedule fires or a file arrives.
//!
//! ```json
//! {"source": "sftp://backup@db1.internal/var/dumps/db-{date}.sql",
//!  "destination": "s3://archive/db1/{date}/{name}.gz", "level": 6}
//! ```
//!
//! | placeholder | value | where |
//! |---|---|---|
//! | `{date}` | the event's time (UTC) as `YYYY-MM-DD` | source, destination |
//! | `{time}` | the event's time (UTC) as `HHMMSS` | source, destination |
//! | `{path}` | the arrived file's absolute path (file-arrival notices only) | source, destination (without its leading `/`) |
//! | `{name}` | the last component of the source's path | destination |
//!
//! `{{` and `}}` stand for literal braces; any other `{...}` is an error, found when the
//! template is loaded rather than when it fires. The event's time is the schedule's time
//! (EventBridge `time`, or the `time` of a template event, which Scheduler fills in with
//! `<aws.scheduler.scheduled-time>`), else the time the master received the event.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gzship_core::gzip::Level;
use gzship_core::plan::Tuning;
use gzship_core::wire::JobRequest;
use gzship_core::{Error, ObjectUrl, Result, SourceUrl};
use serde::{Deserialize, Serialize};

/// A job with placeholders. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTemplate {
    /// `sftp://[user@]host[:port]/path` with placeholders.
    pub source: String,
    /// `s3://bucket/key` with placeholders.
    pub destination: String,
    /// Compression level, 1-9 (default 6).
    #[serde(default)]
    pub level: Level,
    /// Planner knobs.
    #[serde(default)]
    pub tuning: Tuning,
}

/// What a template is filled in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVars {
    /// The event's time.
    pub time: SystemTime,
    /// The arrived file's absolute path, for file-arrival notices.
    pub path: Option<String>,
}

impl JobTemplate {
    /// Checks the placeholders and that a sample rendering gives valid URLs.
    pub fn validate(&self) -> Result<()> {
        let sample = TemplateVars {
            time: UNIX_EPOCH,
            path: self
                .uses_path()
                .then(|| "/gzship/template-check.log".to_owned()),
        };
        self.render(&sample).map(|_| ())
    }

    /// Whether the template needs a file path (`{path}` in its source).
    pub fn uses_path(&self) -> bool {
        self.source.contains("{path}")
    }

    /// Fills in the placeholders and parses the result into a job request.
    pub fn render(&self, vars: &TemplateVars) -> Result<JobRequest> {
        let (date, time) = utc_date_time(vars.time);
        let bad = |reason: String| Error::invalid("job template", reason);
        if vars.path.is_some() && !self.uses_path() {
            return Err(bad(format!(
                "a file-arrival notice names a path, but the template's source {:?} has no \
                 {{path}} placeholder to put it in",
                self.source
            )));
        }
        // SourceUrl percent-decodes its path: escape '%' so a path is taken literally.
        let escaped_path = vars.path.as_deref().map(|p| p.replace('%', "%25"));
        let source = substitute(&self.source, "source", |name| match name {
            "date" => Some(date.clone()),
            "time" => Some(time.clone()),
            "path" => escaped_path.clone(),
            _ => None,
        })?;
        let source: SourceUrl = source.parse()?;
        let file_name = source
            .path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let destination = substitute(&self.destination, "destination", |name| match name {
            "date" => Some(date.clone()),
            "time" => Some(time.clone()),
            "name" => Some(file_name.clone()),
            "path" => vars
                .path
                .as_deref()
                .map(|p| p.trim_start_matches('/').to_owned()),
            _ => None,
        })?;
        let destination: ObjectUrl = destination.parse()?;
        Ok(JobRequest {
            source,
            destination,
            level: self.level,
            tuning: self.tuning.clone(),
        })
    }
}

/// Replaces `{name}` by `value(name)`; `{{`/`}}` are literal braces. A placeholder `value`
/// does not know (or has no value for) is an error naming it.
fn substitute(
    template: &str,
    field: &str,
    value: impl Fn(&str) -> Option<String>,
) -> Result<String> {
    let bad =
        |reason: String| Error::invalid("job template", format!("{field} {template:?}: {reason}"));
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| bad("a '{' is not closed (write {{ for a literal brace)".into()))?;
            let name = &after[..end];
            let v = value(name).ok_or_else(|| {
                bad(format!(
                    "{{{name}}} is not a placeholder here (known: {})",
                    known_placeholders(field)
                ))
            })?;
            out.push_str(&v);
            rest = &after[end + 1..];
        } else {
            return Err(bad(
                "a '}' is not opened (write }} for a literal brace)".into()
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn known_placeholders(field: &str) -> &'static str {
    if field == "source" {
        "{date}, {time}, {path} for file-arrival notices"
    } else {
        "{date}, {time}, {name}, {path} for file-arrival notices"
    }
}

/// `(YYYY-MM-DD, HHMMSS)` of `t` in UTC.
pub fn utc_date_time(t: SystemTime) -> (String, String) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// Parses the timestamps AWS puts in events: `2024-05-01T02:00:00Z`, with optional fractional
/// seconds, and `Z` or a `+HH:MM`/`-HH:MM` offset.
pub fn parse_timestamp(s: &str) -> Result<SystemTime> {
    let bad = || {
        Error::invalid(
            "timestamp",
            format!("{s:?} is not an RFC 3339 time such as 2024-05-01T02:00:00Z"),
        )
    };
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64> {
        let t = s.get(r).ok_or_else(bad)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let h: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let m: i64 = rest[4..6].parse().map_err(|_| bad())?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).map_err(|_| bad())?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

// Howard Hinnant's algorithms (public domain): proleptic Gregorian calendar <-> days since
// 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn template(source: &str, destination: &str) -> JobTemplate {
        JobTemplate {
            source: source.into(),
            destination: destination.into(),
            level: Level::default(),
            tuning: Tuning::default(),
        }
    }

    #[test]
    fn timestamps_parse_and_format() {
        let t = parse_timestamp("2024-02-29T23:59:58Z").unwrap();
        assert_eq!(
            utc_date_time(t),
            ("2024-02-29".to_owned(), "235958".to_owned())
        );
        let t = parse_timestamp("2024-03-01T01:30:00.123+02:00").unwrap();
        assert_eq!(utc_date_time(t).0, "2024-02-29");
        assert_eq!(utc_date_time(UNIX_EPOCH).0, "1970-01-01");
        for bad in [
            "2024-05-01",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-05-01T00:00:00",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_are_filled_in() {
        let t = template(
            "sftp://u@h:2222/var/dumps/db-{date}.sql",
            "s3://archive/{date}/{time}/{name}.gz",
        );
        t.validate().unwrap();
        let job = t
            .render(&TemplateVars {
                time: parse_timestamp("2024-05-01T02:03:04Z").unwrap(),
                path: None,
            })
            .unwrap();
        assert_eq!(job.source.path, "/var/dumps/db-2024-05-01.sql");
        assert_eq!(job.source.port, 2222);
        assert_eq!(
            job.destination.to_string(),
            "s3://archive/2024-05-01/020304/db-2024-05-01.sql.gz"
        );
    }

    #[test]
    fn paths_of_notices_are_taken_literally() {
        let t = template("sftp://u@h{path}", "s3://bucket/in/{path}.gz");
        assert!(t.uses_path());
        t.validate().unwrap();
        let job = t
            .render(&TemplateVars {
                time: UNIX_EPOCH,
                path: Some("/exports/100% done.csv".into()),
            })
            .unwrap();
        assert_eq!(job.source.path, "/exports/100% done.csv");
        assert_eq!(job.destination.key, "in/exports/100% done.csv.gz");
    }

    #[test]
    fn bad_templates_are_refused() {
        let err = template("sftp://h/a-{day}.log", "s3://bucket/k")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("{day}") && err.contains("{date}"), "{err}");
        let err = template("sftp://h/{name}", "s3://bucket/k")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("{name}"), "{err}");
        assert!(template("sftp://h/a{", "s3://bucket/k").validate().is_err());
        assert!(template("sftp://h/a", "s3://bucket/}").validate().is_err());
        assert!(template("http://h/a", "s3://bucket/k").validate().is_err());
        let t = template("sftp://h/{{literal}}", "s3://bucket/{{k}}");
        let job = t
            .render(&TemplateVars {
                time: UNIX_EPOCH,
                path: None,
            })
            .unwrap();
        assert_eq!(job.source.path, "/{literal}");
        assert_eq!(job.destination.key, "{k}");
        // A notice needs {path} in the source.
        let err = template("sftp://h/fixed.log", "s3://bucket/k")
            .render(&TemplateVars {
                time: UNIX_EPOCH,
                path: Some("/x".into()),
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("{path}"), "{err}");
    }
}
