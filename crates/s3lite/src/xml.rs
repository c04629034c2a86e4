//! S3's XML: the replies (as aws-sdk-s3's `protocol_serde` reads them) and the one request
//! body we parse, CompleteMultipartUpload.

use std::fmt::Write as _;
use std::time::SystemTime;

use gzship_core::store::checksum::decode_crc32c;
use gzship_core::store::rules::RequestedPart;
use gzship_core::types::{ETag, PartNumber};

/// Namespace of every S3 reply.
const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Escapes text for XML content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`] and numeric character references.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// ISO 8601 in UTC with milliseconds, as S3 writes `LastModified` and `Initiated`.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// RFC 7231's HTTP-date, as S3 writes `Last-Modified`: `Tue, 15 Nov 1994 08:12:31 GMT`.
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A reply document: `<Root xmlns=...>` then elements.
pub struct Doc {
    root: &'static str,
    body: String,
}

impl Doc {
    pub fn new(root: &'static str) -> Doc {
        Doc {
            root,
            body: String::new(),
        }
    }

    /// `<name>text</name>` (text escaped).
    pub fn el(&mut self, name: &str, text: &str) -> &mut Self {
        let _ = write!(self.body, "<{name}>{}</{name}>", escape(text));
        self
    }

    /// Opens `<name>`.
    pub fn open(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.body, "<{name}>");
        self
    }

    /// Closes `</name>`.
    pub fn close(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.body, "</{name}>");
        self
    }

    pub fn finish(&self) -> String {
        format!(
            "{DECL}<{root} xmlns=\"{NS}\">{body}</{root}>",
            root = self.root,
            body = self.body
        )
    }
}

/// S3's error document (no namespace on `<Error>`).
pub fn error(
    code: &str,
    message: &str,
    resource: &str,
    request_id: &str,
    extra: &[(&str, String)],
) -> String {
    let mut s = format!(
        "{DECL}<Error><Code>{}</Code><Message>{}</Message>",
        escape(code),
        escape(message)
    );
    for (name, value) in extra {
        let _ = write!(s, "<{name}>{}</{name}>", escape(value));
    }
    let _ = write!(
        s,
        "<Resource>{}</Resource><RequestId>{}</RequestId><HostId>gzship-s3lite</HostId></Error>",
        escape(resource),
        escape(request_id)
    );
    s
}

/// The text of every `<name>...</name>` directly in `xml` (no nesting of the same name).
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// Parses a CompleteMultipartUpload body into its parts, in the order given. `None` when it
/// is not that document, or a part lacks its number or ETag or has a number outside 1..=10,000
/// or a checksum that is not a CRC32C in S3's form.
pub fn parse_complete(body: &str) -> Option<Vec<RequestedPart>> {
    if !body.contains("<CompleteMultipartUpload") {
        return None;
    }
    elements(body, "Part")
        .into_iter()
        .map(|part| {
            let number = elements(part, "PartNumber").first()?.trim().parse().ok()?;
            let number = PartNumber::new(number).ok()?;
            let etag = ETag::new(unescape(elements(part, "ETag").first()?.trim())).ok()?;
            let crc32c = match elements(part, "ChecksumCRC32C").first() {
                Some(c) => Some(decode_crc32c(unescape(c).trim()).ok()?),
                None => None,
            };
            Some(RequestedPart {
                number,
                etag,
                crc32c,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn escapes_round_trip() {
        let s = "a&b<c>\"d\"'e'";
        assert_eq!(unescape(&escape(s)), s);
        assert_eq!(unescape("&#34;x&#x22;"), "\"x\"");
        assert_eq!(unescape("a & b"), "a & b");
    }

    #[test]
    fn dates_are_iso8601() {
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_210_096_123);
        assert_eq!(iso8601(t), "2024-02-29T12:34:56.123Z");
        assert_eq!(http_date(t), "Thu, 29 Feb 2024 12:34:56 GMT");
    }

    #[test]
    fn complete_body_parses() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ChecksumCRC32C>yZRlqg==</ChecksumCRC32C><ETag>&quot;abc&quot;</ETag><PartNumber>3</PartNumber></Part><Part><ETag>"d"</ETag><PartNumber>9</PartNumber></Part></CompleteMultipartUpload>"#;
        let parts = parse_complete(body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].number.get(), 3);
        assert_eq!(parts[0].etag.as_str(), "\"abc\"");
        assert_eq!(parts[0].crc32c, Some(crc32c::crc32c(b"hello world")));
        assert_eq!(parts[1].number.get(), 9);
        assert!(parts[1].crc32c.is_none());
        assert!(parse_complete("<Other/>").is_none());
        for bad in [
            "<Part><ETag>x</ETag><PartNumber>0</PartNumber></Part>",
            "<Part><ETag>x</ETag><PartNumber>10001</PartNumber></Part>",
            "<Part><ETag></ETag><PartNumber>1</PartNumber></Part>",
            "<Part><ETag>x</ETag><PartNumber>1</PartNumber><ChecksumCRC32C>AAAA</ChecksumCRC32C></Part>",
        ] {
            let body = format!("<CompleteMultipartUpload>{bad}</CompleteMultipartUpload>");
            assert!(parse_complete(&body).is_none(), "{bad}");
        }
        assert!(
            parse_complete(
                "<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>"
            )
            .is_none()
        );
    }
}
