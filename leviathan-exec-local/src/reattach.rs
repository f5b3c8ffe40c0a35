//! Following a worker that an earlier executor process started (after a scheduler restart).
//!
//! [`LocalExecutor::run`](crate::LocalExecutor) writes a [`WorkerRecord`] into the attempt's
//! directory as soon as the worker runs: its pid, its start time as `/proc/<pid>/stat` reports it
//! (so that a later process with the same pid is never mistaken for it) and the attempt's
//! deadline as wall time. The worker runs in its own process group, so it outlives a scheduler
//! that is killed; a new executor finds it through the record, waits for it to exit (polling
//! `/proc`, bounded by the deadline) and reads the result from its termination file.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustix::process::{Pid, Signal, kill_process_group};
use tokio_util::sync::CancellationToken;

use crate::process::Stop;

/// Name of the record inside the attempt's directory.
pub(crate) const RECORD_FILE: &str = "worker.pid";

/// How often a followed worker is checked.
const POLL: Duration = Duration::from_millis(200);

/// Identifies a running worker process across executor restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WorkerRecord {
    /// Its process id (also its process group id).
    pub(crate) pid: i32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub(crate) start_ticks: u64,
    /// The attempt's deadline, in milliseconds since the Unix epoch.
    pub(crate) deadline_unix_ms: u64,
}

impl WorkerRecord {
    /// The record of the running process `pid`, whose attempt must end within `deadline`.
    pub(crate) fn of(pid: u32, deadline: Duration) -> io::Result<Self> {
        let pid = i32::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "pid out of range"))?;
        let start_ticks = match proc_stat(pid)? {
            Some(stat) => stat.start_ticks,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("process {pid} is already gone"),
                ));
            }
        };
        let deadline_unix_ms = unix_ms(SystemTime::now())
            .saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
        Ok(Self {
            pid,
            start_ticks,
            deadline_unix_ms,
        })
    }

    /// Writes the record to `<dir>/worker.pid` atomically (a temporary file renamed into place).
    pub(crate) fn write(&self, dir: &Path) -> io::Result<()> {
        let path = dir.join(RECORD_FILE);
        let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
        std::fs::write(
            &tmp,
            format!(
                "pid={}\nstart_ticks={}\ndeadline_unix_ms={}\n",
                self.pid, self.start_ticks, self.deadline_unix_ms
            ),
        )?;
        std::fs::rename(&tmp, &path)
    }

    /// Reads `<dir>/worker.pid`; `None` when there is none or it is not a record.
    pub(crate) fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(RECORD_FILE)).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(str::trim)
        };
        Some(Self {
            pid: field("pid")?.parse().ok()?,
            start_ticks: field("start_ticks")?.parse().ok()?,
            deadline_unix_ms: field("deadline_unix_ms")?.parse().ok()?,
        })
    }

    /// True while the recorded process runs: same pid, same start time, not a zombie.
    pub(crate) fn is_running(&self) -> bool {
        matches!(
            proc_stat(self.pid),
            Ok(Some(stat)) if stat.start_ticks == self.start_ticks && !stat.exited
        )
    }

    /// Time left before the deadline (zero once it passed).
    fn remaining(&self) -> Duration {
        Duration::from_millis(
            self.deadline_unix_ms
                .saturating_sub(unix_ms(SystemTime::now())),
        )
    }

    /// Signals the worker's whole process group (it leads its own group).
    pub(crate) fn signal_group(&self, signal: Signal) {
        if let Some(group) = Pid::from_raw(self.pid) {
            // A group that is already gone is the outcome we want.
            let _ = kill_process_group(group, signal);
        }
    }
}

/// Waits until the recorded worker exits (`None`), its deadline passes or `cancel` fires; a
/// worker that is stopped gets SIGTERM, then SIGKILL after `grace`. The loop is bounded: by the
/// deadline, then by `grace`.
pub(crate) async fn follow(
    record: &WorkerRecord,
    cancel: &CancellationToken,
    grace: Duration,
) -> Option<Stop> {
    let deadline = tokio::time::sleep(record.remaining());
    tokio::pin!(deadline);
    let stopped = loop {
        if !record.is_running() {
            break None;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = &mut deadline => break Some(Stop::Deadline),
            () = cancel.cancelled() => break Some(Stop::Cancelled),
        }
    };
    let Some(stopped) = stopped else {
        // Nothing the worker started may outlive it.
        record.signal_group(Signal::KILL);
        return None;
    };
    record.signal_group(Signal::TERM);
    let kill_at = tokio::time::Instant::now() + grace;
    while record.is_running() && tokio::time::Instant::now() < kill_at {
        tokio::time::sleep(POLL.min(grace)).await;
    }
    record.signal_group(Signal::KILL);
    Some(stopped)
}

/// What `/proc/<pid>/stat` says about a process.
struct ProcStat {
    start_ticks: u64,
    /// A zombie (`Z`) or dead (`X`): it ran to its end and waits to be reaped.
    exited: bool,
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
fn proc_stat(pid: i32) -> io::Result<Option<ProcStat>> {
    let text = match std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/stat"))) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    // `pid (comm) state ppid …`: the command may contain spaces and parentheses, so fields are
    // counted from the last `)`; the state is field 3 and the start time field 22.
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat"));
    let (_, rest) = text.rsplit_once(')').ok_or_else(invalid)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().ok_or_else(invalid)?;
    let start_ticks = fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(invalid)?;
    Ok(Some(ProcStat {
        start_ticks,
        exited: matches!(*state, "Z" | "X" | "x"),
    }))
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn records_round_trip_and_identify_their_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let record = WorkerRecord::of(child.id(), Duration::from_secs(60)).unwrap();
        record.write(dir.path()).unwrap();
        let read = WorkerRecord::read(dir.path()).expect("a record");
        assert_eq!(read, record);
        assert!(read.is_running());

        let reused = WorkerRecord {
            start_ticks: record.start_ticks + 1,
            ..record
        };
        assert!(
            !reused.is_running(),
            "another start time is another process (pid reuse)"
        );

        child.kill().unwrap();
        // Not reaped yet: once the signal is delivered, the zombie counts as exited.
        let mut polls = 0;
        while read.is_running() {
            polls += 1;
            assert!(polls < 500, "the killed process never became a zombie");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(std::path::Path::new(&format!("/proc/{}", child.id())).exists());
        child.wait().unwrap();
        assert!(!read.is_running());
    }

    #[test]
    fn garbage_is_no_record() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(WorkerRecord::read(dir.path()), None);
        std::fs::write(dir.path().join(RECORD_FILE), "pid=12\nstart_ticks=x\n").unwrap();
        assert_eq!(WorkerRecord::read(dir.path()), None);
    }

    #[test]
    fn the_stat_parser_copes_with_odd_command_names() {
        // The command name is what `/proc/<pid>/stat` puts in parentheses.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("s) 1 (x");
        std::fs::copy("/bin/sleep", &odd).unwrap();
        let mut child = Command::new(&odd).arg("30").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let stat = proc_stat(pid).unwrap().expect("the child");
        assert!(!stat.exited);
        assert!(stat.start_ticks > 0);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(proc_stat(pid).unwrap().is_none(), "reaped: gone");
    }
}
