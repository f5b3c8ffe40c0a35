//! The contract between executors and the worker: the environment an executor sets, the
//! worker's exit codes and how its result is read back.
//!
//! Executors and the worker both depend on this module (and neither on the other), so the names
//! cannot drift apart.

use super::{AttemptResult, AttemptSpec, ExecutorError};

/// Target identifier.
pub const TARGET_NAME: &str = "TARGET_NAME";
/// Clone URL of the target repository.
pub const TARGET_REPO_URL: &str = "TARGET_REPO_URL";
/// Branch to check out and open the pull request against.
pub const TARGET_BRANCH: &str = "TARGET_BRANCH";
/// Task identifier.
pub const TASK_ID: &str = "TASK_ID";
/// Attempt identifier.
pub const ATTEMPT_ID: &str = "ATTEMPT_ID";
/// 1-based number of the attempt at its task.
pub const ATTEMPT_NUMBER: &str = "LEVIATHAN_ATTEMPT_NUMBER";
/// Control plane API base URL the worker reports to.
pub const CONTROL_PLANE_URL: &str = "CONTROL_PLANE_URL";
/// Control plane bearer token (secret).
pub const CONTROL_PLANE_TOKEN: &str = "CONTROL_PLANE_TOKEN";
/// Forge token used to clone, push and open the pull request (secret).
pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
/// Anthropic API key (secret).
pub const CLAUDE_API_KEY: &str = "LEVIATHAN_CLAUDE_API_KEY";
/// Bearer key of an OpenAI-compatible model server (secret).
pub const OPENAI_API_KEY: &str = "LEVIATHAN_OPENAI_API_KEY";
/// Claude model name.
pub const CLAUDE_MODEL: &str = "LEVIATHAN_CLAUDE_MODEL";
/// Directory the worker clones into.
pub const WORKSPACE_DIR: &str = "LEVIATHAN_WORKSPACE_DIR";
/// File the worker writes its result JSON to.
pub const TERMINATION_MESSAGE_PATH: &str = "LEVIATHAN_TERMINATION_MESSAGE_PATH";

/// Variables that carry credentials: never put in an [`AttemptSpec`], a log or an event; each
/// executor injects them from its own configuration.
pub const SECRET_VARIABLES: &[&str] = &[
    CONTROL_PLANE_TOKEN,
    GITHUB_TOKEN,
    CLAUDE_API_KEY,
    OPENAI_API_KEY,
];

/// Variables only the executor sets (identity, secrets, paths): [`AttemptSpec::env`] must not
/// name them. `HOME` is included because both executors give the worker a private one.
pub const RESERVED_VARIABLES: &[&str] = &[
    TARGET_NAME,
    TARGET_REPO_URL,
    TARGET_BRANCH,
    TASK_ID,
    ATTEMPT_ID,
    ATTEMPT_NUMBER,
    CONTROL_PLANE_URL,
    CONTROL_PLANE_TOKEN,
    GITHUB_TOKEN,
    CLAUDE_API_KEY,
    OPENAI_API_KEY,
    WORKSPACE_DIR,
    TERMINATION_MESSAGE_PATH,
    "HOME",
];

/// Exit code: the attempt succeeded and delivered a pull request.
pub const EXIT_SUCCEEDED: i32 = 0;
/// Exit code: the attempt failed; the failure was reported.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the worker's configuration (its environment) is unusable.
pub const EXIT_CONFIGURATION: i32 = 2;

/// The attempt's identity as worker environment, in the guide's order: target, repository,
/// branch, task, attempt, attempt number.
pub fn attempt_variables(spec: &AttemptSpec) -> [(&'static str, String); 6] {
    [
        (TARGET_NAME, spec.target_id.to_string()),
        (TARGET_REPO_URL, spec.repo_url.clone()),
        (TARGET_BRANCH, spec.base_branch.clone()),
        (TASK_ID, spec.task_id.to_string()),
        (ATTEMPT_ID, spec.attempt_id.to_string()),
        (ATTEMPT_NUMBER, spec.attempt_number.to_string()),
    ]
}

/// Refuses a spec whose `env` sets a variable only an executor may set (identity, secrets,
/// paths): every executor checks this before starting anything.
pub fn check_spec(spec: &AttemptSpec) -> Result<(), ExecutorError> {
    let reserved: Vec<&str> = spec
        .env
        .keys()
        .map(String::as_str)
        .filter(|name| RESERVED_VARIABLES.contains(name))
        .collect();
    if reserved.is_empty() {
        return Ok(());
    }
    Err(ExecutorError::Rejected {
        reason: format!(
            "attempt {}: env sets variables only the executor may set: {}",
            spec.attempt_id,
            reserved.join(", ")
        ),
        source: None,
    })
}

/// The worker's result from its output or termination message: the last non-empty line, parsed
/// as an [`AttemptResult`]. `None` when that line is not a result (the worker crashed, or
/// printed something after it).
pub fn parse_worker_result(text: &str) -> Option<AttemptResult> {
    serde_json::from_str(last_line(text)?).ok()
}

/// The last non-empty line of a worker's output, trimmed.
pub fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|line| !line.is_empty())
}

/// The last non-empty line of a worker's output cut to 200 characters, for a failure summary
/// that says how a worker ended without a result; `(no output)` when there is none.
pub fn summary_line(text: &str) -> String {
    last_line(text).map_or_else(
        || "(no output)".to_owned(),
        |line| crate::text::ellipsize(line, 200),
    )
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;
    use crate::model::{Failure, FailureClass, FailureKind};

    fn spec() -> AttemptSpec {
        AttemptSpec {
            attempt_id: "attempt-1".parse().unwrap(),
            attempt_number: 2,
            task_id: "docs-guide".parse().unwrap(),
            target_id: "demo".parse().unwrap(),
            repo_url: "https://example.com/demo.git".to_owned(),
            base_branch: "main".to_owned(),
            deadline: Duration::from_secs(60),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn reads_the_last_non_empty_line() {
        let text = "cloning\n{\"result\":\"failed\",\"kind\":\"x\"}\nworking\n\
            {\"result\":\"succeeded\",\"branch\":\"agent/t-a\",\"commit_sha\":\"abc\",\
            \"pr_number\":7,\"pr_url\":\"https://example.com/pr/7\"}\n\n  \n";
        assert_eq!(
            parse_worker_result(text),
            Some(AttemptResult::Succeeded {
                branch: "agent/t-a".to_owned(),
                commit_sha: "abc".to_owned(),
                pr_number: 7,
                pr_url: "https://example.com/pr/7".to_owned(),
            })
        );
        let failed = r#"{"result":"failed","kind":"tests_failed","class":"transient","summary":"2 tests fail"}"#;
        assert_eq!(
            parse_worker_result(failed),
            Some(AttemptResult::Failed(Failure {
                kind: FailureKind::TestsFailed,
                class: FailureClass::Transient,
                summary: "2 tests fail".to_owned(),
            }))
        );
    }

    #[test]
    fn anything_else_is_no_result() {
        for text in [
            "",
            "\n \n",
            "panicked at src/main.rs",
            "{\"result\":\"succeeded\"}\nstack trace follows",
            "{\"result\":\"exploded\"}",
            "{\"result\":\"failed\",\"kind\":\"no_such_kind\",\"class\":\"transient\",\"summary\":\"\"}",
        ] {
            assert_eq!(parse_worker_result(text), None, "{text:?}");
        }
    }

    #[test]
    fn summary_lines_are_short() {
        assert_eq!(summary_line("a\n  b  \n\n"), "b");
        assert_eq!(summary_line(" \n"), "(no output)");
        let long = summary_line(&"x".repeat(500));
        assert_eq!(long.chars().count(), 201);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn a_result_round_trips_through_the_parser() {
        let result = AttemptResult::Failed(Failure::new(FailureKind::Push, "rejected"));
        let line = serde_json::to_string(&result).unwrap();
        assert_eq!(parse_worker_result(&format!("log\n{line}\n")), Some(result));
    }

    #[test]
    fn attempt_variables_follow_the_spec() {
        let vars = attempt_variables(&spec());
        let names: Vec<&str> = vars.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "TARGET_NAME",
                "TARGET_REPO_URL",
                "TARGET_BRANCH",
                "TASK_ID",
                "ATTEMPT_ID",
                "LEVIATHAN_ATTEMPT_NUMBER"
            ]
        );
        let values: Vec<&str> = vars.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            values,
            [
                "demo",
                "https://example.com/demo.git",
                "main",
                "docs-guide",
                "attempt-1",
                "2"
            ]
        );
    }

    #[test]
    fn reserved_names_are_found_in_spec_env() {
        let mut spec = spec();
        spec.env
            .insert("LEVIATHAN_MODEL_PROVIDER".to_owned(), "openai".to_owned());
        assert!(check_spec(&spec).is_ok());
        spec.env.insert("GITHUB_TOKEN".to_owned(), "x".to_owned());
        spec.env.insert("HOME".to_owned(), "/root".to_owned());
        let err = check_spec(&spec).unwrap_err().to_string();
        assert!(
            err.ends_with("only the executor may set: GITHUB_TOKEN, HOME"),
            "{err}"
        );
        for secret in SECRET_VARIABLES {
            assert!(RESERVED_VARIABLES.contains(secret), "{secret}");
        }
    }
}
