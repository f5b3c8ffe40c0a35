//! `.leviathan/backlog.yaml`: the tasks of a target repository.
//!
//! Accepted shapes (the predecessor's): a mapping with `tasks:` (plus optional `version`,
//! `max_open_prs`, `metadata`), or a bare list of tasks. A task's id is `id`, or `task_id` when
//! `id` is absent. Errors name the file, the task (index and id) and the field.

use std::collections::HashMap;

use serde_json::Value;

use crate::{id::TaskId, model::TaskSpec};

/// The default location of the backlog inside a target repository.
pub const DEFAULT_BACKLOG_PATH: &str = ".leviathan/backlog.yaml";

/// A parsed backlog.
#[derive(Clone, Debug, PartialEq)]
pub struct Backlog {
    /// The tasks, in file order.
    pub tasks: Vec<BacklogTask>,
    /// `version`, when given.
    pub version: Option<String>,
}

/// One task of the backlog.
#[derive(Clone, Debug, PartialEq)]
pub struct BacklogTask {
    /// The task id.
    pub id: TaskId,
    /// Its definition.
    pub spec: TaskSpec,
}

impl Backlog {
    /// The task with this id.
    pub fn task(&self, id: &TaskId) -> Option<&BacklogTask> {
        self.tasks.iter().find(|t| &t.id == id)
    }
}

/// Why a backlog cannot be used, with its location.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {location}: {message}")]
pub struct BacklogError {
    /// The backlog file.
    pub file: String,
    /// `root`, or `task 2` / `task 2 (`docs-guide`)`, plus `, field `x``.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// Parses backlog `text` read from `file` (used in error messages).
pub fn parse_backlog(file: &str, text: &str) -> Result<Backlog, BacklogError> {
    let err = |location: String, message: String| BacklogError {
        file: file.to_owned(),
        location,
        message,
    };
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| err("root".into(), format!("invalid YAML: {e}")))?;
    let root: Value = serde_json::to_value(&yaml).map_err(|e| {
        err(
            "root".into(),
            format!("unsupported YAML (keys must be strings): {e}"),
        )
    })?;
    let (items, version) = match root {
        Value::Array(items) => (items, None),
        Value::Object(mut map) => {
            let tasks = map.remove("tasks").ok_or_else(|| {
                let keys: Vec<_> = map.keys().map(|k| format!("`{k}`")).collect();
                err(
                    "root".into(),
                    format!(
                        "a mapping must have a `tasks` list (found keys: {})",
                        if keys.is_empty() {
                            "none".to_owned()
                        } else {
                            keys.join(", ")
                        }
                    ),
                )
            })?;
            let Value::Array(items) = tasks else {
                return Err(err(
                    "field `tasks`".into(),
                    format!("must be a list, got {}", kind(&tasks)),
                ));
            };
            let version = map.get("version").map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            (items, version)
        }
        Value::Null => (Vec::new(), None),
        other => {
            return Err(err(
                "root".into(),
                format!(
                    "expected a mapping with `tasks` or a list of tasks, got {}",
                    kind(&other)
                ),
            ));
        }
    };

    let mut tasks = Vec::with_capacity(items.len());
    let mut seen: HashMap<TaskId, usize> = HashMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(mut map) = item else {
            return Err(err(
                format!("task {index}"),
                format!("must be a mapping, got {}", kind(&item)),
            ));
        };
        let id_value = match (map.remove("id"), map.remove("task_id")) {
            (Some(id), Some(task_id)) if id != task_id => {
                return Err(err(
                    format!("task {index}"),
                    format!("`id` ({id}) and `task_id` ({task_id}) disagree"),
                ));
            }
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => return Err(err(format!("task {index}"), "has no `id`".into())),
        };
        let id = match &id_value {
            Value::String(s) => TaskId::new(s.as_str()),
            Value::Number(n) => TaskId::new(n.to_string()),
            other => {
                return Err(err(
                    format!("task {index}, field `id`"),
                    format!("must be a string, got {}", kind(other)),
                ));
            }
        }
        .map_err(|e| err(format!("task {index}, field `id`"), e.to_string()))?;
        let location = |field: &str| format!("task {index} (`{id}`), field `{field}`");
        let spec: TaskSpec = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            let field = match message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                Some(missing) => missing.to_owned(),
                None => path,
            };
            err(location(&field), message)
        })?;
        if let Some(first) = seen.insert(id.clone(), index) {
            return Err(err(
                location("id"),
                format!("duplicates the id of task {first}"),
            ));
        }
        if let Some(i) = spec.dependencies.iter().position(|d| d == &id) {
            return Err(err(
                location(&format!("dependencies[{i}]")),
                "a task cannot depend on itself".into(),
            ));
        }
        tasks.push(BacklogTask { id, spec });
    }
    Ok(Backlog { tasks, version })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;

    const FILE: &str = ".leviathan/backlog.yaml";

    #[test]
    fn mapping_with_tasks() {
        let backlog = parse_backlog(
            FILE,
            r#"
version: "1"
tasks:
  - id: docs-ops-runbook
    title: "Operator runbook"
    scope: docs
    priority: high
    estimated_size: small
    ready: true
    status: pending
    dependencies: [self-target-bootstrap]
    allowed_paths: ["docs/RUNBOOK.md", "docs/ops/"]
    acceptance_criteria: ["Documents configuration"]
    test_command: "test -f docs/RUNBOOK.md"
metadata: {version: "0.1.0", target: leviathan}
"#,
        )
        .unwrap();
        assert_eq!(backlog.version.as_deref(), Some("1"));
        let task = &backlog.tasks[0];
        assert_eq!(task.id, "docs-ops-runbook");
        assert_eq!(task.spec.priority, Priority::High);
        assert!(task.spec.ready);
        assert_eq!(task.spec.allowed_paths.0.len(), 2);
        assert_eq!(
            task.spec.test_command.as_deref(),
            Some("test -f docs/RUNBOOK.md")
        );
    }

    #[test]
    fn bare_list_and_task_id_alias() {
        let backlog = parse_backlog(FILE, "- task_id: a\n  title: A\n- id: b\n").unwrap();
        assert_eq!(
            backlog
                .tasks
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(
            !backlog.tasks[1].spec.ready,
            "a missing ready flag means not ready"
        );
    }

    #[test]
    fn errors_name_file_task_and_field() {
        let e = parse_backlog(FILE, "- id: a\n  priority: urgent\n").unwrap_err();
        assert_eq!(e.file, FILE);
        assert_eq!(e.location, "task 0 (`a`), field `priority`");
        assert!(
            e.to_string()
                .starts_with(".leviathan/backlog.yaml: task 0 (`a`), field `priority`:"),
            "{e}"
        );

        let e = parse_backlog(FILE, "- id: a\n  allowed_paths: [\"../etc\"]\n").unwrap_err();
        assert_eq!(e.location, "task 0 (`a`), field `allowed_paths[0]`");

        let e = parse_backlog(FILE, "- title: no id\n").unwrap_err();
        assert_eq!(
            (e.location.as_str(), e.message.as_str()),
            ("task 0", "has no `id`")
        );

        let e = parse_backlog(FILE, "other: 1\n").unwrap_err();
        assert!(e.message.contains("found keys: `other`"), "{e}");

        let e = parse_backlog(FILE, "tasks: nope\n").unwrap_err();
        assert_eq!(e.location, "field `tasks`");

        let e = parse_backlog(FILE, "- 3\n").unwrap_err();
        assert_eq!(e.message, "must be a mapping, got a number");

        let e = parse_backlog(FILE, "42\n").unwrap_err();
        assert!(e.message.contains("got a number"));

        let e = parse_backlog(FILE, "- id: a\n- id: a\n").unwrap_err();
        assert!(e.message.contains("duplicates the id of task 0"));

        let e = parse_backlog(FILE, "tasks: [\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"));
    }
}
