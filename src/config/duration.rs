//! Durations written as `"500ms"`, `"30s"`, `"10m"`, `"2h"`, `"30d"`, `"1h30m"`, `"2m 30s"`.
//!
//! The grammar is `humantime`'s (`humantime::parse_duration`): one or more numbers, each
//! followed by a unit, optionally separated by spaces; fractions such as `"1.5h"` and long
//! unit names (`"90 seconds"`, `"2 hours 30 min"`, `"1w"`) are accepted too. `"0"` alone is
//! zero; any other number needs a unit. Two things humantime takes are refused here, each with
//! a reason `check` prints: months and years (`"M"`, `"y"`: no fixed length, and `"5M"` is too
//! easily meant as five minutes), and anything finer than a millisecond (`"500us"`, `"1.5ms"`:
//! every duration of the gateway is kept in milliseconds or coarser). A value that would
//! overflow [`Duration`] is refused rather than wrapped or saturated. No sign is accepted.

use std::fmt;
use std::time::Duration;

/// Why a string is not a duration; displayed after `"<text>" is not a duration: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadDuration {
    Empty,
    /// A character that has no place in a duration (a sign, punctuation).
    Character(char),
    /// Something other than a number where one must be (a leading unit, `-5s`).
    NumberExpected(String),
    /// A number without a unit (`"30"`).
    UnitNeeded(u64),
    UnknownUnit(String),
    /// Months or years: no fixed length.
    Calendar(String),
    /// Below the millisecond.
    TooFine,
    TooLarge,
}

impl fmt::Display for BadDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadDuration::Empty => f.write_str("it is empty"),
            BadDuration::Character(c) => write!(f, "'{c}' has no place in a duration"),
            BadDuration::NumberExpected(at) => write!(f, "a number is expected at \"{at}\""),
            BadDuration::UnitNeeded(n) => write!(f, "{n} needs a unit, e.g. \"{n}s\""),
            BadDuration::UnknownUnit(u) => write!(
                f,
                "unknown unit \"{u}\" (units: ms, s, m, h, d, w, or their long names)"
            ),
            BadDuration::Calendar(u) => {
                write!(
                    f,
                    "months and years (\"{u}\") have no fixed length; count days"
                )
            }
            BadDuration::TooFine => f.write_str("the finest unit is the millisecond"),
            BadDuration::TooLarge => f.write_str("it is too large"),
        }
    }
}

impl std::error::Error for BadDuration {}

/// Parses a duration string.
pub fn parse(s: &str) -> Result<Duration, BadDuration> {
    use humantime::DurationError as E;
    let d = humantime::parse_duration(s).map_err(|e| match e {
        E::Empty => BadDuration::Empty,
        E::InvalidCharacter(at) => {
            BadDuration::Character(s.get(at..).and_then(|r| r.chars().next()).unwrap_or('?'))
        }
        E::NumberExpected(at) => BadDuration::NumberExpected(s.get(at..).unwrap_or(s).to_owned()),
        E::UnknownUnit { unit, value, .. } if unit.is_empty() => BadDuration::UnitNeeded(value),
        E::UnknownUnit { unit, .. } => BadDuration::UnknownUnit(unit),
        E::NumberOverflow => BadDuration::TooLarge,
    })?;
    // humantime accepted it, so every run of letters is one of its units.
    let calendar = s
        .split(|c: char| !(c.is_ascii_alphabetic() || c == 'µ'))
        .find(|unit| {
            matches!(
                *unit,
                "M" | "month" | "months" | "y" | "yr" | "yrs" | "year" | "years"
            )
        });
    if let Some(unit) = calendar {
        return Err(BadDuration::Calendar(unit.to_owned()));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(BadDuration::TooFine);
    }
    Ok(d)
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

    const H: u64 = 3_600;
    const D: u64 = 86_400;

    #[test]
    fn accepted_forms() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let cases: &[(&str, Duration)] = &[
            // The forms accepted before humantime: one integer, one unit.
            ("0s", Duration::ZERO),
            ("0ms", Duration::ZERO),
            ("0d", Duration::ZERO),
            ("500ms", ms(500)),
            ("1ms", ms(1)),
            ("30s", s(30)),
            ("90s", s(90)),
            ("10m", s(600)),
            ("2h", s(2 * H)),
            ("30d", s(30 * D)),
            ("007s", s(7)),
            ("18446744073709551615s", s(u64::MAX)),
            // Compound, spaced, fractional, long names, weeks.
            ("1h30m", s(H + 30 * 60)),
            ("1h 30m", s(H + 30 * 60)),
            ("2m 30s", s(150)),
            ("2m30s", s(150)),
            ("1d12h", s(D + 12 * H)),
            ("1s500ms", ms(1_500)),
            ("2 h", s(2 * H)),
            (" 5s", s(5)),
            ("5s ", s(5)),
            ("1.5h", s(H + 30 * 60)),
            ("0.5s", ms(500)),
            ("1.5s", ms(1_500)),
            ("90 seconds", s(90)),
            ("2 hours 30 min", s(2 * H + 30 * 60)),
            ("5sec", s(5)),
            ("10min", s(600)),
            ("3days", s(3 * D)),
            ("1w", s(7 * D)),
            ("2000us", ms(2)),
            ("0", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(*want), "{text:?}");
        }
    }

    #[test]
    fn refused_forms_say_why() {
        use BadDuration::*;
        let cases: &[(&str, BadDuration)] = &[
            ("", Empty),
            ("  ", Empty),
            ("s", NumberExpected("s".into())),
            ("ms", NumberExpected("ms".into())),
            ("30", UnitNeeded(30)),
            ("1h30", UnitNeeded(30)),
            ("-5s", NumberExpected("-5s".into())),
            ("+5s", NumberExpected("+5s".into())),
            ("five s", NumberExpected("five s".into())),
            ("１s", NumberExpected("１s".into())),
            ("5 s, 3m", Character(',')),
            ("1,5h", Character(',')),
            ("5S", UnknownUnit("S".into())),
            ("5hr30", UnitNeeded(30)),
            ("5x", UnknownUnit("x".into())),
            ("5M", Calendar("M".into())),
            ("1month", Calendar("month".into())),
            ("1y", Calendar("y".into())),
            ("2 years", Calendar("years".into())),
            ("1d 1M", Calendar("M".into())),
            ("500us", TooFine),
            ("1.5ms", TooFine),
            ("10ns", TooFine),
            ("18446744073709551616s", TooLarge),
            ("18446744073709551615m", TooLarge),
            ("213503982334602d", TooLarge),
            ("99999999999999999999999ms", TooLarge),
            // Accepted before humantime (584 million years); its millisecond limit is 584 years.
            ("18446744073709551615ms", TooLarge),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).as_ref(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn reasons_read_well() {
        let cases: &[(&str, &str)] = &[
            ("30", "30 needs a unit, e.g. \"30s\""),
            ("5S", "unknown unit \"S\""),
            (
                "5M",
                "months and years (\"M\") have no fixed length; count days",
            ),
            ("-5s", "a number is expected at \"-5s\""),
            ("1,5h", "',' has no place in a duration"),
            ("500us", "the finest unit is the millisecond"),
            ("", "it is empty"),
        ];
        for (text, want) in cases {
            let why = parse(text).unwrap_err().to_string();
            assert!(why.starts_with(want), "{text:?}: {why}");
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
            ("1h30m", "90m"),
            ("48h", "2d"),
            ("30d", "30d"),
        ];
        for (text, want) in cases {
            let d = parse(text).expect(text);
            assert_eq!(format(d), *want);
            assert_eq!(parse(want), Ok(d));
        }
    }
}
