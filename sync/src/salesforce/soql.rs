//! Building SOQL safely: string literals escaped, datetimes in the unquoted literal form, and
//! Salesforce's JSON datetime format (`2026-11-01T00:00:00.000+0000`) read back.

use chrono::{DateTime, NaiveDate, Utc};

/// A quoted SOQL string literal: `'O\'Brien'`. Backslash, quote, and control characters
/// are escaped as SOQL requires.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An unquoted SOQL datetime literal with milliseconds: `2026-11-01T00:00:00.000Z`.
pub fn datetime_literal(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Salesforce's JSON datetime format: `2026-11-01T00:00:00.000+0000`.
pub fn format_datetime(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Reads a datetime as Salesforce writes it (`…+0000`), as SOQL literals have it (`…Z`,
/// `…+01:00`), with or without fractional seconds.
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// A date (`2026-11-01`).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("O'Brien \\ x"), r"'O\'Brien \\ x'");
        assert_eq!(quote("a\nb"), r"'a\nb'");
    }

    #[test]
    fn datetimes() {
        let at = parse_datetime("2026-11-01T10:20:30.123+0000").unwrap();
        assert_eq!(datetime_literal(at), "2026-11-01T10:20:30.123Z");
        assert_eq!(format_datetime(at), "2026-11-01T10:20:30.123+0000");
        assert_eq!(
            parse_datetime("2026-11-01T10:20:30Z").unwrap().timestamp(),
            at.timestamp()
        );
        assert!(parse_datetime("2026-11-01").is_none());
    }
}
