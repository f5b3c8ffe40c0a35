//! UTC timestamps with microsecond precision, written in exactly one way.
//!
//! The hash chain covers the timestamp's text, so a timestamp must have one spelling:
//! RFC 3339, UTC, six fractional digits and `Z` (`2026-01-28T12:00:00.123456Z`).

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, NaiveDateTime, SubsecRound, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, UTC, truncated to microseconds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

/// Why a string is not a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 timestamp (e.g. 2026-01-28T12:00:00.123456Z)")]
pub struct TimestampError(pub String);

impl Timestamp {
    /// The current time. Only runtimes call this; the projection and the planner never do.
    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    /// Truncates `dt` to microseconds.
    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.trunc_subsecs(6))
    }

    /// Microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        DateTime::from_timestamp_micros(micros).map(Self)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(&self) -> i64 {
        self.0.timestamp_micros()
    }

    /// The underlying chrono value.
    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// Parses RFC 3339 with any offset (converted to UTC) or a naive ISO 8601 date-time, which is
    /// taken as UTC (the predecessor's workers sent naive UTC). Digits past microseconds are dropped.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Ok(Self::from_datetime(dt.with_timezone(&Utc)));
        }
        for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
            if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
                return Ok(Self::from_datetime(naive.and_utc()));
            }
        }
        Err(TimestampError(crate::text::ellipsize(s, 64)))
    }

    /// Adds a duration, saturating at the far future.
    pub fn saturating_add(&self, d: Duration) -> Self {
        let delta = TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        Self(
            self.0
                .checked_add_signed(delta)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    /// The time from `earlier` to `self`, zero when `earlier` is later.
    pub fn saturating_since(&self, earlier: Timestamp) -> Duration {
        (self.0 - earlier.0).to_std().unwrap_or(Duration::ZERO)
    }

    /// Writes the canonical spelling into `out` (27 bytes).
    ///
    /// Hand-rolled rather than `format!`: it runs once per event on the verification path.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        use chrono::{Datelike, Timelike};
        // One decomposition of the UTC date-time, not one per field.
        let dt = self.0.naive_utc();
        let year = dt.year();
        if !(0..=9999).contains(&year) {
            // Outside RFC 3339's four-digit years; chrono's own spelling keeps it unambiguous.
            out.extend_from_slice(
                self.0
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string()
                    .as_bytes(),
            );
            return;
        }
        let micros = dt.nanosecond() % 1_000_000_000 / 1_000;
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut buf[0..4], year as u32);
        put_digits(&mut buf[5..7], dt.month());
        put_digits(&mut buf[8..10], dt.day());
        put_digits(&mut buf[11..13], dt.hour());
        put_digits(&mut buf[14..16], dt.minute());
        put_digits(&mut buf[17..19], dt.second());
        put_digits(&mut buf[20..26], micros);
        out.extend_from_slice(&buf);
    }
}

/// Writes `value` as zero-padded decimal filling `slot`.
fn put_digits(slot: &mut [u8], mut value: u32) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(27);
        self.write_canonical(&mut out);
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, TimestampError> {
        Self::parse(s)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(dt: DateTime<Utc>) -> Self {
        Self::from_datetime(dt)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling() {
        for (input, want) in [
            ("2026-01-28T12:00:01Z", "2026-01-28T12:00:01.000000Z"),
            ("2026-01-28T12:00:00.123456Z", "2026-01-28T12:00:00.123456Z"),
            ("2026-01-28T13:00:00.5+01:00", "2026-01-28T12:00:00.500000Z"),
            (
                "2026-01-28T12:00:00.123456789Z",
                "2026-01-28T12:00:00.123456Z",
            ),
            ("2026-01-28T12:00:00.123456", "2026-01-28T12:00:00.123456Z"),
            ("2026-01-28T12:00:00", "2026-01-28T12:00:00.000000Z"),
        ] {
            assert_eq!(
                Timestamp::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn canonical_bytes_match_display() {
        let t = Timestamp::parse("2026-01-28T12:00:00.000001Z").unwrap();
        let mut out = Vec::new();
        t.write_canonical(&mut out);
        assert_eq!(out, t.to_string().into_bytes());
        assert_eq!(out.len(), 27);
    }

    #[test]
    fn arithmetic() {
        let t = Timestamp::parse("2026-01-28T12:00:00Z").unwrap();
        let later = t.saturating_add(Duration::from_secs(90));
        assert_eq!(later.to_string(), "2026-01-28T12:01:30.000000Z");
        assert_eq!(later.saturating_since(t), Duration::from_secs(90));
        assert_eq!(t.saturating_since(later), Duration::ZERO);
    }
}
