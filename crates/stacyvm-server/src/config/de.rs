//! Serde helpers for the shapes YAML users actually write.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
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
        if v == 0 {
            Ok(GoDuration::ZERO)
        } else {
            Err(E::custom(format!(
                "duration {v} has no unit; write it like \"{v}s\""
            )))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(format!("duration {v} has no unit"))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<GoDuration, E> {
        if v == 0.0 {
            Ok(GoDuration::ZERO)
        } else {
            Err(E::custom(format!(
                "duration {v} has no unit; write it like \"{v}s\""
            )))
        }
    }
}

/// `providers.docker.tmpfs`: either a map `{"/tmp": "rw,size=64m"}` (Docker's own shape) or a
/// list `["/tmp:rw,size=64m", "/run"]`; both become path → options.
pub(crate) fn string_map_or_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    d.deserialize_any(MapOrListVisitor)
}

struct MapOrListVisitor;

impl<'de> Visitor<'de> for MapOrListVisitor {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of path to mount options, or a list of \"path[:options]\"")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Option<String>>()? {
            out.insert(k, v.unwrap_or_default());
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(item) = seq.next_element::<String>()? {
            let (path, opts) = item.split_once(':').unwrap_or((item.as_str(), ""));
            out.insert(path.to_string(), opts.to_string());
        }
        Ok(out)
    }
}
