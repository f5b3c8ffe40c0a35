//! Reading and writing files of the worktree without ever leaving it: no path through a
//! symbolic link, each write atomic (temporary file in the same directory, then rename).

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use leviathan_core::paths::check_repo_path;

use crate::envelope::FileContent;

/// Files larger than this are not quoted to the model.
pub(crate) const MAX_QUOTED_FILE_BYTES: u64 = 256 * 1024;

/// `repo/<path>` after checking that `path` is a clean repository path and that no existing
/// component on the way is a symbolic link (which could point outside the worktree).
fn resolve(repo: &Path, path: &str) -> io::Result<PathBuf> {
    check_repo_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut current = repo.to_path_buf();
    for segment in path.split('/') {
        current.push(segment);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{path}` passes through a symbolic link"),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    Ok(repo.join(path))
}

/// What the model is shown about one allowed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Current {
    /// The file does not exist yet.
    Missing,
    /// Its text.
    Text(String),
    /// It exists but is not shown (binary, too large, unreadable, a link).
    Unquotable(String),
}

/// The current state of `path` in the worktree.
pub(crate) fn read_current(repo: &Path, path: &str) -> Current {
    let full = match resolve(repo, path) {
        Ok(full) => full,
        Err(e) => return Current::Unquotable(e.to_string()),
    };
    match std::fs::metadata(&full) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Current::Missing,
        Err(e) => Current::Unquotable(format!("unreadable: {e}")),
        Ok(meta) if !meta.is_file() => Current::Unquotable("not a regular file".into()),
        Ok(meta) if meta.len() > MAX_QUOTED_FILE_BYTES => {
            Current::Unquotable(format!("{} bytes, too large to quote", meta.len()))
        }
        Ok(_) => match std::fs::read(&full) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Current::Text(text),
                Err(_) => Current::Unquotable("binary content".into()),
            },
            Err(e) => Current::Unquotable(format!("unreadable: {e}")),
        },
    }
}

/// Every file under directory `dir` of the worktree (sorted, `.git` skipped, links not followed),
/// at most `limit` of them.
pub(crate) fn list_dir(repo: &Path, dir: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(root) = resolve(repo, dir) else {
        return out;
    };
    let mut stack = vec![(root, dir.to_owned())];
    while let Some((path, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries.into_iter().rev() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            let child_rel = format!("{rel}/{name}");
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push((entry.path(), child_rel)),
                Ok(_) => out.push(child_rel),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out.truncate(limit);
    out
}

/// Writes every file atomically, adding a final newline to non-empty text that lacks one.
pub(crate) fn write_all(repo: &Path, files: &[FileContent]) -> io::Result<Vec<String>> {
    // Resolve everything first, so a bad path changes nothing.
    let targets = files
        .iter()
        .map(|f| resolve(repo, &f.path).map(|p| (p, f)))
        .collect::<io::Result<Vec<_>>>()?;
    let mut written = Vec::with_capacity(files.len());
    for (target, file) in targets {
        let mut content = file.content.clone();
        if !content.is_empty() && !content.ends_with('\n') {
            content.push('\n');
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
            // A directory created just now cannot be a link; one that existed was checked.
            resolve(repo, &file.path)?;
        }
        write_atomic(&target, content.as_bytes())?;
        written.push(file.path.clone());
    }
    Ok(written)
}

/// `.<name>.<pid>.<n>.tmp` next to `target`, fsynced, then renamed over it.
fn write_atomic(target: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> FileContent {
        FileContent {
            path: path.into(),
            content: content.into(),
        }
    }

    #[test]
    fn writes_atomically_with_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(
            dir.path(),
            &[file("docs/deep/a.md", "# A"), file("empty.txt", "")],
        )
        .unwrap();
        assert_eq!(written, ["docs/deep/a.md", "empty.txt"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("docs/deep/a.md")).unwrap(),
            "# A\n"
        );
        assert_eq!(std::fs::read(dir.path().join("empty.txt")).unwrap(), b"");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("docs/deep"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn refuses_paths_through_links_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("docs")).unwrap();
        let err = write_all(
            dir.path(),
            &[file("ok.md", "fine"), file("docs/evil.md", "x")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(
            !dir.path().join("ok.md").exists(),
            "a bad path must change nothing"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(matches!(
            read_current(dir.path(), "docs/evil.md"),
            Current::Unquotable(_)
        ));
        assert!(write_all(dir.path(), &[file("../x", "")]).is_err());
    }

    #[test]
    fn current_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.md"), "text").unwrap();
        std::fs::write(dir.path().join("b.bin"), [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_current(dir.path(), "a.md"),
            Current::Text("text".into())
        );
        assert_eq!(read_current(dir.path(), "nope.md"), Current::Missing);
        assert!(matches!(
            read_current(dir.path(), "b.bin"),
            Current::Unquotable(_)
        ));
    }

    #[test]
    fn lists_directories() {
        let dir = tempfile::tempdir().unwrap();
        write_all(
            dir.path(),
            &[
                file("docs/b.md", "b"),
                file("docs/a/c.md", "c"),
                file("x.md", "x"),
            ],
        )
        .unwrap();
        assert_eq!(
            list_dir(dir.path(), "docs", 10),
            ["docs/a/c.md", "docs/b.md"]
        );
        assert_eq!(list_dir(dir.path(), "docs", 1), ["docs/a/c.md"]);
        assert!(list_dir(dir.path(), "missing", 10).is_empty());
    }
}
