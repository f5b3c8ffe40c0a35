//! Credentials that must never be printed.

use std::fmt;

/// What a credential prints as, wherever it would otherwise appear.
pub const REDACTED: &str = "[REDACTED]";

/// A credential (token, API key): `Debug` and `Display` show [`REDACTED`]; read it with
/// [`Secret::expose`] only in the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn never_formatted() {
        let s = Secret::new("tok3n");
        assert_eq!(format!("{s} {s:?}"), "[REDACTED] [REDACTED]");
        assert_eq!(s.expose(), "tok3n");
    }
}
