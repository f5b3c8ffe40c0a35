//! Label and field selectors in the API server's query syntax (`labelSelector`, `fieldSelector`).

use std::collections::{BTreeMap, BTreeSet};

use super::store::ObjectView;

/// One label requirement.
#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}

/// A parsed label selector: all requirements must hold (an empty selector matches everything).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            requirements.push(parse_requirement(&term)?);
        }
        Ok(Self(requirements))
    }

    /// Whether `labels` satisfy every requirement.
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| requirement.matches(labels))
    }
}

/// Splits on commas that are not inside a parenthesised value set.
fn split_terms(text: &str) -> Result<Vec<String>, String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in selector {text:?}"))?;
            }
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in selector {text:?}"));
    }
    terms.push(current);
    Ok(terms
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect())
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    let invalid = || format!("unable to parse requirement: {term:?}");
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(
            valid_key(key.trim()).ok_or_else(invalid)?,
        ));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(
            valid_key(key).ok_or_else(invalid)?,
            value.trim().to_owned(),
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(
            valid_key(key).ok_or_else(invalid)?,
            value.trim().to_owned(),
        ));
    }
    if let Some(open) = term.find('(') {
        let (head, rest) = term.split_at(open);
        let values = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(invalid)?
            .split(',')
            .map(|v| v.trim().to_owned())
            .collect::<BTreeSet<_>>();
        let mut words = head.split_whitespace();
        let key = words.next().and_then(valid_key).ok_or_else(invalid)?;
        let operator = words.next().ok_or_else(invalid)?;
        if words.next().is_some() {
            return Err(invalid());
        }
        return match operator {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            _ => Err(invalid()),
        };
    }
    Ok(Requirement::Exists(valid_key(term).ok_or_else(invalid)?))
}

/// Keys are `[prefix/]name` of letters, digits, `-`, `_`, `.`.
fn valid_key(key: &str) -> Option<String> {
    let key = key.trim();
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then(|| key.to_owned())
}

/// A parsed field selector: `field=value` / `field!=value` terms, all of which must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the selector and checks every field is one the kind supports (`supported`).
    pub(crate) fn parse(text: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether the object's selectable fields satisfy every term.
    pub(crate) fn matches(&self, view: &ObjectView) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = view
                .fields
                .get(field.as_str())
                .map(String::as_str)
                .unwrap_or_default();
            (actual == value) == *equal
        })
    }
}

/// Both selectors of a list or watch request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selectors {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Selectors {
    /// Whether an object's view passes both selectors.
    pub(crate) fn matches(&self, view: &ObjectView) -> bool {
        self.labels.matches(&view.labels) && self.fields.matches(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_selector_operators() {
        let set = labels(&[("app", "leviathan"), ("tier", "worker")]);
        let cases = [
            ("app=leviathan", true),
            ("app==leviathan", true),
            ("app=other", false),
            ("app!=other", true),
            ("missing!=x", true),
            ("tier in (worker, api)", true),
            ("tier notin (worker)", false),
            ("missing notin (worker)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=leviathan,tier in (api)", false),
            ("", true),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text).unwrap();
            assert_eq!(selector.matches(&set), expected, "{text}");
        }
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        for text in ["a in (b", "a in b)", "a wat (b)", "=b", "a b"] {
            assert!(LabelSelector::parse(text).is_err(), "{text}");
        }
        assert!(FieldSelector::parse("spec.foo=x", &["metadata.name"]).is_err());
        assert!(FieldSelector::parse("metadata.name", &["metadata.name"]).is_err());
    }

    #[test]
    fn field_selector_matches_view() {
        let view = ObjectView {
            labels: BTreeMap::new(),
            fields: [
                ("metadata.name", "a".to_owned()),
                ("metadata.namespace", "ns".to_owned()),
            ]
            .into(),
        };
        let supported = ["metadata.name", "metadata.namespace"];
        assert!(
            FieldSelector::parse("metadata.name=a", &supported)
                .unwrap()
                .matches(&view)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=a", &supported)
                .unwrap()
                .matches(&view)
        );
        assert!(
            FieldSelector::parse("metadata.name==a,metadata.namespace=ns", &supported)
                .unwrap()
                .matches(&view)
        );
    }
}
