//! The task, loaded from the cloned repository's `.leviathan/backlog.yaml` with the core parser.

use std::path::Path;

use leviathan_core::{
    TaskId,
    backlog::{BacklogTask, DEFAULT_BACKLOG_PATH, parse_backlog},
};

/// Why the task cannot be loaded; every variant names the file and (where relevant) the id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The backlog file does not exist in the repository.
    #[error("{file} not found in the repository (looking for task `{task_id}`)")]
    NoBacklog {
        /// The backlog path.
        file: String,
        /// The task looked for.
        task_id: TaskId,
    },
    /// The backlog cannot be read or parsed.
    #[error("{0}")]
    Invalid(String),
    /// The backlog has no task with this id.
    #[error("{file} has no task `{task_id}` (tasks: {known})")]
    NoTask {
        /// The backlog path.
        file: String,
        /// The task looked for.
        task_id: TaskId,
        /// The ids it has, for the operator.
        known: String,
    },
}

/// Loads `task_id` from `<repo>/.leviathan/backlog.yaml`.
pub fn load_task(repo: &Path, task_id: &TaskId) -> Result<BacklogTask, TaskError> {
    let path = repo.join(DEFAULT_BACKLOG_PATH);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TaskError::NoBacklog {
                file: DEFAULT_BACKLOG_PATH.into(),
                task_id: task_id.clone(),
            });
        }
        Err(e) => {
            return Err(TaskError::Invalid(format!(
                "{DEFAULT_BACKLOG_PATH}: cannot be read: {e}"
            )));
        }
    };
    let backlog = parse_backlog(DEFAULT_BACKLOG_PATH, &text)
        .map_err(|e| TaskError::Invalid(e.to_string()))?;
    backlog.task(task_id).cloned().ok_or_else(|| {
        let mut ids: Vec<&str> = backlog.tasks.iter().map(|t| t.id.as_str()).collect();
        let more = ids.len() > 20;
        ids.truncate(20);
        let mut known = if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.join(", ")
        };
        if more {
            known.push_str(", …");
        }
        TaskError::NoTask {
            file: DEFAULT_BACKLOG_PATH.into(),
            task_id: task_id.clone(),
            known,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with(backlog: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = backlog {
            std::fs::create_dir_all(dir.path().join(".leviathan")).unwrap();
            std::fs::write(dir.path().join(DEFAULT_BACKLOG_PATH), text).unwrap();
        }
        dir
    }

    #[test]
    fn loads_and_names_file_and_id_on_errors() {
        let id = TaskId::new("docs-guide").unwrap();
        let dir = repo_with(Some(
            "tasks:\n  - id: docs-guide\n    title: Guide\n  - id: other\n",
        ));
        assert_eq!(load_task(dir.path(), &id).unwrap().spec.title, "Guide");

        let missing = TaskId::new("nope").unwrap();
        let e = load_task(dir.path(), &missing).unwrap_err().to_string();
        assert_eq!(
            e,
            ".leviathan/backlog.yaml has no task `nope` (tasks: docs-guide, other)"
        );

        let dir = repo_with(None);
        let e = load_task(dir.path(), &id).unwrap_err().to_string();
        assert_eq!(
            e,
            ".leviathan/backlog.yaml not found in the repository (looking for task `docs-guide`)"
        );

        let dir = repo_with(Some("- id: docs-guide\n  priority: urgent\n"));
        let e = load_task(dir.path(), &id).unwrap_err().to_string();
        assert!(e.starts_with(".leviathan/backlog.yaml: task 0"), "{e}");
    }
}
