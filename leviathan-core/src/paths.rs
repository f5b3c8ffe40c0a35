//! `allowed_paths` rules: which repository paths a task may change.
//!
//! An entry ending in `/` is a directory prefix that respects path boundaries (`docs/` allows
//! `docs/a.md` and `docs` itself, never `docs2/x`); anything else is one exact file. Paths are
//! repository-relative POSIX paths; `..` and `.` segments, absolute paths, backslashes, empty
//! segments and NUL are refused, so a rule can never reach outside the repository.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a path or rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path `{path}` is invalid: {reason}")]
pub struct PathError {
    /// The offending path (truncated).
    pub path: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

/// Checks that `path` is a normalized, repository-relative POSIX path (no trailing slash).
pub fn check_repo_path(path: &str) -> Result<(), PathError> {
    let err = |reason| PathError {
        path: crate::text::ellipsize(path, 120),
        reason,
    };
    if path.is_empty() {
        return Err(err("must not be empty"));
    }
    if path.contains('\0') {
        return Err(err("must not contain NUL"));
    }
    if path.contains('\\') {
        return Err(err("must use `/` separators, not backslashes"));
    }
    if path.starts_with('/') {
        return Err(err("must be relative to the repository root, not absolute"));
    }
    if path.len() >= 2 && path.as_bytes()[1] == b':' && path.as_bytes()[0].is_ascii_alphabetic() {
        return Err(err("must not be a drive-letter path"));
    }
    for segment in path.split('/') {
        match segment {
            "" => {
                return Err(err(
                    "must not contain empty segments (`//` or a trailing `/`)",
                ));
            }
            "." => return Err(err("must not contain `.` segments")),
            ".." => return Err(err("must not contain `..` segments")),
            _ => {}
        }
    }
    if path == ".git" || path.starts_with(".git/") {
        return Err(err("must not point into `.git`"));
    }
    Ok(())
}

/// One `allowed_paths` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathRule {
    /// Exactly this file.
    File(String),
    /// This directory and everything below it (stored without the trailing `/`).
    Dir(String),
}

impl PathRule {
    /// Parses an entry: a trailing `/` makes it a directory prefix.
    pub fn parse(entry: &str) -> Result<Self, PathError> {
        match entry.strip_suffix('/') {
            Some(dir) => {
                check_repo_path(dir).map_err(|e| PathError {
                    path: entry.to_owned(),
                    reason: e.reason,
                })?;
                Ok(Self::Dir(dir.to_owned()))
            }
            None => {
                check_repo_path(entry)?;
                Ok(Self::File(entry.to_owned()))
            }
        }
    }

    /// True when this rule allows changing `path` (a normalized repository path).
    pub fn allows(&self, path: &str) -> bool {
        match self {
            Self::File(file) => path == file,
            Self::Dir(dir) => {
                path == dir
                    || (path.len() > dir.len()
                        && path.starts_with(dir.as_str())
                        && path.as_bytes()[dir.len()] == b'/')
            }
        }
    }

    /// True when every path this rule allows lies under the prefix `prefix` (a target's
    /// `allowed_path_prefixes` entry, also boundary-safe when it ends in `/`).
    pub fn within_prefix(&self, prefix: &str) -> bool {
        let own = match self {
            Self::File(f) => f.as_str(),
            Self::Dir(d) => d.as_str(),
        };
        match prefix.strip_suffix('/') {
            Some(dir) => {
                own == dir || (own.starts_with(dir) && own.as_bytes().get(dir.len()) == Some(&b'/'))
            }
            None => own == prefix && matches!(self, Self::File(_)),
        }
    }
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => f.write_str(p),
            Self::Dir(p) => write!(f, "{p}/"),
        }
    }
}

impl Serialize for PathRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PathRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A task's whole `allowed_paths` list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AllowedPaths(pub Vec<PathRule>);

impl AllowedPaths {
    /// Parses every entry, naming the index of the first bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, (usize, PathError)> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| PathRule::parse(e.as_ref()).map_err(|err| (i, err)))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// True when some rule allows `path`. A path that is not a clean repository path is never
    /// allowed, whatever the rules say.
    pub fn allows(&self, path: &str) -> bool {
        check_repo_path(path).is_ok() && self.0.iter().any(|r| r.allows(path))
    }

    /// The exact files named by the rules (directory rules name none).
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|r| match r {
            PathRule::File(f) => Some(f.as_str()),
            PathRule::Dir(_) => None,
        })
    }

    /// True when there are no rules (nothing may change).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rules.
    pub fn iter(&self) -> impl Iterator<Item = &PathRule> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_rules_are_boundary_safe() {
        let docs = PathRule::parse("docs/").unwrap();
        assert!(docs.allows("docs/a.md"));
        assert!(docs.allows("docs/deep/b.md"));
        assert!(docs.allows("docs"));
        assert!(!docs.allows("docs2/x"));
        assert!(!docs.allows("doc"));
    }

    #[test]
    fn file_rules_are_exact() {
        let f = PathRule::parse("docs").unwrap();
        assert!(f.allows("docs"));
        assert!(!f.allows("docs/file.md"));
    }

    #[test]
    fn unsafe_entries_are_refused() {
        for (bad, why) in [
            ("../etc/passwd", "`..`"),
            ("docs/../src/x", "`..`"),
            ("/etc/passwd", "absolute"),
            ("docs\\x", "backslashes"),
            ("", "empty"),
            ("a//b", "empty segments"),
            ("a\0b", "NUL"),
            ("./a", "`.`"),
            (".git/config", ".git"),
            ("C:/x", "drive"),
        ] {
            let err = PathRule::parse(bad).unwrap_err();
            assert!(err.reason.contains(why), "{bad}: {}", err.reason);
        }
    }

    #[test]
    fn allowed_paths_name_the_bad_index() {
        let (i, err) = AllowedPaths::parse(&["docs/", "ok.md", "../x"]).unwrap_err();
        assert_eq!(i, 2);
        assert_eq!(err.path, "../x");
    }

    #[test]
    fn unnormalized_candidates_are_never_allowed() {
        let rules = AllowedPaths::parse(&["docs/"]).unwrap();
        assert!(rules.allows("docs/a.md"));
        assert!(!rules.allows("docs/../src/main.rs"));
        assert!(!rules.allows("/docs/a.md"));
    }

    #[test]
    fn prefixes() {
        let rule = PathRule::parse("docs/GUIDE.md").unwrap();
        assert!(rule.within_prefix("docs/"));
        assert!(!rule.within_prefix("doc/"));
        assert!(!PathRule::parse("docs2/x").unwrap().within_prefix("docs/"));
        assert!(PathRule::parse("docs/").unwrap().within_prefix("docs/"));
        assert!(
            PathRule::parse("README.md")
                .unwrap()
                .within_prefix("README.md")
        );
    }
}
