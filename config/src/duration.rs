//! Duration strings: "250ms", "2s", "5m", "1h", "1d", compounds such as "1m30s", decimals
//! such as "1.5s".

use std::time::Duration;

/// Parses a duration with a unit: `us`, `ms`, `s`, `m`, `h`, `d`; parts may be chained
/// ("1h30m", "1m30s") and may carry a decimal fraction ("1.5s"). A bare number is refused:
/// the message says to add a unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("an empty duration; write a number with a unit such as \"5s\"".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "\"{t}\" has no unit; add one: \"{t}s\" for seconds or \"{t}ms\" for milliseconds"
        ));
    }
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0; // nanoseconds
    let mut last_unit_rank = usize::MAX;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let num = &t[start..i];
        if num.is_empty() {
            return Err(format!(
                "\"{t}\" is not a duration; write a number followed by a unit (ms, s, m, h), e.g. \"2s\""
            ));
        }
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &t[ustart..i];
        let (nanos_per, rank): (u128, usize) = match unit {
            "d" => (86_400_000_000_000, 0),
            "h" => (3_600_000_000_000, 1),
            "m" => (60_000_000_000, 2),
            "s" => (1_000_000_000, 3),
            "ms" => (1_000_000, 4),
            "us" => (1_000, 5),
            "" => {
                return Err(format!(
                    "\"{t}\": \"{num}\" has no unit; add one (ms, s, m, h), e.g. \"{num}s\""
                ))
            }
            _ => {
                return Err(format!(
                    "\"{t}\": unknown unit \"{unit}\"; use us, ms, s, m, h or d"
                ))
            }
        };
        if last_unit_rank != usize::MAX && rank <= last_unit_rank {
            return Err(format!(
                "\"{t}\": units must go from largest to smallest, each once, e.g. \"1m30s\""
            ));
        }
        last_unit_rank = rank;
        let part = parse_decimal_scaled(num, nanos_per)
            .ok_or_else(|| format!("\"{t}\": \"{num}\" is not a number"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("\"{t}\" is too long a duration"))?;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("\"{t}\" is too long a duration"))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// `num` ("12", "1.5") times `scale`, truncated to an integer; None if not a number.
fn parse_decimal_scaled(num: &str, scale: u128) -> Option<u128> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let mut value = int.checked_mul(scale)?;
    let mut div = scale;
    for c in frac.bytes() {
        div /= 10;
        if div == 0 {
            break;
        }
        value = value.checked_add(u128::from(c - b'0') * div)?;
    }
    Some(value)
}

/// Formats a duration the way an operator writes it ("2s", "250ms", "1m30s").
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return format!("{}us", d.as_micros());
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut s = ms / 1000;
    let mut out = String::new();
    for (unit, len) in [("h", 3600), ("m", 60)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
    }

    #[test]
    fn bare_number_asks_for_a_unit() {
        let e = parse_duration("5").unwrap_err();
        assert!(e.contains("unit"), "{e}");
        assert!(e.contains("\"5s\""), "{e}");
        assert!(parse_duration("2.5").unwrap_err().contains("unit"));
        assert!(parse_duration("1m30").unwrap_err().contains("unit"));
    }

    #[test]
    fn refused() {
        for bad in [
            "", "s", "5x", "5 s", "-1s", "1s1m", "1s1s", "1..5s", "5.s", "ms5",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("5sec").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(fmt_duration(Duration::from_secs(3600)), "1h");
    }
}
