//! Child processes (git, the test command, the model command): a scrubbed environment, combined
//! stdout and stderr in the order they were written, a time limit that kills the whole process
//! group, and bounded output. Untrusted ones run confined (see [`crate::sandbox`]).

use leviathan_core::{executor::protocol, output::OutputTail};
use std::{
    collections::BTreeMap,
    ffi::OsString,
    io,
    path::Path,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::{
    sandbox::{self, Confined},
    secret_env, strays,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::unix::pipe,
    process::Command,
};

/// Output beyond this is dropped from the front: the end of a log is what explains a failure.
pub(crate) const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// How long to keep reading after the process exited, for output still buffered in the pipe.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    /// The program.
    pub program: &'a str,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Working directory.
    pub cwd: &'a Path,
    /// The complete environment (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Written to stdin, which is then closed; `None` gives an empty stdin.
    pub stdin: Option<Vec<u8>>,
    /// Time limit; the process group is killed when it is reached.
    pub timeout: Duration,
    /// For untrusted code: run it confined.
    pub confined: Option<Confined<'a>>,
}

/// How a child process ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Exit code; `None` when killed by a signal or the time limit.
    pub exit_code: Option<i32>,
    /// True when the time limit killed it.
    pub timed_out: bool,
    /// Combined stdout and stderr (raw, not yet redacted), at most [`MAX_OUTPUT_BYTES`].
    pub output: Vec<u8>,
    /// True when the start of the output was dropped.
    pub truncated: bool,
    /// Wall time.
    pub duration: Duration,
}

impl Finished {
    /// Exit code 0.
    pub(crate) fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// `exit code 3`, `killed by a signal` or `timed out after 60 s`.
    pub(crate) fn describe(&self, timeout: Duration) -> String {
        match (self.timed_out, self.exit_code) {
            (true, _) => format!("timed out after {} s", timeout.as_secs()),
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) => "killed by a signal".to_owned(),
        }
    }
}

/// The worker's own environment minus secrets and git's environment configuration: the base of
/// every child's environment. `remove` names further variables to drop.
pub(crate) fn scrubbed_env(secrets: &[&str]) -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(name, value)| {
            !protocol::SECRET_VARIABLES.contains(&name.as_str())
                && name != secret_env::HANDOVER_VARIABLE
                && name != sandbox::SPEC_VARIABLE
                && !name.starts_with("GIT_CONFIG_")
                && !secrets.iter().any(|s| !s.is_empty() && value.contains(s))
        })
        .collect()
}

/// The command that runs `spec` with its program, arguments and environment: through the
/// sandbox helper when it is confined and there is one (true then), else directly in a
/// process group of its own. Either way the child's id is the group to kill (the helper
/// starts a session of its own).
fn command(spec: &Spec<'_>) -> io::Result<(Command, bool)> {
    let helper = spec
        .confined
        .as_ref()
        .and_then(|c| Some((c, c.settings.helper.as_ref()?)));
    let Some((confined, helper)) = helper else {
        let mut command = Command::new(spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .process_group(0);
        return Ok((command, false));
    };
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let inner = confined.settings.spec(
        spec.program,
        &args,
        spec.cwd,
        spec.env.clone(),
        confined.writable.clone(),
    );
    let mut command = Command::new(&helper.program);
    command.args(&helper.args).env_clear().env(
        sandbox::SPEC_VARIABLE,
        serde_json::to_string(&inner).map_err(io::Error::other)?,
    );
    Ok((command, true))
}

/// Runs `spec` to its end or its time limit.
pub(crate) async fn run(spec: Spec<'_>) -> io::Result<Finished> {
    let started = Instant::now();
    let (writer, mut reader) = pipe::pipe()?;
    let writer = writer.into_blocking_fd()?;
    let stderr_writer = writer.try_clone()?;
    let (mut command, confined) = command(&spec)?;
    command
        .current_dir(spec.cwd)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(stderr_writer))
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{}`: {e}", spec.program)))?;
    // The child holds the only write ends now (the Command is dropped with its copies).
    drop(command);
    let group = child.id().and_then(|id| i32::try_from(id).ok());

    let feed = {
        let stdin = child.stdin.take();
        let input = spec.stdin.unwrap_or_default();
        async move {
            if let Some(mut stdin) = stdin {
                // A child that exits without reading its stdin is not an error of ours.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        }
    };
    let mut output = OutputTail::new(MAX_OUTPUT_BYTES);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline, feed);
    let mut fed = false;
    let mut reader_open = true;
    let mut timed_out = false;
    let status: Option<ExitStatus> = loop {
        tokio::select! {
            () = &mut feed, if !fed => fed = true,
            read = reader.read(&mut buf), if reader_open => match read {
                Ok(0) | Err(_) => reader_open = false,
                Ok(n) => output.push(&buf[..n]),
            },
            status = child.wait() => break Some(status?),
            () = &mut deadline => {
                timed_out = true;
                break None;
            }
        }
    };
    // Whatever the outcome, nothing the command started may outlive it: its group, and for
    // confined code whatever left the group too.
    if let Some(group) = group {
        kill_group(group);
    }
    if confined {
        strays::kill_descendants();
    }
    let status = match status {
        Some(status) => Some(status),
        None => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    };
    if reader_open {
        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => output.push(&buf[..n]),
                }
            }
        })
        .await;
    }
    let (output, truncated) = output.into_parts();
    Ok(Finished {
        exit_code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
        truncated,
        output,
        duration: started.elapsed(),
    })
}

fn kill_group(group: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(group) {
        // The group may already be gone; that is the outcome we want.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// The last `n` lines of `text`, and whether lines were dropped.
pub(crate) fn last_lines(text: &str, n: usize) -> (String, bool) {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= n {
        return (lines.join("\n"), false);
    }
    (lines[lines.len() - n..].join("\n"), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Spec<'static> {
        Spec {
            program: "sh",
            args: vec!["-c".into(), script.into()],
            cwd: Path::new("/"),
            env: BTreeMap::from([("PATH".to_owned(), std::env::var("PATH").unwrap())]),
            stdin: None,
            timeout,
            confined: None,
        }
    }

    #[tokio::test]
    async fn combined_output_in_order_and_exit_code() {
        let done = run(sh(
            "echo one; echo two >&2; echo three; exit 3",
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
        assert_eq!(done.exit_code, Some(3));
        assert!(!done.timed_out);
        assert_eq!(String::from_utf8(done.output).unwrap(), "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn stdin_is_fed_and_env_is_exact() {
        let mut spec = sh(
            "cat; printf '%s' \"${HOME:-unset}\"",
            Duration::from_secs(30),
        );
        spec.stdin = Some(b"prompt text\n".to_vec());
        let done = run(spec).await.unwrap();
        assert!(done.success());
        assert_eq!(
            String::from_utf8(done.output).unwrap(),
            "prompt text\nunset"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let script = format!(
            "sleep 30 & echo $! > {}; echo started; sleep 30",
            pid_file.display()
        );
        let done = run(sh(&script, Duration::from_millis(500))).await.unwrap();
        assert!(done.timed_out);
        assert_eq!(done.exit_code, None);
        assert_eq!(String::from_utf8_lossy(&done.output), "started\n");
        assert!(done.describe(Duration::from_secs(1)).contains("timed out"));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(
            poll_until_dead(pid.trim()).await,
            "the background grandchild {pid} outlived the time limit"
        );
    }

    /// True once `/proc/<pid>` is gone or a zombie (bounded poll: the kernel needs a moment to
    /// deliver SIGKILL and init to reap).
    async fn poll_until_dead(pid: &str) -> bool {
        for _ in 0..200 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                {
                    return true;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        false
    }

    #[tokio::test]
    async fn background_children_do_not_hold_the_run_open() {
        let done = run(sh("sleep 60 & echo done", Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(done.success());
        assert_eq!(String::from_utf8(done.output).unwrap(), "done\n");
    }

    #[test]
    fn last_lines_counts_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), ("b\nc".to_owned(), true));
        assert_eq!(last_lines("a\nb", 5), ("a\nb".to_owned(), false));
    }

    #[test]
    fn scrubbed_env_drops_values_containing_secrets() {
        // The test process's own environment has no secrets of ours; PATH must survive.
        let env = scrubbed_env(&["no-such-secret-value"]);
        assert!(env.contains_key("PATH"));
        let path = std::env::var("PATH").unwrap();
        let env = scrubbed_env(&[path.as_str()]);
        assert!(!env.contains_key("PATH"));
    }
}
