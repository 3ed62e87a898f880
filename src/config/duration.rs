//! Durations written as `"500ms"`, `"30s"`, `"10m"`, `"2h"`, `"30d"`.
//!
//! One non-negative integer followed by one unit (`ms`, `s`, `m`, `h`, `d`), nothing else: no
//! sign, no spaces, no fractions, no compound forms like `1h30m`. `"0s"` is zero. A value that
//! would overflow [`Duration`] is refused rather than wrapped or saturated.

use std::time::Duration;

/// Parses a duration string; `None` when it is not of the accepted form.
pub fn parse(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    // Only ASCII digits: the sole failure left is overflow of u64.
    let n: u64 = digits.parse().ok()?;
    let secs_per_unit: u64 = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return None,
    };
    n.checked_mul(secs_per_unit).map(Duration::from_secs)
}

/// Writes a duration back in the largest unit that divides it exactly (`"90s"`, `"2h"`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s % size == 0 {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let cases: &[(&str, Duration)] = &[
            ("0s", Duration::ZERO),
            ("0ms", Duration::ZERO),
            ("0d", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("1ms", Duration::from_millis(1)),
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("2h", Duration::from_secs(7_200)),
            ("30d", Duration::from_secs(30 * 86_400)),
            ("007s", Duration::from_secs(7)),
            (
                "18446744073709551615s",
                Duration::from_secs(18_446_744_073_709_551_615),
            ),
            (
                "18446744073709551615ms",
                Duration::from_millis(18_446_744_073_709_551_615),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Some(*want), "{text:?}");
        }
    }

    #[test]
    fn refused_forms() {
        let cases = [
            "",
            "s",
            "ms",
            "30",
            "0",
            "-5s",
            "+5s",
            " 5s",
            "5s ",
            "5 s",
            "1.5h",
            "1h30m",
            "5S",
            "5sec",
            "5us",
            "5w",
            "5y",
            "five s",
            "１s",
            "18446744073709551616s",
            "18446744073709551615m",
            "213503982334602d",
            "99999999999999999999999ms",
        ];
        for text in cases {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        let cases: &[(&str, &str)] = &[
            ("0s", "0s"),
            ("0ms", "0s"),
            ("500ms", "500ms"),
            ("1500ms", "1500ms"),
            ("2000ms", "2s"),
            ("90s", "90s"),
            ("120s", "2m"),
            ("60m", "1h"),
            ("48h", "2d"),
            ("30d", "30d"),
        ];
        for (text, want) in cases {
            let d = parse(text).expect(text);
            assert_eq!(format(d), *want);
            assert_eq!(parse(want), Some(d));
        }
    }
}
