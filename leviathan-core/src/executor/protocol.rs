//! The contract between executors and the worker: the worker's environment variables, its exit
//! codes and how its result is read back.
//!
//! [`VARIABLES`] is the one table of every variable the worker reads (each is also a constant
//! named as the variable); the worker parses these names, executors set them, and the
//! documentation's table is rendered from it by [`variables_table`]. Executors, the worker and
//! the scheduler all depend on this module (and none on another), so the names cannot drift apart.

use super::{AttemptResult, AttemptSpec, ExecutorError};

/// One environment variable of the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The name.
    pub name: &'static str,
    /// When it must be set: `yes`, `no`, or the condition.
    pub required: &'static str,
    /// The default when unset (empty: none).
    pub default: &'static str,
    /// True for credentials: never printed, scrubbed from child processes, redacted everywhere.
    pub secret: bool,
    /// What it does.
    pub description: &'static str,
}

macro_rules! variables {
    ($($ident:ident = ($name:literal, $required:literal, $default:literal, $secret:literal, $description:literal);)*) => {
        $(
            #[doc = concat!("`", $name, "`: ", $description)]
            pub const $ident: &str = $name;
        )*
        /// Every variable the worker reads, in documentation order.
        pub const VARIABLES: &[Variable] = &[$(Variable {
            name: $name,
            required: $required,
            default: $default,
            secret: $secret,
            description: $description,
        }),*];
    };
}

variables! {
    TARGET_NAME = ("TARGET_NAME", "yes", "", false,
        "Target identifier.");
    TARGET_REPO_URL = ("TARGET_REPO_URL", "yes", "", false,
        "Git repository URL: `https://…`, `http://…`, `file://…`, an absolute path, or `git@host:owner/repo.git` (cloned over HTTPS). Must not embed credentials.");
    TARGET_BRANCH = ("TARGET_BRANCH", "no", "main", false,
        "Branch to check out; the pull request is opened against it.");
    LEVIATHAN_BASE_COMMIT = ("LEVIATHAN_BASE_COMMIT", "with `LEVIATHAN_BASE_BUNDLE`", "", false,
        "The commit the attempt starts from, as `attempt.created` recorded it (set by a scheduler that delivers).");
    LEVIATHAN_BASE_BUNDLE = ("LEVIATHAN_BASE_BUNDLE", "no", "", false,
        "SHA-256 of the git bundle artifact of the base (set by a scheduler that delivers): the worker downloads it from the control plane with its attempt token and clones from it, with no forge credential, instead of cloning the repository.");
    TASK_ID = ("TASK_ID", "yes", "", false,
        "Task identifier, looked up in `.leviathan/backlog.yaml` of the cloned repository.");
    ATTEMPT_ID = ("ATTEMPT_ID", "yes", "", false,
        "Attempt identifier; the scheduler recorded `attempt.created` for it before dispatch.");
    CONTROL_PLANE_URL = ("CONTROL_PLANE_URL", "yes", "", false,
        "Control plane API base URL (`http://…` or `https://…`).");
    CONTROL_PLANE_TOKEN = ("CONTROL_PLANE_TOKEN", "yes", "", true,
        "Control plane API bearer token (the attempt's worker token); also the key of the control plane's model gateway, through which every model call goes (the worker holds no provider key).");
    GITHUB_TOKEN = ("GITHUB_TOKEN", "yes", "", true,
        "GitHub token for clone, push (given to git through its environment only) and the pull request API.");
    LEVIATHAN_CLAUDE_MODEL = ("LEVIATHAN_CLAUDE_MODEL", "no", "claude-sonnet-4-5", false,
        "Claude model name (provider `anthropic`).");
    LEVIATHAN_MODEL_PROVIDER = ("LEVIATHAN_MODEL_PROVIDER", "no", "anthropic", false,
        "`anthropic` (Messages API), `openai` (OpenAI-compatible chat completions: OpenAI, vLLM, llama.cpp, Ollama) or `command` (an external program that edits the worktree). The API providers are called through the control plane's model gateway (`CONTROL_PLANE_URL` + `/v1/gateway/anthropic` or `/v1/gateway/openai/v1`), which forwards to the upstream it is configured with.");
    LEVIATHAN_OPENAI_MODEL = ("LEVIATHAN_OPENAI_MODEL", "with `openai`", "", false,
        "Model name sent to the OpenAI-compatible server.");
    LEVIATHAN_MODEL_COMMAND = ("LEVIATHAN_MODEL_COMMAND", "with `command`", "", false,
        "Shell command (`sh -c`) run in the worktree with the prompt on stdin and the task in `LEVIATHAN_TASK_*` variables; it edits files in place. It reaches a model through the gateway: `ANTHROPIC_BASE_URL`, `OPENAI_BASE_URL` (and `OPENAI_API_BASE`) and the attempt's token as `ANTHROPIC_API_KEY` and `OPENAI_API_KEY` are set for it.");
    LEVIATHAN_MODEL_TIMEOUT_SECS = ("LEVIATHAN_MODEL_TIMEOUT_SECS", "no", "600", false,
        "Time limit of one model call (an HTTP request or one run of the command).");
    LEVIATHAN_MODEL_MAX_OUTPUT_TOKENS = ("LEVIATHAN_MODEL_MAX_OUTPUT_TOKENS", "no", "8192", false,
        "`max_tokens` of each API call.");
    LEVIATHAN_GITHUB_API_URL = ("LEVIATHAN_GITHUB_API_URL", "no", "https://api.github.com", false,
        "GitHub REST API base URL (GitHub Enterprise: `https://<host>/api/v3`).");
    LEVIATHAN_WORKSPACE_DIR = ("LEVIATHAN_WORKSPACE_DIR", "no", "`/workspace` when it is a directory, else `<temp dir>/leviathan-workspace`", false,
        "Absolute directory; the attempt works in `<dir>/<ATTEMPT_ID>` (replaced if it exists).");
    LEVIATHAN_ATTEMPT_NUMBER = ("LEVIATHAN_ATTEMPT_NUMBER", "no", "1", false,
        "1-based number of this attempt at the task (shown in the log and the pull request).");
    LEVIATHAN_REPAIR_ROUNDS = ("LEVIATHAN_REPAIR_ROUNDS", "no", "3", false,
        "Repair rounds after failing tests: each feeds the last 200 lines of test output back to the model.");
    LEVIATHAN_MAX_MODEL_CALLS = ("LEVIATHAN_MAX_MODEL_CALLS", "no", "10", false,
        "Budget: model calls per attempt, including calls whose output was unusable.");
    LEVIATHAN_MAX_TOKENS = ("LEVIATHAN_MAX_TOKENS", "no", "500000", false,
        "Budget: input plus output tokens over all model calls; no call starts once it is spent.");
    LEVIATHAN_TEST_COMMAND = ("LEVIATHAN_TEST_COMMAND", "no", "", false,
        "The target's test command (`sh -c` in the worktree), used when the task has no `test_command`; without either, tests are skipped.");
    LEVIATHAN_TEST_TIMEOUT_SECS = ("LEVIATHAN_TEST_TIMEOUT_SECS", "no", "900", false,
        "Time limit of one test run; the whole process group is killed when it is reached.");
    LEVIATHAN_LANDLOCK = ("LEVIATHAN_LANDLOCK", "no", "true", false,
        "`false` turns Landlock off for the tests and the `command` model, which may then write wherever the worker's user may (for targets whose tests write outside the worktree and `TMPDIR`). They still run in a session of their own, without capabilities.");
    LEVIATHAN_TERMINATION_MESSAGE_PATH = ("LEVIATHAN_TERMINATION_MESSAGE_PATH", "no", "`/dev/termination-log` when writable", false,
        "Absolute file the result JSON is written to (its directory must exist).");
    LEVIATHAN_GIT_AUTHOR_NAME = ("LEVIATHAN_GIT_AUTHOR_NAME", "no", "Leviathan", false,
        "Author and committer name of the attempt's commit.");
    LEVIATHAN_GIT_AUTHOR_EMAIL = ("LEVIATHAN_GIT_AUTHOR_EMAIL", "no", "leviathan@users.noreply.github.com", false,
        "Author and committer email of the attempt's commit.");
    LEVIATHAN_DRAFT_PRS = ("LEVIATHAN_DRAFT_PRS", "no", "false", false,
        "`true` opens pull requests as drafts.");
}

/// The markdown table documenting [`VARIABLES`], as the worker's README and
/// `docs/configuration.md` carry it.
pub fn variables_table() -> String {
    let mut out =
        String::from("| Variable | Required | Default | Description |\n|---|---|---|---|\n");
    for v in VARIABLES {
        let default = match v.default {
            "" => "—".to_owned(),
            d if d.starts_with('`') => d.to_owned(),
            d => format!("`{d}`"),
        };
        let required = if v.secret {
            format!("{} (secret)", v.required)
        } else {
            v.required.to_owned()
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            v.name, required, default, v.description
        ));
    }
    out
}

/// Variables that carry credentials: never put in an [`AttemptSpec`], a log or an event; each
/// executor injects them from its own configuration.
pub const SECRET_VARIABLES: &[&str] = &[CONTROL_PLANE_TOKEN, GITHUB_TOKEN];

/// Variables only the executor sets (identity, secrets, paths): [`AttemptSpec::env`] must not
/// name them. `HOME` is included because both executors give the worker a private one.
pub const RESERVED_VARIABLES: &[&str] = &[
    TARGET_NAME,
    TARGET_REPO_URL,
    TARGET_BRANCH,
    TASK_ID,
    ATTEMPT_ID,
    LEVIATHAN_ATTEMPT_NUMBER,
    CONTROL_PLANE_URL,
    CONTROL_PLANE_TOKEN,
    GITHUB_TOKEN,
    LEVIATHAN_WORKSPACE_DIR,
    LEVIATHAN_TERMINATION_MESSAGE_PATH,
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
        (LEVIATHAN_ATTEMPT_NUMBER, spec.attempt_number.to_string()),
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
            worker_token: None,
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

    /// The secret and reserved lists name variables of the one table, with the same secrecy.
    #[test]
    fn the_lists_agree_with_the_table() {
        let secret_in_table: Vec<&str> = VARIABLES
            .iter()
            .filter(|v| v.secret)
            .map(|v| v.name)
            .collect();
        assert_eq!(secret_in_table, SECRET_VARIABLES);
        for name in RESERVED_VARIABLES.iter().filter(|&&name| name != "HOME") {
            assert!(VARIABLES.iter().any(|v| v.name == *name), "{name}");
        }
        let table = variables_table();
        assert!(
            table.contains("| `GITHUB_TOKEN` | yes (secret) | — | "),
            "{table}"
        );
        assert!(
            table.contains("| `LEVIATHAN_REPAIR_ROUNDS` | no | `3` | "),
            "{table}"
        );
        assert_eq!(table.lines().count(), VARIABLES.len() + 2);
    }
}
