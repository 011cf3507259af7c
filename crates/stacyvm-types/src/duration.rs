//! Go `time.Duration` syntax: parsing (`ParseDuration`) and formatting (`Duration.String`),
//! reproduced exactly because clients send and read these strings.

use std::fmt;

/// A signed duration in nanoseconds, serialised as a Go duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("duration {0:?} out of range")]
    Overflow(String),
}

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const LIMIT: u64 = 1 << 63;

fn unit_nanos(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => NS,
        "us" | "\u{b5}s" | "\u{3bc}s" => US,
        "ms" => MS,
        "s" => SEC,
        "m" => MIN,
        "h" => HOUR,
        _ => return None,
    })
}

/// Parses a Go duration string such as `300ms`, `-1.5h` or `2h45m`. Like Go, a bare `0` is
/// allowed, there is no `d` unit, and values past ±292 years are rejected.
pub fn parse_go_duration(input: &str) -> Result<GoDuration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_string());
    let mut s = input.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = &s[1..];
        }
    }
    if s == b"0" {
        return Ok(GoDuration(0));
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Integer part.
        let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v: u64 = 0;
        for &c in &s[..digits] {
            if v > LIMIT / 10 {
                return Err(DurationError::Overflow(input.to_string()));
            }
            v = v * 10 + u64::from(c - b'0');
            if v > LIMIT {
                return Err(DurationError::Overflow(input.to_string()));
            }
        }
        let pre = digits > 0;
        s = &s[digits..];
        // Fraction part.
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let fdigits = s.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut overflow = false;
            for &c in &s[..fdigits] {
                if overflow {
                    continue;
                }
                if f > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = f * 10 + u64::from(c - b'0');
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                f = y;
                scale *= 10.0;
            }
            post = fdigits > 0;
            s = &s[fdigits..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        // Unit: everything up to the next digit or dot.
        let ulen = s
            .iter()
            .take_while(|&&c| !(c == b'.' || c.is_ascii_digit()))
            .count();
        if ulen == 0 {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let unit_str = std::str::from_utf8(&s[..ulen]).map_err(|_| invalid())?;
        let unit = unit_nanos(unit_str).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit_str.to_string(),
            input: input.to_string(),
        })?;
        s = &s[ulen..];
        if v > LIMIT / unit {
            return Err(DurationError::Overflow(input.to_string()));
        }
        v *= unit;
        if f > 0 {
            // Same float arithmetic as Go so results agree to the nanosecond.
            // Same float arithmetic as Go (see above).
            let frac = (f as f64 * (unit as f64 / scale)) as u64;
            v += frac;
            if v > LIMIT {
                return Err(DurationError::Overflow(input.to_string()));
            }
        }
        total += v;
        if total > LIMIT {
            return Err(DurationError::Overflow(input.to_string()));
        }
    }
    if neg {
        return Ok(GoDuration((total as i64).wrapping_neg()));
    }
    if total > LIMIT - 1 {
        return Err(DurationError::Overflow(input.to_string()));
    }
    Ok(GoDuration(total as i64))
}

/// Writes `v / 10^prec` fraction digits (without trailing zeros, without the dot when zero)
/// in front of `buf`, returning the integer part.
fn frac(buf: &mut Vec<u8>, mut v: u64, prec: usize) -> u64 {
    let mut print = false;
    let mut out = Vec::with_capacity(prec + 1);
    for _ in 0..prec {
        let digit = v % 10;
        print = print || digit != 0;
        if print {
            out.push(b'0' + digit as u8);
        }
        v /= 10;
    }
    if print {
        out.push(b'.');
    }
    out.reverse();
    buf.splice(0..0, out);
    v
}

fn int(buf: &mut Vec<u8>, v: u64) {
    let s = v.to_string();
    buf.splice(0..0, s.into_bytes());
}

/// Formats nanoseconds exactly like Go's `Duration.String()`: `0s`, `1.5s`, `127.3ms`, `1m30s`,
/// `30m0s`, `24h0m0s`.
pub fn format_go_duration(nanos: i64) -> String {
    let neg = nanos < 0;
    let mut u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".to_string();
    }
    let mut buf: Vec<u8> = Vec::with_capacity(32);
    if u < SEC {
        let (prec, unit) = if u < US {
            (0, "ns")
        } else if u < MS {
            (3, "\u{b5}s")
        } else {
            (6, "ms")
        };
        buf.extend_from_slice(unit.as_bytes());
        u = frac(&mut buf, u, prec);
        int(&mut buf, u);
    } else {
        buf.push(b's');
        u = frac(&mut buf, u, 9);
        int(&mut buf, u % 60);
        u /= 60;
        if u > 0 {
            buf.insert(0, b'm');
            int(&mut buf, u % 60);
            u /= 60;
            if u > 0 {
                buf.insert(0, b'h');
                int(&mut buf, u);
            }
        }
    }
    if neg {
        buf.insert(0, b'-');
    }
    String::from_utf8(buf).unwrap_or_default()
}

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(0);

    pub fn from_secs(secs: i64) -> Self {
        GoDuration(secs.saturating_mul(1_000_000_000))
    }

    pub fn from_std(d: std::time::Duration) -> Self {
        GoDuration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `None` for negative durations.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.0)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::nanoseconds(self.0)
    }

    /// Whole seconds, truncated toward zero.
    pub fn whole_secs(self) -> i64 {
        self.0 / 1_000_000_000
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go_duration(self.0))
    }
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s)
    }
}

impl serde::Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_go_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_go_duration(s.trim()).map_err(serde::de::Error::custom)
    }
}

/// Every duration on the wire is Go syntax text.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for GoDuration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "Go duration syntax: `300ms`, `30s`, `5m`, `1h30m` (units ns us µs ms s m h; no \
                 `d`). Outputs use Go's format (`30m0s`, `1h0m0s`, `0s`).",
            ))
            .examples(["30m"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for GoDuration {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_go_examples() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * SEC as i64),
            ("30s", 30 * SEC as i64),
            ("1478s", 1478 * SEC as i64),
            ("-5s", -5 * SEC as i64),
            ("+5s", 5 * SEC as i64),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * SEC as i64),
            ("5.6s", 5 * SEC as i64 + 600 * MS as i64),
            ("5.s", 5 * SEC as i64),
            (".5s", 500 * MS as i64),
            ("1.0s", SEC as i64),
            ("1.00s", SEC as i64),
            ("1.004s", SEC as i64 + 4 * MS as i64),
            ("100.00100s", 100 * SEC as i64 + MS as i64),
            ("10ns", 10),
            ("11us", 11 * US as i64),
            ("12µs", 12 * US as i64),
            ("12μs", 12 * US as i64),
            ("13ms", 13 * MS as i64),
            ("14s", 14 * SEC as i64),
            ("15m", 15 * MIN as i64),
            ("16h", 16 * HOUR as i64),
            ("3h30m", (3 * HOUR + 30 * MIN) as i64),
            ("10.5s4m", (4 * MIN + 10 * SEC + 500 * MS) as i64),
            ("-2m3.4s", -((2 * MIN + 3 * SEC + 400 * MS) as i64)),
            (
                "1h2m3s4ms5us6ns",
                (HOUR + 2 * MIN + 3 * SEC + 4 * MS + 5 * US + 6) as i64,
            ),
            (
                "39h9m14.425907423s",
                (39 * HOUR + 9 * MIN + 14 * SEC + 425_907_423) as i64,
            ),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * MIN as i64),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("0.100000000000000000000h", 6 * MIN as i64),
            (
                "0.830103483285477580700h",
                (49 * MIN + 48 * SEC + 372_539_827) as i64,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_duration(input), Ok(GoDuration(*want)), "{input}");
        }
    }

    #[test]
    fn rejects_go_invalid() {
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "-9223372036854775809ns",
            "1.5",
            " 1s",
            "1s ",
            "1 s",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            ((4 * MIN + 5 * SEC) as i64, "4m5s"),
            ((4 * MIN + 5001 * MS) as i64, "4m5.001s"),
            ((5 * HOUR + 6 * MIN + 7001 * MS) as i64, "5h6m7.001s"),
            ((8 * MIN + 1) as i64, "8m0.000000001s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            ((30 * MIN) as i64, "30m0s"),
            ((24 * HOUR) as i64, "24h0m0s"),
            ((90 * SEC) as i64, "1m30s"),
            (127_300_000, "127.3ms"),
            (-1_500_000_000, "-1.5s"),
        ];
        for (n, want) in cases {
            assert_eq!(format_go_duration(*n), *want, "{n}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(n in any::<i64>()) {
            prop_assert_eq!(parse_go_duration(&format_go_duration(n)), Ok(GoDuration(n)));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn composite_sums(h in 0i64..10_000, m in 0i64..60, s in 0i64..60, ms in 0i64..1000) {
            let input = format!("{h}h{m}m{s}s{ms}ms");
            let want = ((h * 60 + m) * 60 + s) * 1_000_000_000 + ms * 1_000_000;
            prop_assert_eq!(parse_go_duration(&input), Ok(GoDuration(want)));
        }
    }
}
