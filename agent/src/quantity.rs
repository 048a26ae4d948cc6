//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `1e3`, `2G`) as exact integers:
//! CPU in millicores, everything else in whole units (bytes, pids). Rounding follows the
//! API server's canonical form: values are rounded *up* to the unit asked for, so `0.5m` CPU
//! is 1 millicore and `1.5` bytes is 2 bytes. Go-style durations (`1m30s`) are parsed here
//! too (`parse_duration`), the other value syntax every config section shares.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
#[error("quantity {value:?} is not valid: {reason}")]
pub struct QuantityError {
    pub value: String,
    pub reason: &'static str,
}

/// A parsed quantity kept as a rational number `mantissa * 10^exp10 * 2^exp2`, exact for
/// everything the API server accepts (it caps precision too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    /// digits without the decimal point
    digits: u128,
    /// power of ten applied to `digits` (negative for fractions and milli/micro/nano)
    exp10: i32,
    /// power of two from binary suffixes (Ki = 10, Mi = 20, ...)
    exp2: u32,
}

fn parse(s: &str) -> Result<Parsed, QuantityError> {
    let err = |reason| QuantityError {
        value: s.to_string(),
        reason,
    };
    let t = s.trim();
    if t.is_empty() || t != s {
        return Err(err(
            "must be a number with an optional suffix, without spaces",
        ));
    }
    let (negative, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(err("must start with a number"));
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.len() + frac_part.len() > 30 {
        return Err(err("too many digits"));
    }
    let digits: u128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| err("must start with a number"))?;
    let mut exp10 = -(frac_part.len() as i32);
    let mut exp2 = 0u32;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..]
                .parse()
                .map_err(|_| err("has an exponent that is not an integer"))?;
            if !(-30..=30).contains(&e) {
                return Err(err("exponent out of range"));
            }
            exp10 += e;
        }
        _ => {
            return Err(err(
                "has an unknown suffix (use m, k, M, G, Ki, Mi, Gi, ...)",
            ))
        }
    }
    Ok(Parsed {
        negative,
        digits,
        exp10,
        exp2,
    })
}

/// `value * 10^scale`, rounded up (away from zero for positive values).
fn scaled(p: Parsed, scale: i32, original: &str) -> Result<i64, QuantityError> {
    let overflow = || QuantityError {
        value: original.to_string(),
        reason: "is too large",
    };
    let mut v: u128 = p.digits;
    let e = p.exp10 + scale;
    let mut remainder = false;
    if e >= 0 {
        for _ in 0..e {
            v = v.checked_mul(10).ok_or_else(overflow)?;
        }
    }
    v = v
        .checked_shl(p.exp2)
        .filter(|x| x >> p.exp2 == v)
        .ok_or_else(overflow)?;
    if e < 0 {
        for _ in 0..(-e) {
            remainder |= !v.is_multiple_of(10);
            v /= 10;
        }
    }
    if remainder && !p.negative {
        v += 1;
    }
    let v = i64::try_from(v).map_err(|_| overflow())?;
    Ok(if p.negative { -v } else { v })
}

/// Millicores of a CPU quantity (`100m` -> 100, `1` -> 1000, `0.5` -> 500).
pub fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    scaled(parse(s)?, 3, s)
}

/// Whole units of a quantity (`64Mi` -> 67108864, `1k` -> 1000, `100m` -> 1).
pub fn parse_units(s: &str) -> Result<i64, QuantityError> {
    scaled(parse(s)?, 0, s)
}

/// Parse a Go-style duration as KubeletConfiguration writes them (`20s`, `1m30s`, `500ms`).
/// Kept here, with the other value syntaxes, so that every config section (the agent's, the
/// eviction and MQTT ones) can use it without depending on `config`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[u..];
        total += std::time::Duration::try_from_secs_f64(value * unit).ok()?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let cases = [
            ("20s", Some(20_000)),
            ("1m30s", Some(90_000)),
            ("500ms", Some(500)),
            ("1h", Some(3_600_000)),
            ("", None),
            ("5", None),
            ("3x", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s).map(|d| d.as_millis() as u64), want, "{s}");
        }
    }

    #[test]
    fn parses_like_the_api_server() {
        let milli = [
            ("100m", 100),
            ("1", 1000),
            ("0.5", 500),
            ("1.5", 1500),
            ("2", 2000),
            ("0.0001", 1),
            ("1e3", 1_000_000),
            ("250m", 250),
            ("1k", 1_000_000),
        ];
        for (s, want) in milli {
            assert_eq!(parse_milli(s), Ok(want), "{s}");
        }
        let units = [
            ("64Mi", 64 << 20),
            ("1Gi", 1 << 30),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("123Mi", 123 << 20),
            ("1k", 1000),
            ("1M", 1_000_000),
            ("0.5Ki", 512),
            ("100m", 1),
            ("1.5", 2),
            ("0", 0),
        ];
        for (s, want) in units {
            assert_eq!(parse_units(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_quantities() {
        for s in [
            "",
            " 1",
            "1 ",
            "abc",
            "1.2.3",
            "1Kb",
            "Mi",
            ".",
            "1e",
            "1e99",
            "99999999999999999999999999999999Ei",
        ] {
            assert!(parse_units(s).is_err(), "{s:?} should be rejected");
        }
    }
}
