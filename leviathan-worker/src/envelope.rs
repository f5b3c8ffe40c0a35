//! The rewrite envelope `{"files":[{"path":…,"content_b64":…}]}`, parsed as tolerantly as the
//! predecessor did (code fences, an envelope inside prose, whitespace inside base64, salvage of
//! complete entries from truncated output), then held to the task: exactly the allowed files,
//! valid JSON/YAML/TOML.

use std::collections::BTreeSet;

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use leviathan_core::paths::{AllowedPaths, check_repo_path};
use serde::de::IgnoredAny;
use serde_json::Value;

/// Standard base64 that accepts missing or present padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One file the model returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileContent {
    /// Repository-relative path.
    pub path: String,
    /// Full new content.
    pub content: String,
}

/// The files of a model answer plus notes on the repairs that were needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedFiles {
    /// The files, in answer order.
    pub files: Vec<FileContent>,
    /// What had to be repaired (`stripped markdown code fence`, …), for the log.
    pub notes: Vec<String>,
}

/// Why a model answer is unusable; the message is fed back to the model.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct OutputError(pub String);

fn err(message: impl Into<String>) -> OutputError {
    OutputError(message.into())
}

/// Parses a model answer into files (step 1 to 3 of the predecessor's pipeline).
pub(crate) fn parse(answer: &str) -> Result<ParsedFiles, OutputError> {
    let mut notes = Vec::new();
    let mut text = answer.trim();
    if let Some(inner) = first_fenced_block(text) {
        notes.push("stripped markdown code fence".to_owned());
        text = inner.trim();
    }
    let candidate = match envelope_start(text) {
        Some(start) => {
            if start > 0 {
                notes.push("extracted files envelope from surrounding text".to_owned());
            }
            &text[start..]
        }
        None => match (text.find('['), text.find('{')) {
            (Some(a), Some(o)) if a < o => {
                notes.push("extracted JSON array from surrounding text".to_owned());
                &text[a..]
            }
            (_, Some(o)) => &text[o..],
            (Some(a), None) => &text[a..],
            (None, None) => return Err(err("No JSON found in the answer")),
        },
    };

    let value = match first_json_value(candidate) {
        Ok(value) => value,
        Err(first_error) => {
            let repaired = strip_base64_whitespace(candidate);
            match (repaired != candidate)
                .then(|| first_json_value(&repaired).ok())
                .flatten()
            {
                Some(value) => {
                    notes.push("removed whitespace inside content_b64".to_owned());
                    value
                }
                None => {
                    let salvaged = salvage(candidate);
                    if salvaged.is_empty() {
                        return Err(err(format!(
                            "Invalid JSON and salvage failed: {first_error}"
                        )));
                    }
                    notes.push(format!(
                        "salvaged {} complete entr{} from invalid or truncated JSON",
                        salvaged.len(),
                        if salvaged.len() == 1 { "y" } else { "ies" }
                    ));
                    Value::Array(salvaged)
                }
            }
        }
    };
    let files = match value {
        Value::Object(mut map) => match map.remove("files") {
            Some(Value::Array(items)) => decode_items(items)?,
            Some(other) => {
                return Err(err(format!(
                    "`files` must be an array, got {}",
                    kind(&other)
                )));
            }
            None => legacy_object(map)?,
        },
        Value::Array(items) => decode_items(items)?,
        other => {
            return Err(err(format!(
                "Expected JSON array or object, got {}",
                kind(&other)
            )));
        }
    };
    Ok(ParsedFiles { files, notes })
}

/// The legacy form `{"<path>": "<raw content>"}`.
fn legacy_object(map: serde_json::Map<String, Value>) -> Result<Vec<FileContent>, OutputError> {
    if map.is_empty() {
        return Err(err("Empty object"));
    }
    map.into_iter()
        .map(|(path, content)| match content {
            Value::String(content) => Ok(FileContent { path, content }),
            other => Err(err(format!(
                "Value for '{path}' must be a string, got {}",
                kind(&other)
            ))),
        })
        .collect()
}

fn decode_items(items: Vec<Value>) -> Result<Vec<FileContent>, OutputError> {
    if items.is_empty() {
        return Err(err("Empty array"));
    }
    let mut seen = BTreeSet::new();
    let mut files = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(err(format!(
                "Item {i} must be an object, got {}",
                kind(&item)
            )));
        };
        let path = match map.get("path") {
            Some(Value::String(p)) => p.clone(),
            Some(_) => return Err(err(format!("Item {i} 'path' must be a string"))),
            None => return Err(err(format!("Item {i} missing 'path' field"))),
        };
        let b64 = match map.get("content_b64") {
            Some(Value::String(c)) => c.clone(),
            Some(_) => {
                return Err(err(format!(
                    "Item {i} ({path}) 'content_b64' must be a string"
                )));
            }
            None => {
                return Err(err(format!(
                    "Item {i} ({path}) missing 'content_b64' field"
                )));
            }
        };
        let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = BASE64
            .decode(compact.as_bytes())
            .map_err(|e| err(format!("Item {i} ({path}): base64 decode failed: {e}")))?;
        let content = String::from_utf8(bytes)
            .map_err(|_| err(format!("Item {i} ({path}): content is not UTF-8 text")))?;
        if !seen.insert(path.clone()) {
            return Err(err(format!("Duplicate path: {path}")));
        }
        files.push(FileContent { path, content });
    }
    Ok(files)
}

/// Holds parsed files to the task: valid repository paths, nothing outside `allowed`, every
/// exact file rule present, and JSON/YAML/TOML content that parses.
pub(crate) fn check(files: &[FileContent], allowed: &AllowedPaths) -> Result<(), OutputError> {
    for f in files {
        check_repo_path(&f.path).map_err(|e| err(format!("Invalid path: {e}")))?;
    }
    let mut extra: Vec<&str> = files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| !allowed.allows(p))
        .collect();
    if !extra.is_empty() {
        extra.sort_unstable();
        return Err(err(format!(
            "Extra paths not in allowed_paths: {}",
            extra.join(", ")
        )));
    }
    let returned: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let missing: Vec<&str> = allowed.files().filter(|p| !returned.contains(p)).collect();
    if !missing.is_empty() {
        return Err(err(format!(
            "Missing required paths: {}",
            missing.join(", ")
        )));
    }
    for f in files {
        check_syntax(&f.path, &f.content)?;
    }
    Ok(())
}

/// JSON, YAML (every document) and TOML must parse; other files are not checked.
fn check_syntax(path: &str, content: &str) -> Result<(), OutputError> {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("json") => serde_json::from_str::<IgnoredAny>(content)
            .map(drop)
            .map_err(|e| err(format!("JSON syntax error in {path}: {e}"))),
        Some("yaml" | "yml") => {
            for document in serde_yaml_ng::Deserializer::from_str(content) {
                serde::Deserialize::deserialize(document)
                    .map(|_: IgnoredAny| ())
                    .map_err(|e| err(format!("YAML syntax error in {path}: {e}")))?;
            }
            Ok(())
        }
        Some("toml") => content
            .parse::<toml_edit::DocumentMut>()
            .map(drop)
            .map_err(|e| {
                err(format!(
                    "TOML syntax error in {path}: {}",
                    e.to_string().trim()
                ))
            }),
        _ => Ok(()),
    }
}

/// The content of the first fenced block (```` ``` ```` with an optional tag line); when the
/// closing fence is missing (truncated output), everything after the opening line.
fn first_fenced_block(text: &str) -> Option<&str> {
    let open = text.find("```")?;
    let after_open = &text[open + 3..];
    let body_start = after_open.find('\n').map_or(after_open.len(), |i| i + 1);
    let body = &after_open[body_start..];
    Some(match body.find("```") {
        Some(close) => &body[..close],
        None => body,
    })
}

/// Where a `{ "files"` envelope starts, whitespace allowed.
fn envelope_start(text: &str) -> Option<usize> {
    text.match_indices('{')
        .map(|(start, _)| start)
        .find(|&start| text[start + 1..].trim_start().starts_with("\"files\""))
}

/// The first JSON value of `text`, ignoring whatever follows it.
fn first_json_value(text: &str) -> Result<Value, serde_json::Error> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match stream.next() {
        Some(result) => result,
        None => serde_json::from_str::<Value>(""),
    }
}

/// Removes raw whitespace inside every `"content_b64": "…"` string (never in other fields):
/// models wrap long base64 lines, which makes the JSON invalid.
fn strip_base64_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(key) = rest.find("\"content_b64\"") {
        let after_key = key + "\"content_b64\"".len();
        out.push_str(&rest[..after_key]);
        rest = &rest[after_key..];
        let trimmed = rest.trim_start();
        let Some(after_colon) = trimmed.strip_prefix(':') else {
            continue;
        };
        let value = after_colon.trim_start();
        let Some(inner) = value.strip_prefix('"') else {
            continue;
        };
        out.push_str(": \"");
        let end = inner.find('"').unwrap_or(inner.len());
        out.extend(inner[..end].chars().filter(|c| !c.is_whitespace()));
        rest = &inner[end..];
    }
    out.push_str(rest);
    out
}

/// Collects every complete `{"path": "…", "content_b64": "…"}` object (either key order; raw
/// whitespace inside the base64 tolerated) from text that is not valid JSON as a whole.
fn salvage(text: &str) -> Vec<Value> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(rel) = text[from..].find('{') {
        let start = from + rel;
        match flat_string_object(&text[start + 1..]) {
            Some((fields, consumed)) => {
                let path = fields.iter().find(|(k, _)| k == "path");
                let b64 = fields.iter().find(|(k, _)| k == "content_b64");
                if let (Some((_, path)), Some((_, b64))) = (path, b64) {
                    found.push(serde_json::json!({"path": path, "content_b64": b64}));
                }
                from = start + 1 + consumed;
            }
            None => from = start + 1,
        }
    }
    found
}

/// Parses `"k": "v", … }` (the text after `{`) with string values only; returns the pairs and
/// the bytes consumed through the closing brace, or `None` when it is not such an object or is
/// cut off.
fn flat_string_object(text: &str) -> Option<(Vec<(String, String)>, usize)> {
    let mut pairs = Vec::new();
    let mut pos = 0;
    loop {
        pos += leading_ws(&text[pos..]);
        let (key, used) = json_string(&text[pos..], false)?;
        pos += used;
        pos += leading_ws(&text[pos..]);
        pos += text[pos..].strip_prefix(':').map(|_| 1)?;
        pos += leading_ws(&text[pos..]);
        let lenient = key == "content_b64";
        let (value, used) = json_string(&text[pos..], lenient)?;
        pos += used;
        pairs.push((key, value));
        pos += leading_ws(&text[pos..]);
        match text[pos..].chars().next()? {
            ',' => pos += 1,
            '}' => return Some((pairs, pos + 1)),
            _ => return None,
        }
    }
}

fn leading_ws(text: &str) -> usize {
    text.len() - text.trim_start().len()
}

/// A JSON string literal at the start of `text`: its decoded value and its length. `lenient`
/// drops raw whitespace inside it (base64 wrapped by the model).
fn json_string(text: &str, lenient: bool) -> Option<(String, usize)> {
    if !text.starts_with('"') {
        return None;
    }
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                let literal = &text[..=i];
                let literal: String = if lenient {
                    literal.chars().filter(|c| !c.is_whitespace()).collect()
                } else {
                    literal.to_owned()
                };
                let value: String = serde_json::from_str(&literal).ok()?;
                return Some((value, i + 1));
            }
            _ => {}
        }
    }
    None
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    fn envelope(files: &[(&str, &str)]) -> String {
        let files: Vec<Value> = files
            .iter()
            .map(|(p, c)| serde_json::json!({"path": p, "content_b64": b64(c)}))
            .collect();
        serde_json::json!({ "files": files }).to_string()
    }

    fn paths(parsed: &ParsedFiles) -> Vec<&str> {
        parsed.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn plain_envelope() {
        let p = parse(&envelope(&[("docs/a.md", "# A\n"), ("b.json", "{}")])).unwrap();
        assert_eq!(paths(&p), ["docs/a.md", "b.json"]);
        assert_eq!(p.files[0].content, "# A\n");
        assert!(p.notes.is_empty());
    }

    #[test]
    fn fenced_envelope_in_prose() {
        let text = format!(
            "Here you go:\n```json\n{}\n```\nHope this helps! {{not json}}",
            envelope(&[("a.md", "x")])
        );
        let p = parse(&text).unwrap();
        assert_eq!(paths(&p), ["a.md"]);
        assert_eq!(p.notes, ["stripped markdown code fence"]);
    }

    #[test]
    fn envelope_inside_prose_without_fence() {
        let text = format!("Sure. {} That's all [1].", envelope(&[("a.md", "x")]));
        let p = parse(&text).unwrap();
        assert_eq!(paths(&p), ["a.md"]);
        assert_eq!(p.notes, ["extracted files envelope from surrounding text"]);
    }

    #[test]
    fn bare_array_and_legacy_object() {
        let text = format!(
            "files: [{{\"path\": \"a.md\", \"content_b64\": \"{}\"}}]",
            b64("x")
        );
        assert_eq!(paths(&parse(&text).unwrap()), ["a.md"]);
        let p = parse(r#"{"docs/a.md": "raw text"}"#).unwrap();
        assert_eq!(p.files[0].content, "raw text");
    }

    #[test]
    fn whitespace_inside_base64() {
        let content = "a long line of text that base64-encodes to many characters\n".repeat(3);
        let encoded = b64(&content);
        let wrapped = format!("{}\n   {}", &encoded[..40], &encoded[40..]);
        let text = format!(r#"{{"files": [{{"path": "a.md", "content_b64": "{wrapped}"}}]}}"#);
        let p = parse(&text).unwrap();
        assert_eq!(p.files[0].content, content);
        assert_eq!(p.notes, ["removed whitespace inside content_b64"]);
        // Escaped newlines are valid JSON and are dropped before decoding.
        let escaped = format!("{}\\n{}", &encoded[..40], &encoded[40..]);
        let text = format!(r#"{{"files": [{{"path": "a.md", "content_b64": "{escaped}"}}]}}"#);
        assert_eq!(parse(&text).unwrap().files[0].content, content);
    }

    #[test]
    fn salvage_from_truncated_output() {
        let full = format!(
            "```json\n{{\"files\": [{{\"path\": \"docs/a.md\", \"content_b64\": \"{}\"}}, {{\"content_b64\": \"{}\", \"path\": \"docs/b.md\"}}, {{\"path\": \"docs/c.md\", \"content_b64\": \"{}",
            b64("A"),
            b64("B"),
            &b64("C is cut")[..4]
        );
        let p = parse(&full).unwrap();
        assert_eq!(paths(&p), ["docs/a.md", "docs/b.md"]);
        assert_eq!(
            p.notes,
            [
                "stripped markdown code fence",
                "salvaged 2 complete entries from invalid or truncated JSON"
            ]
        );
    }

    #[test]
    fn item_errors() {
        for (text, want) in [
            ("[]", "Empty array"),
            (
                r#"[{"content_b64": "eA=="}]"#,
                "Item 0 missing 'path' field",
            ),
            (
                r#"[{"path": "a"}]"#,
                "Item 0 (a) missing 'content_b64' field",
            ),
            (
                r#"[{"path": "a", "content_b64": "!!!"}]"#,
                "Item 0 (a): base64 decode failed",
            ),
            (
                r#"[{"path": "a", "content_b64": "eA=="}, {"path": "a", "content_b64": "eA=="}]"#,
                "Duplicate path: a",
            ),
            ("\"just a string\"", "No JSON found"),
            ("no json at all", "No JSON found"),
            ("{\"files\": 3}", "`files` must be an array"),
            ("[1, {", "Invalid JSON and salvage failed"),
        ] {
            let e = parse(text).unwrap_err().0;
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn check_against_allowed_paths() {
        let allowed = AllowedPaths::parse(&["docs/GUIDE.md", "docs/extra/", "cfg.json"]).unwrap();
        let f = |p: &str, c: &str| FileContent {
            path: p.into(),
            content: c.into(),
        };
        assert!(check(&[f("docs/GUIDE.md", "x"), f("cfg.json", "{}")], &allowed).is_ok());
        assert!(
            check(
                &[
                    f("docs/GUIDE.md", "x"),
                    f("cfg.json", "{}"),
                    f("docs/extra/n.md", "y")
                ],
                &allowed
            )
            .is_ok()
        );
        let e = check(
            &[f("docs/GUIDE.md", "x"), f("z.md", ""), f("a.md", "")],
            &allowed,
        )
        .unwrap_err();
        assert_eq!(e.0, "Extra paths not in allowed_paths: a.md, z.md");
        let e = check(&[f("docs/GUIDE.md", "x")], &allowed).unwrap_err();
        assert_eq!(e.0, "Missing required paths: cfg.json");
        let e = check(&[f("docs/GUIDE.md", "x"), f("cfg.json", "{")], &allowed).unwrap_err();
        assert!(e.0.starts_with("JSON syntax error in cfg.json"), "{e}");
        let e = check(&[f("../x", "")], &allowed).unwrap_err();
        assert!(e.0.starts_with("Invalid path"), "{e}");
    }

    #[test]
    fn syntax_checks() {
        assert!(check_syntax("a.yaml", "a: 1\n---\nb: [2]\n").is_ok());
        assert!(
            check_syntax("a.yml", "a: [1\n")
                .unwrap_err()
                .0
                .contains("YAML syntax error")
        );
        assert!(check_syntax("a.toml", "[x]\ny = 1\n").is_ok());
        assert!(
            check_syntax("a.toml", "[x\n")
                .unwrap_err()
                .0
                .starts_with("TOML syntax error in a.toml")
        );
        assert!(check_syntax("a.md", "{{{ anything").is_ok());
    }
}
