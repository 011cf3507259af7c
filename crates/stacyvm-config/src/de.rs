//! Serde helpers for the shapes YAML users actually write.

use std::fmt;

use serde::de::{self, Visitor};
use serde::Deserializer;
use stacyvm_types::{parse_go_duration, GoDuration};

/// A Go duration string; YAML's bare `0` arrives as an integer, so integer zero is accepted too.
/// Other bare numbers are rejected: Go would read `30` as 30ns, which is never what was meant.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<GoDuration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = GoDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Go duration string such as \"30s\", \"5m\" or \"1h30m\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
        parse_go_duration(v.trim()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
        unitless(v, v == 0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(format!("duration {v} has no unit"))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<GoDuration, E> {
        unitless(v, v == 0.0)
    }
}

/// A bare number where a duration belongs: zero needs no unit, anything else is refused.
fn unitless<E: de::Error>(v: impl fmt::Display, zero: bool) -> Result<GoDuration, E> {
    if zero {
        Ok(GoDuration::ZERO)
    } else {
        Err(E::custom(format!(
            "duration {v} has no unit; write it like \"{v}s\""
        )))
    }
}
