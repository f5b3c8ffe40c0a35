//! The trusted side's check of a proposed change: the task's `allowed_paths` and the target's
//! delivery policy, applied to what a patch really changes once applied to the base commit,
//! independently of whatever the (untrusted) worker checked. Pure: the caller reads the changes
//! from git, this module judges them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::paths::{AllowedPaths, PathRule};

/// A target's delivery policy (`delivery:` in the target file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeliveryPolicy {
    /// Paths no task may change, whatever its `allowed_paths` say.
    pub forbidden_paths: Vec<PathRule>,
    /// Most files one change may touch.
    pub max_files_changed: u32,
    /// Largest file (after the change) a change may write, in bytes.
    pub max_file_bytes: u64,
    /// Most added plus removed lines of text.
    pub max_diff_lines: u64,
    /// Whether binary files may be added or changed.
    pub allow_binary: bool,
    /// Open pull requests as drafts.
    pub draft_prs: bool,
    /// Labels put on the pull requests.
    pub labels: Vec<String>,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            forbidden_paths: Vec::new(),
            max_files_changed: 50,
            max_file_bytes: 1024 * 1024,
            max_diff_lines: 5000,
            allow_binary: false,
            draft_prs: false,
            labels: Vec::new(),
        }
    }
}

/// The words of a proposal, stored as one JSON artifact (`message_sha256` of
/// `delivery.requested`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalText {
    /// The commit message (the delivery adds `Task-ID` and `Attempt-ID` trailers).
    pub message: String,
    /// The pull request's title.
    pub title: String,
    /// The pull request's body, for a new pull request.
    pub body: String,
}

/// What happened to one path, as `git diff --raw` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// New file.
    Added,
    /// Content changed (mode changes are in the modes).
    Modified,
    /// Removed.
    Deleted,
    /// Moved from this path.
    Renamed(String),
    /// Copied from this path.
    Copied(String),
    /// The type changed (file, symlink, submodule).
    TypeChanged,
}

/// One changed path of an applied patch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The path after the change.
    pub path: String,
    /// What happened.
    pub kind: ChangeKind,
    /// Mode before (`000000` when added).
    pub old_mode: String,
    /// Mode after (`000000` when deleted; `120000` symlink, `160000` submodule).
    pub new_mode: String,
    /// Size in bytes after the change (0 when deleted).
    pub size: u64,
    /// Added plus removed lines; `None` for a binary file.
    pub lines: Option<u64>,
}

/// Why a change is refused; the text is what the operator reads in `delivery.refused`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Outside the task's `allowed_paths` (`what` says which side of a rename).
    OutOfScope {
        /// The path.
        path: String,
        /// `added`, `deleted`, `renamed from`, …
        what: &'static str,
    },
    /// Named by the target's `forbidden_paths`.
    Forbidden(String),
    /// `.git*` or `.leviathan/`, which no task rule names explicitly.
    Protected(String),
    /// A symbolic link.
    Symlink(String),
    /// A submodule (gitlink).
    Submodule(String),
    /// A mode change other than the executable bit.
    ModeChange {
        /// The path.
        path: String,
        /// Mode before.
        from: String,
        /// Mode after.
        to: String,
    },
    /// A binary file while `allow_binary` is false.
    Binary(String),
    /// A file larger than `max_file_bytes`.
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// More files than `max_files_changed`.
    TooManyFiles {
        /// Files changed.
        files: usize,
        /// The limit.
        limit: u32,
    },
    /// More lines than `max_diff_lines`.
    TooManyLines {
        /// Lines changed.
        lines: u64,
        /// The limit.
        limit: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfScope { path, what } => {
                write!(f, "`{path}` ({what}) is outside the task's allowed_paths")
            }
            Self::Forbidden(path) => write!(f, "`{path}` is in the target's forbidden_paths"),
            Self::Protected(path) => write!(
                f,
                "`{path}` is a protected path (`.git*`, `.leviathan/`) that no allowed_paths rule names"
            ),
            Self::Symlink(path) => write!(f, "`{path}` is a symbolic link"),
            Self::Submodule(path) => write!(f, "`{path}` is a submodule"),
            Self::ModeChange { path, from, to } => {
                write!(f, "`{path}` changes mode from {from} to {to}")
            }
            Self::Binary(path) => write!(f, "`{path}` is binary and allow_binary is false"),
            Self::TooLarge { path, bytes, limit } => {
                write!(f, "`{path}` has {bytes} bytes, over max_file_bytes {limit}")
            }
            Self::TooManyFiles { files, limit } => {
                write!(f, "{files} files changed, over max_files_changed {limit}")
            }
            Self::TooManyLines { lines, limit } => {
                write!(f, "{lines} lines changed, over max_diff_lines {limit}")
            }
        }
    }
}

/// Modes a delivered file may have: a regular file, executable or not.
const FILE_MODES: [&str; 2] = ["100644", "100755"];

/// Every rule `changes` break, in order; empty when the change may be delivered.
pub fn check(
    changes: &[Change],
    allowed: &AllowedPaths,
    policy: &DeliveryPolicy,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for change in changes {
        check_paths(change, allowed, policy, &mut out);
        check_content(change, policy, &mut out);
    }
    if changes.len() > policy.max_files_changed as usize {
        out.push(Violation::TooManyFiles {
            files: changes.len(),
            limit: policy.max_files_changed,
        });
    }
    let lines: u64 = changes.iter().filter_map(|c| c.lines).sum();
    if lines > policy.max_diff_lines {
        out.push(Violation::TooManyLines {
            lines,
            limit: policy.max_diff_lines,
        });
    }
    out
}

/// Scope, forbidden and protected paths, for the path and a rename's or copy's source.
fn check_paths(
    change: &Change,
    allowed: &AllowedPaths,
    policy: &DeliveryPolicy,
    out: &mut Vec<Violation>,
) {
    let what = match &change.kind {
        ChangeKind::Added => "added",
        ChangeKind::Modified => "modified",
        ChangeKind::Deleted => "deleted",
        ChangeKind::Renamed(_) => "renamed to",
        ChangeKind::Copied(_) => "copied to",
        ChangeKind::TypeChanged => "type changed",
    };
    let mut paths = vec![(change.path.as_str(), what)];
    match &change.kind {
        ChangeKind::Renamed(from) => paths.push((from, "renamed from")),
        ChangeKind::Copied(from) => paths.push((from, "copied from")),
        _ => {}
    }
    for (path, what) in paths {
        if !allowed.allows(path) {
            out.push(Violation::OutOfScope {
                path: path.to_owned(),
                what,
            });
        }
        if policy.forbidden_paths.iter().any(|rule| rule.allows(path)) {
            out.push(Violation::Forbidden(path.to_owned()));
        }
        if is_protected(path) && !names_explicitly(allowed, path) {
            out.push(Violation::Protected(path.to_owned()));
        }
    }
}

/// Symlinks, submodules, modes, binaries and sizes.
fn check_content(change: &Change, policy: &DeliveryPolicy, out: &mut Vec<Violation>) {
    let path = || change.path.clone();
    for mode in [&change.old_mode, &change.new_mode] {
        match mode.as_str() {
            "120000" => return out.push(Violation::Symlink(path())),
            "160000" => return out.push(Violation::Submodule(path())),
            _ => {}
        }
    }
    let known = |m: &str| m == "000000" || FILE_MODES.contains(&m);
    if change.kind == ChangeKind::TypeChanged
        || !known(&change.old_mode)
        || !known(&change.new_mode)
    {
        out.push(Violation::ModeChange {
            path: path(),
            from: change.old_mode.clone(),
            to: change.new_mode.clone(),
        });
    }
    if change.kind == ChangeKind::Deleted {
        return;
    }
    if change.lines.is_none() && !policy.allow_binary {
        out.push(Violation::Binary(path()));
    }
    if change.size > policy.max_file_bytes {
        out.push(Violation::TooLarge {
            path: path(),
            bytes: change.size,
            limit: policy.max_file_bytes,
        });
    }
}

/// `.git*` at any depth (`.gitignore`, `.github/`, `.gitmodules`, …) and `.leviathan/`.
fn is_protected(path: &str) -> bool {
    path == ".leviathan"
        || path.starts_with(".leviathan/")
        || path.split('/').any(|segment| segment.starts_with(".git"))
}

/// True when a rule lies inside the protected area the path is in (`.github/workflows/` for
/// `.github/workflows/ci.yml`), so the task asked for exactly that; a wide rule (`src/`) whose
/// directory merely contains a `.gitignore` does not count.
fn names_explicitly(allowed: &AllowedPaths, path: &str) -> bool {
    allowed.iter().any(|rule| {
        let (PathRule::File(own) | PathRule::Dir(own)) = rule;
        rule.allows(path) && is_protected(own)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(rules: &[&str]) -> AllowedPaths {
        AllowedPaths::parse(rules).unwrap()
    }

    fn file(path: &str, kind: ChangeKind, lines: Option<u64>) -> Change {
        let (old_mode, new_mode) = match kind {
            ChangeKind::Added => ("000000", "100644"),
            ChangeKind::Deleted => ("100644", "000000"),
            _ => ("100644", "100644"),
        };
        Change {
            path: path.into(),
            kind,
            old_mode: old_mode.into(),
            new_mode: new_mode.into(),
            size: 10,
            lines,
        }
    }

    fn texts(violations: &[Violation]) -> Vec<String> {
        violations.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn changes_in_scope_pass() {
        let changes = [
            file("docs/a.md", ChangeKind::Added, Some(3)),
            file("docs/b.md", ChangeKind::Deleted, Some(2)),
            file(
                "docs/c.md",
                ChangeKind::Renamed("docs/old.md".into()),
                Some(0),
            ),
        ];
        assert_eq!(
            check(&changes, &allowed(&["docs/"]), &DeliveryPolicy::default()),
            []
        );
    }

    #[test]
    fn both_sides_of_a_rename_and_deletions_must_be_in_scope() {
        let changes = [
            file(
                "docs/c.md",
                ChangeKind::Renamed("src/lib.rs".into()),
                Some(0),
            ),
            file("src/main.rs", ChangeKind::Deleted, Some(9)),
        ];
        assert_eq!(
            texts(&check(
                &changes,
                &allowed(&["docs/"]),
                &DeliveryPolicy::default()
            )),
            [
                "`src/lib.rs` (renamed from) is outside the task's allowed_paths",
                "`src/main.rs` (deleted) is outside the task's allowed_paths",
            ]
        );
    }

    #[test]
    fn forbidden_and_protected_paths_are_refused_even_in_scope() {
        let policy = DeliveryPolicy {
            forbidden_paths: vec![PathRule::parse("docs/secret/").unwrap()],
            ..DeliveryPolicy::default()
        };
        let changes = [
            file("docs/secret/k.md", ChangeKind::Modified, Some(1)),
            file("docs/.gitattributes", ChangeKind::Added, Some(1)),
        ];
        assert_eq!(
            check(&changes, &allowed(&["docs/"]), &policy),
            [
                Violation::Forbidden("docs/secret/k.md".into()),
                Violation::Protected("docs/.gitattributes".into()),
            ]
        );
        // A rule naming the protected area itself allows it.
        let workflow = [file(".github/workflows/ci.yml", ChangeKind::Added, Some(4))];
        assert_eq!(
            check(&workflow, &allowed(&[".github/workflows/"]), &policy),
            []
        );
        assert_eq!(
            check(&workflow, &allowed(&["docs/"]), &policy).len(),
            2,
            "out of scope and protected"
        );
    }

    #[test]
    fn symlinks_submodules_and_mode_changes_are_refused() {
        let mut link = file("docs/l", ChangeKind::Added, Some(1));
        link.new_mode = "120000".into();
        let mut module = file("docs/m", ChangeKind::Added, None);
        module.new_mode = "160000".into();
        let mut exec = file("docs/run.sh", ChangeKind::Modified, Some(0));
        exec.new_mode = "100755".into();
        let mut typed = file("docs/t", ChangeKind::TypeChanged, Some(0));
        typed.new_mode = "100755".into();
        assert_eq!(
            check(
                &[link, module, exec, typed],
                &allowed(&["docs/"]),
                &DeliveryPolicy::default()
            ),
            [
                Violation::Symlink("docs/l".into()),
                Violation::Submodule("docs/m".into()),
                Violation::ModeChange {
                    path: "docs/t".into(),
                    from: "100644".into(),
                    to: "100755".into()
                },
            ]
        );
    }

    #[test]
    fn limits_count_files_lines_bytes_and_binaries() {
        let policy = DeliveryPolicy {
            max_files_changed: 2,
            max_diff_lines: 10,
            max_file_bytes: 100,
            ..DeliveryPolicy::default()
        };
        let mut big = file("docs/big.md", ChangeKind::Added, Some(6));
        big.size = 101;
        let changes = [
            big,
            file("docs/b.md", ChangeKind::Added, Some(5)),
            file("docs/c.bin", ChangeKind::Added, None),
        ];
        assert_eq!(
            texts(&check(&changes, &allowed(&["docs/"]), &policy)),
            [
                "`docs/big.md` has 101 bytes, over max_file_bytes 100",
                "`docs/c.bin` is binary and allow_binary is false",
                "3 files changed, over max_files_changed 2",
                "11 lines changed, over max_diff_lines 10",
            ]
        );
        let binary_ok = DeliveryPolicy {
            allow_binary: true,
            ..DeliveryPolicy::default()
        };
        assert_eq!(check(&changes[2..], &allowed(&["docs/"]), &binary_ok), []);
    }
}
