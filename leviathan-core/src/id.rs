//! Typed identifiers.
//!
//! Ids are validated once, when they are built or deserialized, so the rest of the system can put
//! them into branch names, Kubernetes labels, URLs and composite keys without further checks.

use std::{borrow::Borrow, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: {reason}")]
pub struct IdError {
    /// The kind of identifier (`task id`, `event id`, …).
    pub kind: &'static str,
    /// The rejected value, truncated for display.
    pub value: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

impl IdError {
    fn new(kind: &'static str, value: &str, reason: &'static str) -> Self {
        Self {
            kind,
            value: crate::text::ellipsize(value, 80),
            reason,
        }
    }
}

/// Names that end up in git refs, URLs and Kubernetes labels: `[A-Za-z0-9._-]`, 1 to 128 bytes,
/// starting with a letter or digit, without `..`.
fn check_name(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::new(kind, value, "must not be empty"));
    }
    if value.len() > 128 {
        return Err(IdError::new(kind, value, "must be at most 128 bytes"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(IdError::new(
            kind,
            value,
            "may contain only ASCII letters, digits, `.`, `_` and `-`",
        ));
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(IdError::new(
            kind,
            value,
            "must start with a letter or a digit",
        ));
    }
    if value.contains("..") || value.ends_with('.') || value.ends_with(".lock") {
        return Err(IdError::new(
            kind,
            value,
            "must not contain `..` or end with `.` or `.lock`",
        ));
    }
    Ok(())
}

/// Free-form tokens such as event ids: 1 to 256 bytes, no whitespace or control characters.
fn check_token(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::new(kind, value, "must not be empty"));
    }
    if value.len() > 256 {
        return Err(IdError::new(kind, value, "must be at most 256 bytes"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(IdError::new(
            kind,
            value,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                $check($kind, &value)?;
                Ok(Self(value))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the id and returns the inner string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A target repository, e.g. `demo`.
    TargetId,
    "target id",
    check_name
);
string_id!(
    /// A task of a target's backlog, unique within its target, e.g. `docs-guide`.
    TaskId,
    "task id",
    check_name
);
string_id!(
    /// One attempt at a task, globally unique, e.g. `attempt-1a2b3c4d`.
    AttemptId,
    "attempt id",
    check_name
);
string_id!(
    /// A client-chosen event id; the key of append idempotency.
    EventId,
    "event id",
    check_token
);
string_id!(
    /// A control-plane token's public id (never its secret): what events, `token list` and
    /// revocations name, e.g. `tok-5f0c…`.
    TokenId,
    "token id",
    check_name
);
string_id!(
    /// A signing key of the control plane's keyring, named inside every token it signed.
    KeyId,
    "key id",
    check_name
);

impl AttemptId {
    /// A fresh random attempt id, `attempt-<16 hex>`.
    pub fn generate() -> Self {
        use rand_like::random_u64;
        Self(format!("attempt-{:016x}", random_u64()))
    }
}

/// A minimal source of randomness for id generation, without pulling a RNG crate into core.
mod rand_like {
    use std::{
        collections::hash_map::RandomState,
        hash::{BuildHasher, Hasher},
        sync::atomic::{AtomicU64, Ordering},
        time::{SystemTime, UNIX_EPOCH},
    };

    static COUNTER: AtomicU64 = AtomicU64::new(0);

    /// 64 bits from the process's random hash keys, the clock and a counter.
    pub(super) fn random_u64() -> u64 {
        let mut hasher = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        hasher.write_u128(nanos);
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_backlog_style_ids() {
        for ok in ["docs-guide", "attempt-1a2b3c4d", "task_001", "v1.2", "A"] {
            assert!(TaskId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn names_reject_unsafe_values() {
        for bad in [
            "",
            "-x",
            ".x",
            "a/b",
            "a b",
            "a..b",
            "x.lock",
            "é",
            "a\u{0}",
            &"x".repeat(129),
        ] {
            let err = TaskId::new(bad).unwrap_err();
            assert_eq!(err.kind, "task id");
        }
    }

    #[test]
    fn event_ids_are_tokens() {
        assert!(EventId::new("invalidation-attempt-1-1700000000.5").is_ok());
        assert!(EventId::new("550e8400-e29b-41d4-a716-446655440000").is_ok());
        assert!(EventId::new("a b").is_err());
        assert!(EventId::new("").is_err());
    }

    #[test]
    fn deserialization_validates() {
        let err = serde_json::from_str::<TargetId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("invalid target id"), "{err}");
        let ok: TargetId = serde_json::from_str("\"demo\"").unwrap();
        assert_eq!(ok, "demo");
    }

    #[test]
    fn generated_attempt_ids_are_valid_and_distinct() {
        let a = AttemptId::generate();
        let b = AttemptId::generate();
        assert_ne!(a, b);
        assert!(AttemptId::new(a.as_str()).is_ok());
    }
}
