//! The one redaction helper: everything the worker writes out (log lines, artifacts, event
//! payloads, failure summaries, stdout and stderr) and the worker logs the local executor keeps
//! pass through a [`Redactor`] first. It lives in core so both use the same one.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// What a secret is replaced with.
pub use crate::secret::REDACTED;

/// RFC 3986's reserved and other non-unreserved characters: everything but `A-Z a-z 0-9 - . _ ~`.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Replaces every known secret, and the encodings the worker itself derives from them (the HTTP
/// Basic credential given to git, percent-encoding), with [`REDACTED`].
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    needles: Vec<String>,
}

impl Redactor {
    /// A redactor for `secrets`; empty strings are ignored.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut needles = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            needles.push(secret.to_owned());
            needles.push(basic_credential(secret));
            let encoded = utf8_percent_encode(secret, NOT_UNRESERVED).to_string();
            if encoded != secret {
                needles.push(encoded);
            }
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self { needles }
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), REDACTED);
            }
        }
        out
    }

    /// Bytes (process output, artifacts) as redacted text; invalid UTF-8 is replaced, because a
    /// secret split by a replacement character could otherwise survive.
    pub fn redact_bytes(&self, bytes: &[u8]) -> String {
        self.redact(&String::from_utf8_lossy(bytes))
    }

    /// Every string (and object key) inside a JSON value, redacted in place.
    pub fn redact_json(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                let redacted = self.redact(s);
                if redacted != *s {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let needs_key_change = map.keys().any(|k| self.redact(k) != *k);
                if needs_key_change {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        map.insert(self.redact(&k), v);
                    }
                }
                map.values_mut().for_each(|v| self.redact_json(v));
            }
            _ => {}
        }
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.needles.len())
            .finish()
    }
}

/// The `Authorization: Basic` credential the worker hands git for `token`.
pub fn basic_credential(token: &str) -> String {
    STANDARD.encode(format!("x-access-token:{token}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replaces_secrets_and_derived_forms() {
        let r = Redactor::new(["ghp_secret123", "sk/with+chars"]);
        assert_eq!(r.redact("token ghp_secret123 end"), "token [REDACTED] end");
        let basic = basic_credential("ghp_secret123");
        assert_eq!(
            r.redact(&format!("Authorization: Basic {basic}")),
            "Authorization: Basic [REDACTED]"
        );
        assert_eq!(r.redact("k=sk%2Fwith%2Bchars"), "k=[REDACTED]");
        let unicode = Redactor::new(["p\u{e4}ss~w.rd"]);
        assert_eq!(unicode.redact("u=p%C3%A4ss~w.rd"), "u=[REDACTED]");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn longest_secret_wins() {
        let r = Redactor::new(["abc", "abcdef"]);
        assert_eq!(r.redact("xabcdefx abc"), "x[REDACTED]x [REDACTED]");
    }

    #[test]
    fn empty_secrets_are_ignored() {
        let r = Redactor::new(["", "s3cr3t"]);
        assert_eq!(r.redact("a s3cr3t b"), "a [REDACTED] b");
        assert_eq!(Redactor::default().redact("plain"), "plain");
    }

    #[test]
    fn json_strings_and_keys() {
        let r = Redactor::new(["tok3n"]);
        let mut v = json!({"a": "x tok3n", "tok3n": [1, "tok3n"], "n": 5});
        r.redact_json(&mut v);
        assert_eq!(
            v,
            json!({"a": "x [REDACTED]", "[REDACTED]": [1, "[REDACTED]"], "n": 5})
        );
    }

    #[test]
    fn bytes_are_redacted_as_text() {
        let r = Redactor::new(["tok3n"]);
        let mut bytes = b"pre tok3n ".to_vec();
        bytes.push(0xff);
        let out = r.redact_bytes(&bytes);
        assert!(out.starts_with("pre [REDACTED] "), "{out}");
        assert!(!out.contains("tok3n"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let r = Redactor::new(["tok3n"]);
        assert!(!format!("{r:?}").contains("tok3n"));
    }
}
