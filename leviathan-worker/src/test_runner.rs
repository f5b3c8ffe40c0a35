//! The task's test command: `sh -c <command>` in the worktree, with a time limit, a scrubbed
//! environment and its combined output kept (redacted) for the model and the artifact.

use std::{path::Path, time::Duration};

use leviathan_core::redact::Redactor;

use crate::{
    process::{self, Spec},
    sandbox::Untrusted,
};

/// One test run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestRun {
    /// Exit code 0.
    pub passed: bool,
    /// Exit code; `None` when killed or timed out.
    pub exit_code: Option<i32>,
    /// `exit code 1`, `timed out after 900 s`, …
    pub outcome: String,
    /// Combined output, redacted.
    pub output: String,
    /// Wall time.
    pub duration: Duration,
}

impl TestRun {
    /// The last non-empty output line, for one-line summaries.
    pub(crate) fn last_line(&self) -> &str {
        last_line(&self.output)
    }
}

/// The last non-empty line of `output`.
pub(crate) fn last_line(output: &str) -> &str {
    output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Runs `command` in `repo`, confined as `untrusted` says.
pub(crate) async fn run(
    command: &str,
    repo: &Path,
    untrusted: &Untrusted,
    timeout: Duration,
    redactor: &Redactor,
) -> TestRun {
    let spec = Spec {
        program: "sh",
        args: vec!["-c".into(), command.into()],
        cwd: repo,
        env: untrusted.env.clone(),
        stdin: None,
        timeout,
        confined: Some(untrusted.confined(repo)),
    };
    match process::run(spec).await {
        Ok(done) => {
            let mut output = redactor.redact_bytes(&done.output);
            if done.truncated {
                output.insert_str(0, "[... earlier output dropped ...]\n");
            }
            if done.timed_out {
                output.push_str(&format!(
                    "\n[leviathan: the test command timed out after {} s and was killed]\n",
                    timeout.as_secs()
                ));
            }
            TestRun {
                passed: done.success(),
                exit_code: done.exit_code,
                outcome: done.describe(timeout),
                output,
                duration: done.duration,
            }
        }
        Err(e) => TestRun {
            passed: false,
            exit_code: None,
            outcome: "not started".into(),
            output: redactor.redact(&e.to_string()),
            duration: Duration::ZERO,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sandbox::SandboxSettings;

    /// No helper in a test binary: the commands run unconfined.
    fn env() -> Untrusted {
        let env = BTreeMap::from([("PATH".to_owned(), std::env::var("PATH").unwrap())]);
        Untrusted::new(env, SandboxSettings::default(), std::env::temp_dir())
    }

    #[tokio::test]
    async fn passing_failing_and_timed_out() {
        let dir = tempfile::tempdir().unwrap();
        let r = Redactor::new(["tok3n"]);
        let ok = run("echo fine", dir.path(), &env(), Duration::from_secs(30), &r).await;
        assert!(ok.passed);
        let bad = run(
            "echo 'leak tok3n'; echo 'FAILED: 1 test'; exit 2",
            dir.path(),
            &env(),
            Duration::from_secs(30),
            &r,
        )
        .await;
        assert!(!bad.passed);
        assert_eq!(bad.exit_code, Some(2));
        assert_eq!(bad.output, "leak [REDACTED]\nFAILED: 1 test\n");
        assert_eq!(bad.last_line(), "FAILED: 1 test");
        let slow = run(
            "sleep 30",
            dir.path(),
            &env(),
            Duration::from_millis(300),
            &r,
        )
        .await;
        assert!(!slow.passed);
        assert!(slow.outcome.starts_with("timed out"), "{}", slow.outcome);
        assert!(slow.output.contains("timed out"));
    }
}
