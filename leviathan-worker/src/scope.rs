//! `allowed_paths` on the final working tree: every staged change (new, modified, deleted,
//! renamed, untracked files included) must lie inside the task's rules; symbolic links and
//! submodules are never delivered.

use leviathan_core::paths::AllowedPaths;

/// What happened to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// New file.
    Added,
    /// Content or mode changed.
    Modified,
    /// Removed.
    Deleted,
    /// Moved (the old path is in [`Change::from`]).
    Renamed,
    /// Copied (the source is in [`Change::from`]).
    Copied,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::Renamed => "renamed",
            Self::Copied => "copied",
        }
    }
}

/// One staged change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    /// The path after the change.
    pub path: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The source of a rename or copy.
    pub from: Option<String>,
    /// The index mode after the change (`100644`, `120000` for a symlink, `160000` for a
    /// submodule, `000000` when deleted).
    pub mode: String,
}

/// Why `git status` output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable `git status --porcelain=v2 -z` entry: {0}")]
pub(crate) struct StatusError(String);

/// Parses `git status --porcelain=v2 -z` after `git add --all`.
pub(crate) fn parse_status(raw: &[u8]) -> Result<Vec<Change>, StatusError> {
    let mut changes = Vec::new();
    let mut entries = raw
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(String::from_utf8_lossy);
    while let Some(entry) = entries.next() {
        let bad = || StatusError(entry.chars().take(200).collect());
        match entry.as_bytes()[0] {
            b'1' => {
                // 1 XY sub mH mI mW hH hI path
                let fields: Vec<&str> = entry.splitn(9, ' ').collect();
                let [_, xy, _, _, mode_index, _, _, _, path] = fields[..] else {
                    return Err(bad());
                };
                let kind = match xy.as_bytes().first() {
                    Some(b'A') => ChangeKind::Added,
                    Some(b'D') => ChangeKind::Deleted,
                    Some(b'M' | b'T') => ChangeKind::Modified,
                    // Nothing staged for this entry (e.g. an unchanged submodule): not a change.
                    Some(b'.') => continue,
                    _ => return Err(bad()),
                };
                changes.push(Change {
                    path: path.to_owned(),
                    kind,
                    from: None,
                    mode: mode_index.to_owned(),
                });
            }
            b'2' => {
                // 2 XY sub mH mI mW hH hI Xscore path NUL origPath
                let fields: Vec<&str> = entry.splitn(10, ' ').collect();
                let [_, xy, _, _, mode_index, _, _, _, _, path] = fields[..] else {
                    return Err(bad());
                };
                let kind = if xy.starts_with('C') {
                    ChangeKind::Copied
                } else {
                    ChangeKind::Renamed
                };
                let from = entries.next().ok_or_else(bad)?.into_owned();
                changes.push(Change {
                    path: path.to_owned(),
                    kind,
                    from: Some(from),
                    mode: mode_index.to_owned(),
                });
            }
            // After `git add --all` nothing is untracked; a leftover (e.g. a nested repository
            // git refuses to add) is still a change in the tree.
            b'?' => changes.push(Change {
                path: entry[2..].to_owned(),
                kind: ChangeKind::Added,
                from: None,
                mode: String::new(),
            }),
            b'u' => return Err(StatusError(format!("unmerged entry {}", bad().0))),
            b'#' | b'!' => {}
            _ => return Err(bad()),
        }
    }
    Ok(changes)
}

/// Every rule the changes break, one line each; empty when all is allowed.
pub(crate) fn violations(changes: &[Change], allowed: &AllowedPaths) -> Vec<String> {
    let mut out = Vec::new();
    for change in changes {
        let kind = change.kind.as_str();
        if !allowed.allows(&change.path) {
            out.push(format!(
                "`{}` ({kind}) is outside allowed_paths",
                change.path
            ));
        }
        if let Some(from) = &change.from
            && change.kind == ChangeKind::Renamed
            && !allowed.allows(from)
        {
            out.push(format!(
                "`{from}` (renamed to `{}`) is outside allowed_paths",
                change.path
            ));
        }
        match change.mode.as_str() {
            "120000" => out.push(format!(
                "`{}` ({kind}) is a symbolic link; links are never delivered",
                change.path
            )),
            "160000" => out.push(format!(
                "`{}` ({kind}) is a submodule; submodules are never delivered",
                change.path
            )),
            _ => {}
        }
        if change.kind == ChangeKind::Added && change.mode.is_empty() {
            out.push(format!(
                "`{}` could not be staged (a nested repository?)",
                change.path
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(entries: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            out.extend_from_slice(e.as_bytes());
            out.push(0);
        }
        out
    }

    const H: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn parses_every_entry_kind() {
        let raw = status(&[
            &format!("1 A. N... 000000 100644 100644 {H} {H} docs/new file.md"),
            &format!("1 M. N... 100644 100644 100644 {H} {H} docs/a.md"),
            &format!("1 D. N... 100644 000000 000000 {H} {H} docs/gone.md"),
            &format!("2 R. N... 100644 100644 100644 {H} {H} R100 docs/b.md"),
            "src/b.md",
            &format!("1 A. N... 000000 120000 120000 {H} {H} docs/link"),
        ]);
        let changes = parse_status(&raw).unwrap();
        assert_eq!(changes.len(), 5);
        assert_eq!(changes[0].path, "docs/new file.md");
        assert_eq!(changes[0].kind, ChangeKind::Added);
        assert_eq!(changes[2].kind, ChangeKind::Deleted);
        assert_eq!(changes[3].from.as_deref(), Some("src/b.md"));
        assert_eq!(changes[4].mode, "120000");

        let allowed = AllowedPaths::parse(&["docs/"]).unwrap();
        let v = violations(&changes, &allowed);
        assert_eq!(
            v,
            [
                "`src/b.md` (renamed to `docs/b.md`) is outside allowed_paths",
                "`docs/link` (added) is a symbolic link; links are never delivered",
            ]
        );
    }

    #[test]
    fn outside_paths_and_deletions_are_violations() {
        let raw = status(&[
            &format!("1 D. N... 100644 000000 000000 {H} {H} README.md"),
            &format!("1 A. N... 000000 100644 100644 {H} {H} docs2/x.md"),
            &format!("1 A. N... 000000 160000 160000 {H} {H} docs/sub"),
        ]);
        let changes = parse_status(&raw).unwrap();
        let allowed = AllowedPaths::parse(&["docs/"]).unwrap();
        let v = violations(&changes, &allowed);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].contains("`README.md` (deleted)"));
        assert!(v[1].contains("`docs2/x.md` (added)"));
        assert!(v[2].contains("submodule"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_status(b"1 A.\0").is_err());
        assert!(parse_status(b"z what\0").is_err());
        assert_eq!(parse_status(b"").unwrap(), []);
    }
}
