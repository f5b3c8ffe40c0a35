//! One worker process: its own process group, stdout and stderr combined on one pipe (in the
//! order written, like a pod log), a deadline and cancellation that stop the whole group
//! (SIGTERM, then SIGKILL after a grace period), and nothing of the group left behind when the
//! worker exits.

use leviathan_core::output::OutputTail;
use std::{
    collections::BTreeMap,
    io,
    path::PathBuf,
    pin::Pin,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::{io::AsyncReadExt as _, net::unix::pipe, process::Command, time::Sleep};
use tokio_util::sync::CancellationToken;

/// Output beyond this is dropped from the front: the end of a log explains how it ended.
pub(crate) const MAX_OUTPUT_BYTES: usize = 8 * 1024 * 1024;

/// How long to keep reading once the group is gone, for processes that left the group but
/// still hold the pipe.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// What to start.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) cwd: PathBuf,
    /// The complete environment; nothing is inherited.
    pub(crate) env: BTreeMap<String, String>,
}

/// Why the process was stopped before it exited by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The attempt's deadline passed.
    Deadline,
    /// [`Executor::cancel`](leviathan_core::Executor::cancel) was called.
    Cancelled,
}

/// How the process ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Set when the executor stopped it.
    pub(crate) stopped: Option<Stop>,
    /// The main process's exit status.
    pub(crate) status: ExitStatus,
    /// Combined output, at most [`MAX_OUTPUT_BYTES`] (the end).
    pub(crate) output: Vec<u8>,
    /// True when the start of the output was dropped.
    pub(crate) truncated: bool,
}

/// Runs `launch` until it exits, `deadline` passes or `cancel` fires; `started` gets the
/// process id as soon as it runs.
pub(crate) async fn supervise(
    launch: Launch,
    deadline: Duration,
    cancel: &CancellationToken,
    grace: Duration,
    started: impl FnOnce(u32),
) -> io::Result<Finished> {
    let (writer, mut reader) = pipe::pipe()?;
    let writer = writer.into_blocking_fd()?;
    let stderr_writer = writer.try_clone()?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .current_dir(&launch.cwd)
        .env_clear()
        .envs(&launch.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(stderr_writer))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot start `{}`: {e}", launch.program.display()),
        )
    })?;
    // The child now holds the only write ends, so the pipe closes when its group is gone.
    drop(command);
    if let Some(pid) = child.id() {
        started(pid);
    }
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);

    let mut output = OutputTail::new(MAX_OUTPUT_BYTES);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline_timer = tokio::time::sleep(deadline);
    tokio::pin!(deadline_timer);
    let mut kill_timer: Option<Pin<Box<Sleep>>> = None;
    let mut stopped = None;
    let mut reader_open = true;
    let status = loop {
        tokio::select! {
            read = reader.read(&mut buf), if reader_open => match read {
                Ok(0) | Err(_) => reader_open = false,
                Ok(n) => output.push(&buf[..n]),
            },
            status = child.wait() => break status?,
            () = &mut deadline_timer, if stopped.is_none() => {
                stopped = Some(Stop::Deadline);
                signal_group(group, Signal::TERM);
                kill_timer = Some(Box::pin(tokio::time::sleep(grace)));
            }
            () = cancel.cancelled(), if stopped.is_none() => {
                stopped = Some(Stop::Cancelled);
                signal_group(group, Signal::TERM);
                kill_timer = Some(Box::pin(tokio::time::sleep(grace)));
            }
            () = async {
                match kill_timer.as_mut() {
                    Some(timer) => timer.await,
                    None => std::future::pending().await,
                }
            }, if kill_timer.is_some() => {
                kill_timer = None;
                signal_group(group, Signal::KILL);
            }
        }
    };
    // Whatever the outcome, nothing the worker started may outlive it.
    signal_group(group, Signal::KILL);
    if reader_open {
        let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => output.push(&buf[..n]),
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                program = %launch.program.display(),
                "a process outside the worker's group still holds its output pipe"
            );
        }
    }
    let (output, truncated) = output.into_parts();
    Ok(Finished {
        stopped,
        status,
        output,
        truncated,
    })
}

/// Signals every process of the group; a group that is already gone is what we want.
fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        let _ = kill_process_group(group, signal);
    }
}
