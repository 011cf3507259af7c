//! Timestamps in the two RFC 3339 shapes the wire uses.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};

pub type Timestamp = DateTime<Utc>;

/// Go's `time.Time` JSON form: RFC 3339 with up to nine fraction digits, trailing zeros trimmed.
pub fn format_rfc3339_go(t: &Timestamp) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

/// RFC 3339 with whole seconds, UTC (`2026-05-08T10:30:00Z`): worker registry and file times.
pub fn format_rfc3339_secs(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Serde helpers for `Timestamp` fields in Go's JSON form.
pub mod serde_go {
    use super::*;

    pub fn serialize<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339_go(t))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn go_shape() {
        let t = Utc.with_ymd_and_hms(2026, 5, 8, 10, 30, 0).unwrap();
        assert_eq!(format_rfc3339_go(&t), "2026-05-08T10:30:00Z");
        let t2 = t + chrono::Duration::nanoseconds(123_450_000);
        assert_eq!(format_rfc3339_go(&t2), "2026-05-08T10:30:00.12345Z");
        assert_eq!(format_rfc3339_secs(&t2), "2026-05-08T10:30:00Z");
        assert_eq!(parse_rfc3339("2026-05-08T10:30:00.12345Z"), Some(t2));
    }
}
