//! Canonical JSON: the exact bytes an event hash covers.
//!
//! Compact JSON with object keys sorted by their UTF-8 bytes at every depth, strings escaped
//! minimally (`"`, `\` and control characters; the latter as `\b \f \n \r \t` or lowercase
//! `\u00XX`), integers exact and floats in shortest round-trip form. This is what `serde_json`
//! writes for a `Value` whose maps are sorted; it is written here by hand so that it stays true
//! whatever `serde_json` features other crates switch on, and so that it is fast.

use serde_json::{Map, Number, Value};

/// Appends the canonical form of `value` to `out`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

/// The canonical bytes of `value`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_value(&mut out, value);
    out
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    let sorted = map
        .keys()
        .zip(map.keys().skip(1))
        .all(|(a, b)| a.as_bytes() < b.as_bytes());
    if sorted {
        for (i, (key, value)) in map.iter().enumerate() {
            write_member(out, i, key, value);
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (i, (key, value)) in entries.into_iter().enumerate() {
            write_member(out, i, key, value);
        }
    }
    out.push(b'}');
}

fn write_member(out: &mut Vec<u8>, index: usize, key: &str, value: &Value) {
    if index > 0 {
        out.push(b',');
    }
    write_str(out, key);
    out.push(b':');
    write_value(out, value);
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        let mut buf = itoa_buf();
        out.extend_from_slice(format_u64(&mut buf, u));
    } else if let Some(i) = n.as_i64() {
        out.push(b'-');
        let mut buf = itoa_buf();
        out.extend_from_slice(format_u64(&mut buf, i.unsigned_abs()));
    } else {
        // Floats: serde_json's own writer (ryu, shortest round trip, `.0` on integral values).
        // `serde_json::to_writer` into a Vec cannot fail for a finite number.
        let _ = serde_json::to_writer(&mut *out, n);
    }
}

fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

fn format_u64(buf: &mut [u8; 20], mut value: u64) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &buf[start..]
}

/// Bytes that must be escaped in a JSON string: control characters, `"` and `\\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends `s` as a JSON string with minimal escaping.
///
/// Copies the runs between escapes in one go: this runs for every string of every event that is
/// hashed or verified.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(at) = rest.iter().position(|&b| NEEDS_ESCAPE[b as usize]) {
        out.extend_from_slice(&rest[..at]);
        let b = rest[at];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// An integer literal outside the 64-bit range, which a JSON parser would silently turn into a float.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the number {literal} at byte {offset} is an integer outside the 64-bit range and cannot be stored exactly"
)]
pub struct InexactNumber {
    /// The literal as written.
    pub literal: String,
    /// Its byte offset in the document.
    pub offset: usize,
}

/// Scans raw JSON text for integer literals that do not fit `i64`/`u64`.
///
/// Such integers would be parsed as floats and change their spelling, so the hash would cover a
/// different number than the client sent. Callers run this on request bodies before parsing.
pub fn check_exact_integers(json: &[u8]) -> Result<(), InexactNumber> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                while i < json.len() {
                    match json[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                let mut integral = true;
                while i < json.len() {
                    match json[i] {
                        b'0'..=b'9' => {}
                        b'.' | b'e' | b'E' | b'+' | b'-' => integral = false,
                        _ => break,
                    }
                    i += 1;
                }
                if integral {
                    let literal = std::str::from_utf8(&json[start..i]).unwrap_or_default();
                    let fits = literal.parse::<u64>().is_ok() || literal.parse::<i64>().is_ok();
                    if !fits && !literal.is_empty() && literal != "-" {
                        return Err(InexactNumber {
                            literal: literal.to_owned(),
                            offset: start,
                        });
                    }
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_serde_json_for_sorted_values() {
        let v = json!({
            "b": [1, -2, 3.5, 1e300, 0.1, -0.0, 1.0, u64::MAX, i64::MIN],
            "a": {"z": null, "y": true, "x": "caf\u{e9} \u{2014} \u{1F600}"},
            "esc": "quote\" back\\ nl\n cr\r tab\t bs\u{8} ff\u{c} one\u{1} us\u{1f} del\u{7f}",
            "": {}
        });
        assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn sorts_keys_by_utf8_bytes() {
        let mut map = Map::new();
        for key in ["é", "z", "A", "a", "aa", ""] {
            map.insert(key.to_owned(), Value::Null);
        }
        let out = String::from_utf8(to_vec(&Value::Object(map))).unwrap();
        assert_eq!(
            out,
            r#"{"":null,"A":null,"a":null,"aa":null,"z":null,"é":null}"#
        );
    }

    #[test]
    fn control_characters_use_lowercase_hex() {
        let out = to_vec(&json!("\u{1}\u{1b}"));
        assert_eq!(out, br#""\u0001\u001b""#);
    }

    #[test]
    fn exact_integers() {
        assert!(
            check_exact_integers(br#"{"a":18446744073709551615,"b":-9223372036854775808}"#).is_ok()
        );
        assert!(check_exact_integers(br#"{"a":1e400,"b":"99999999999999999999999"}"#).is_ok());
        let err = check_exact_integers(br#"{"a":[1, 100000000000000000000]}"#).unwrap_err();
        assert_eq!(err.literal, "100000000000000000000");
        assert_eq!(err.offset, 9);
        let err = check_exact_integers(br#"{"k\"":-9223372036854775809}"#).unwrap_err();
        assert_eq!(err.literal, "-9223372036854775809");
    }
}
