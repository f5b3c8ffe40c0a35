//! The prompt, laid out like the predecessor's rewrite prompt (section order and literal markers
//! kept), with a delivery section for either the JSON envelope or in-place edits.

use std::{fmt::Write as _, path::Path};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use leviathan_core::{TaskId, model::TaskSpec, paths::PathRule};

use crate::{
    files::{self, Current},
    process::last_lines,
};

/// How many lines of failing test output are fed back.
pub(crate) const FEEDBACK_LINES: usize = 200;

/// Files listed per allowed directory.
const LISTED_FILES_PER_DIR: usize = 200;

/// How the model delivers its change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStyle {
    /// Answers with the `{"files":[…]}` envelope.
    Envelope,
    /// Edits the worktree in place.
    InPlace,
}

/// What went wrong with the previous answer, told to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Feedback {
    /// The answer could not be used.
    InvalidOutput(String),
    /// The change was applied and the tests failed.
    TestsFailed {
        /// The test command.
        command: String,
        /// Its (redacted) output.
        output: String,
    },
}

/// Builds the prompt for `task` from the worktree's current files.
pub(crate) fn build(
    task_id: &TaskId,
    spec: &TaskSpec,
    repo: &Path,
    feedback: Option<&Feedback>,
    style: OutputStyle,
) -> String {
    let mut p = String::new();
    intro(&mut p, style);
    task_details(&mut p, task_id, spec);
    allowed_paths(&mut p, spec);
    acceptance_criteria(&mut p, spec);
    if let Some(feedback) = feedback {
        previous_answer(&mut p, feedback);
    }
    current_files(&mut p, spec, repo, feedback);
    hard_constraints(&mut p);
    file_type_rules(&mut p, spec);
    output_format(&mut p, style);
    p
}

fn intro(p: &mut String, style: OutputStyle) {
    let how = match style {
        OutputStyle::Envelope => "by returning the complete new content of every file to change",
        OutputStyle::InPlace => {
            "by editing the files of the repository checked out in the current directory"
        }
    };
    let _ = writeln!(
        p,
        "You are Leviathan, an autonomous coding agent. Implement the task below {how}.\n"
    );
}

fn task_details(p: &mut String, task_id: &TaskId, spec: &TaskSpec) {
    p.push_str("TASK DETAILS:\n");
    let _ = writeln!(p, "- ID: {task_id}");
    let _ = writeln!(p, "- Title: {}", spec.title);
    let _ = writeln!(p, "- Scope: {}", spec.scope);
    let _ = writeln!(p, "- Priority: {}", priority(spec));
    let _ = writeln!(
        p,
        "- Size: {}",
        spec.estimated_size.as_deref().unwrap_or("unknown")
    );
    if let Some(description) = spec.description.as_deref().filter(|d| !d.trim().is_empty()) {
        let _ = writeln!(p, "\nDESCRIPTION:\n{}", description.trim());
    }
}

fn allowed_paths(p: &mut String, spec: &TaskSpec) {
    p.push_str("\nALLOWED PATHS (you may ONLY modify these files):\n");
    for rule in spec.allowed_paths.iter() {
        match rule {
            PathRule::File(f) => {
                let _ = writeln!(p, "- {f}");
            }
            PathRule::Dir(d) => {
                let _ = writeln!(p, "- {d}/ (any file under this directory)");
            }
        }
    }
    if spec.allowed_paths.is_empty() {
        p.push_str("- (none: no file may be changed)\n");
    }
}

fn acceptance_criteria(p: &mut String, spec: &TaskSpec) {
    p.push_str("\nACCEPTANCE CRITERIA (all must be satisfied):\n");
    if spec.acceptance_criteria.is_empty() {
        p.push_str("(none specified)\n");
    }
    for (i, criterion) in spec.acceptance_criteria.iter().enumerate() {
        let _ = writeln!(p, "{}. {criterion}", i + 1);
    }
}

/// Why the previous answer is being replaced.
fn previous_answer(p: &mut String, feedback: &Feedback) {
    match feedback {
        Feedback::TestsFailed { command, output } => {
            p.push_str("\nRETRY ATTEMPT - PREVIOUS IMPLEMENTATION FAILED\n");
            p.push_str("Failure Type: test_failure\n");
            let _ = writeln!(p, "Test command: {command}");
            let (tail, truncated) = last_lines(output, FEEDBACK_LINES);
            p.push_str("Test output:\n```\n");
            if truncated {
                let _ = writeln!(p, "[... truncated to last {FEEDBACK_LINES} lines ...]");
            }
            p.push_str(&tail);
            p.push_str("\n```\nFix the implementation so that the tests pass.\n");
        }
        Feedback::InvalidOutput(error) => {
            p.push_str("\nPREVIOUS ANSWER WAS REJECTED\n");
            let _ = writeln!(p, "Validation error: {error}");
            p.push_str(
                "Answer again, following the output format below exactly: pure JSON, no code fences, no prose.\n",
            );
        }
    }
}

fn current_files(p: &mut String, spec: &TaskSpec, repo: &Path, feedback: Option<&Feedback>) {
    let _ = writeln!(
        p,
        "\nCURRENT FILE CONTENTS{}:",
        if matches!(feedback, Some(Feedback::TestsFailed { .. })) {
            " (after previous attempt)"
        } else {
            ""
        }
    );
    for rule in spec.allowed_paths.iter() {
        match rule {
            PathRule::File(f) => match files::read_current(repo, f) {
                Current::Missing => {
                    let _ = writeln!(
                        p,
                        "=== FILE: {f} (does not exist yet) ===\n(empty - create this file)\n=== END FILE ==="
                    );
                }
                Current::Text(text) => {
                    let _ = writeln!(p, "=== FILE: {f} (current content) ===");
                    p.push_str(&text);
                    if !text.ends_with('\n') {
                        p.push('\n');
                    }
                    p.push_str("=== END FILE ===\n");
                }
                Current::Unquotable(why) => {
                    let _ = writeln!(
                        p,
                        "=== FILE: {f} (exists, not shown: {why}) ===\n=== END FILE ==="
                    );
                }
            },
            PathRule::Dir(d) => {
                let listed = files::list_dir(repo, d, LISTED_FILES_PER_DIR);
                let _ = writeln!(p, "=== DIRECTORY: {d}/ (existing files) ===");
                if listed.is_empty() {
                    p.push_str("(no files yet)\n");
                }
                for f in listed {
                    let _ = writeln!(p, "{f}");
                }
                p.push_str("=== END DIRECTORY ===\n");
            }
        }
    }
}

fn hard_constraints(p: &mut String) {
    p.push_str(
        "\nHARD CONSTRAINTS:\n\
         - Modify ONLY the allowed paths above; any other change (including deletions, renames and symbolic links) fails the attempt.\n\
         - Do not mutate infrastructure (no `terraform apply`, no cloud create/update/delete commands).\n\
         - Respect the task scope.\n\
         - Write clean, tested code.\n\
         - Meet every acceptance criterion.\n",
    );
}

/// Rules for the kinds of files the task may change, by extension.
fn file_type_rules(p: &mut String, spec: &TaskSpec) {
    let extensions: Vec<String> = spec
        .allowed_paths
        .iter()
        .filter_map(|r| match r {
            PathRule::File(f) => f.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()),
            PathRule::Dir(_) => None,
        })
        .collect();
    let has = |exts: &[&str]| extensions.iter().any(|e| exts.contains(&e.as_str()));
    if has(&["py"]) {
        p.push_str(
            "\nPYTHON FILES (.py):\n\
             - Valid Python 3.10+.\n\
             - No escaped JSON fragments in code; use dict literals, or json.loads on a triple-quoted string for embedded JSON.\n",
        );
    }
    if has(&["json"]) {
        p.push_str("\nJSON FILES (.json):\n- Strict RFC 8259 JSON: double quotes, no comments, no trailing commas.\n");
    }
    if has(&["yaml", "yml"]) {
        p.push_str(
            "\nYAML FILES (.yaml, .yml):\n- Valid YAML 1.2; spaces for indentation, never tabs.\n",
        );
    }
    if has(&["toml"]) {
        p.push_str("\nTOML FILES (.toml):\n- Valid TOML 1.0.\n");
    }
}

fn output_format(p: &mut String, style: OutputStyle) {
    match style {
        OutputStyle::Envelope => {
            let example = format!(
                "{{\"files\":[{{\"path\":\"tests/test_config.py\",\"content_b64\":\"{}\"}},{{\"path\":\"config/settings.json\",\"content_b64\":\"{}\"}}]}}",
                STANDARD.encode("CONFIG = {\"debug\": False}\n\ndef test_config():\n    assert CONFIG[\"debug\"] is False\n"),
                STANDARD.encode("{\"debug\": false}\n"),
            );
            let _ = write!(
                p,
                "\nOUTPUT FORMAT - CRITICAL:\n\
                 Respond with exactly one JSON object and nothing else:\n\
                 {{\"files\":[{{\"path\":\"...\",\"content_b64\":\"...\"}}]}}\n\
                 - No markdown code fences, no prose before or after the JSON.\n\
                 - Include ALL allowed files listed above by their exact paths; under an allowed directory, include only the files you create or change.\n\
                 - content_b64 is the complete new content of the file, base64-encoded (standard alphabet).\n\
                 - Every object has both \"path\" and \"content_b64\".\n\
                 Example with two files:\n{example}\n"
            );
        }
        OutputStyle::InPlace => {
            p.push_str(
                "\nHOW TO DELIVER:\n\
                 Edit the files in place in the current directory (the repository's worktree). \
                 Do not commit, push or change git configuration: Leviathan checks the working tree, \
                 runs the tests, commits and opens the pull request.\n",
            );
        }
    }
}

fn priority(spec: &TaskSpec) -> &'static str {
    match spec.priority {
        leviathan_core::model::Priority::High => "high",
        leviathan_core::model::Priority::Medium => "medium",
        leviathan_core::model::Priority::Low => "low",
    }
}

#[cfg(test)]
mod tests {
    use leviathan_core::paths::AllowedPaths;

    use super::*;

    fn spec() -> TaskSpec {
        let mut spec = TaskSpec::new("Write the guide");
        spec.scope = "docs".into();
        spec.allowed_paths =
            AllowedPaths::parse(&["docs/GUIDE.md", "cfg.json", "docs/more/"]).unwrap();
        spec.acceptance_criteria = vec!["Explains setup".into(), "Has an example".into()];
        spec
    }

    #[test]
    fn sections_in_order() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(repo.path().join("docs/more")).unwrap();
        std::fs::write(repo.path().join("docs/GUIDE.md"), "old guide\n").unwrap();
        std::fs::write(repo.path().join("docs/more/x.md"), "x\n").unwrap();
        let id = TaskId::new("docs-guide").unwrap();
        let p = build(&id, &spec(), repo.path(), None, OutputStyle::Envelope);
        let markers = [
            "TASK DETAILS:",
            "- ID: docs-guide",
            "ALLOWED PATHS (you may ONLY modify these files):",
            "- docs/more/ (any file under this directory)",
            "ACCEPTANCE CRITERIA (all must be satisfied):",
            "2. Has an example",
            "CURRENT FILE CONTENTS:",
            "=== FILE: docs/GUIDE.md (current content) ===\nold guide\n=== END FILE ===",
            "=== FILE: cfg.json (does not exist yet) ===",
            "=== DIRECTORY: docs/more/ (existing files) ===\ndocs/more/x.md\n",
            "HARD CONSTRAINTS:",
            "JSON FILES (.json):",
            "OUTPUT FORMAT - CRITICAL:",
        ];
        let mut at = 0;
        for m in markers {
            let found = p[at..]
                .find(m)
                .unwrap_or_else(|| panic!("missing or out of order: {m}\n{p}"));
            at += found;
        }
        assert!(!p.contains("RETRY ATTEMPT"));
        assert!(!p.contains("PYTHON FILES"));
        assert!(!p.contains("{{\"key\""), "no doubled braces");
    }

    #[test]
    fn repair_feedback_keeps_the_last_200_lines() {
        let repo = tempfile::tempdir().unwrap();
        let output: String = (1..=250).map(|i| format!("line {i}\n")).collect();
        let feedback = Feedback::TestsFailed {
            command: "make test".into(),
            output,
        };
        let id = TaskId::new("t").unwrap();
        let p = build(
            &id,
            &spec(),
            repo.path(),
            Some(&feedback),
            OutputStyle::InPlace,
        );
        assert!(p.contains(
            "RETRY ATTEMPT - PREVIOUS IMPLEMENTATION FAILED\nFailure Type: test_failure"
        ));
        assert!(p.contains("[... truncated to last 200 lines ...]\nline 51\n"));
        assert!(!p.contains("line 50\n"));
        assert!(p.contains("line 250\n```"));
        assert!(p.contains("CURRENT FILE CONTENTS (after previous attempt):"));
        assert!(p.contains("HOW TO DELIVER:"));
        assert!(!p.contains("OUTPUT FORMAT - CRITICAL"));
    }

    #[test]
    fn invalid_output_feedback() {
        let repo = tempfile::tempdir().unwrap();
        let feedback = Feedback::InvalidOutput("Missing required paths: cfg.json".into());
        let id = TaskId::new("t").unwrap();
        let p = build(
            &id,
            &spec(),
            repo.path(),
            Some(&feedback),
            OutputStyle::Envelope,
        );
        assert!(p.contains("Validation error: Missing required paths: cfg.json"));
        assert!(p.contains("CURRENT FILE CONTENTS:\n"));
    }
}
