//! Kubernetes names and label values derived from Leviathan ids.
//!
//! Ids may be up to 128 bytes and contain `_`, `.` and capitals; Job names must be RFC 1123
//! labels (lowercase alphanumerics and `-`, at most 63 characters) and label values at most 63
//! characters. A value that needs changing gets a hash of the original appended, so two
//! different ids never map to the same name.

use leviathan_core::AttemptId;
use sha2::{Digest, Sha256};

/// The longest RFC 1123 label, and the longest label value.
pub const MAX_LENGTH: usize = 63;

/// Hex digits of the hash suffix.
const HASH_LENGTH: usize = 8;

/// The Job of an attempt: `leviathan-<attempt_id>`, made a valid RFC 1123 label.
pub fn job_name(attempt: &AttemptId) -> String {
    let name = format!("leviathan-{attempt}");
    if is_dns_label(&name) {
        return name;
    }
    let cleaned: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    with_hash(&cleaned, attempt.as_str(), |c| c.is_ascii_alphanumeric())
}

/// The Secret holding an attempt's worker token: its Job's name with `-token` (hashed like the
/// Job's name when that would pass 63 characters).
pub fn token_secret_name(attempt: &AttemptId) -> String {
    let name = format!("{}-token", job_name(attempt));
    if name.len() <= MAX_LENGTH {
        return name;
    }
    with_hash(&job_name(attempt), &name, |c| c.is_ascii_alphanumeric())
}

/// `value` as a valid label value (at most 63 characters of `[A-Za-z0-9_.-]`, alphanumeric at
/// both ends).
pub fn label_value(value: &str) -> String {
    if is_label_value(value) {
        return value.to_owned();
    }
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    with_hash(cleaned, value, |c| c.is_ascii_alphanumeric())
}

/// `prefix` cut to leave room for `-<hash of original>`, ending in a character `keep` accepts.
fn with_hash(prefix: &str, original: &str, keep: impl Fn(char) -> bool) -> String {
    let hash = hex::encode(Sha256::digest(original.as_bytes()));
    let hash = &hash[..HASH_LENGTH];
    let room = MAX_LENGTH - HASH_LENGTH - 1;
    let cut: String = prefix.chars().take(room).collect();
    let cut = cut.trim_end_matches(|c: char| !keep(c));
    if cut.is_empty() {
        hash.to_owned()
    } else {
        format!("{cut}-{hash}")
    }
}

/// An RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LENGTH
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A label value: empty, or `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` of at most 63
/// characters.
pub fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return true;
    }
    bytes.len() <= MAX_LENGTH
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn attempt(id: &str) -> AttemptId {
        id.parse().unwrap()
    }

    #[test]
    fn ordinary_attempts_keep_their_id() {
        assert_eq!(
            job_name(&attempt("attempt-1a2b3c4d5e6f7a8b")),
            "leviathan-attempt-1a2b3c4d5e6f7a8b"
        );
        assert_eq!(label_value("docs-guide"), "docs-guide");
        assert_eq!(label_value("Task_1.v2"), "Task_1.v2");
    }

    #[test]
    fn changed_names_are_valid_and_distinct() {
        let ids = [
            "Attempt-1",
            "attempt-1",
            "attempt_1",
            "attempt.1",
            "attempt-1-",
            "attempt-1_",
            &"a".repeat(128),
            &format!("{}b", "a".repeat(127)),
            &format!("{}-{}", "x".repeat(60), "y".repeat(60)),
        ];
        let mut names = BTreeSet::new();
        for id in ids {
            let name = job_name(&attempt(id));
            assert!(is_dns_label(&name), "{id} -> {name}");
            assert!(name.starts_with("leviathan-"), "{name}");
            assert!(names.insert(name.clone()), "{id} collides as {name}");
        }
        assert_eq!(job_name(&attempt("attempt-1")), "leviathan-attempt-1");
        let long = job_name(&attempt(&"a".repeat(128)));
        assert_eq!(long.len(), MAX_LENGTH);
    }

    #[test]
    fn label_values_are_valid_and_distinct() {
        let values = [
            "task-",
            "task_",
            "task",
            "-task",
            &"t".repeat(64),
            &format!("{}.", "t".repeat(63)),
            &format!("{}-x", "t".repeat(62)),
            "ünïcode",
            "",
        ];
        let mut seen = BTreeSet::new();
        for value in values {
            let label = label_value(value);
            assert!(is_label_value(&label), "{value:?} -> {label:?}");
            assert!(
                seen.insert(label.clone()),
                "{value:?} collides as {label:?}"
            );
        }
    }

    #[test]
    fn validity_rules() {
        for ok in ["a", "a-b", "0", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        for ok in ["", "A", "a.b_c-d", &"a".repeat(63)] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["-a", "a-", "_a", "a/b", "a b", &"a".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }
}
