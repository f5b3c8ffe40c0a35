//! A `leviathan` process the system test starts: its stderr collected line by line, stopped by
//! its pid, SIGKILLed when dropped (so a failing or panicking test leaves nothing running).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal, kill_process};

use super::{PATIENCE, POLL};

/// A running process and what it logged so far.
pub(crate) struct Process {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Process {
    /// Starts `command` (stdout discarded, stderr collected into `log`) as `name`.
    pub(crate) fn spawn(name: String, mut command: Command, log: Arc<Mutex<String>>) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            name,
            child,
            log,
            reader,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap()).expect("a live pid")
    }

    /// What the process logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Fails the test when the process has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("waitable") {
            panic!("{} exited ({status})", self.name);
        }
    }

    /// Waits (bounded) for the first logged line containing `needle`, and returns it.
    pub(crate) async fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_line_after(0, needle).await
    }

    /// How much the process has logged so far, for [`Process::wait_for_line_after`].
    pub(crate) fn mark(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits (bounded) for the first line containing `needle` logged after `mark`.
    pub(crate) async fn wait_for_line_after(&mut self, mark: usize, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log()[mark..].lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            self.assert_running();
            assert!(
                start.elapsed() < PATIENCE,
                "{}: no `{needle}` in its log within {PATIENCE:?}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL: the process dies at once, whatever it was doing. Returns its log.
    pub(crate) fn kill(mut self) -> String {
        self.stop(Signal::KILL);
        self.wait_for_exit(Duration::from_secs(10));
        self.drain_log()
    }

    /// SIGTERM, then (bounded) its exit code and log.
    pub(crate) async fn terminate(mut self) -> (i32, String) {
        self.stop(Signal::TERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                return (status.code().unwrap_or(-1), self.drain_log());
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{} did not exit within {PATIENCE:?} of SIGTERM",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn stop(&self, signal: Signal) {
        // ESRCH: it is gone already (its exit is collected below).
        let _ = kill_process(self.pid(), signal);
    }

    /// Waits for the exit of a killed process (`Child::wait` would block without bound).
    fn wait_for_exit(&mut self, bound: Duration) {
        let start = Instant::now();
        while self.child.try_wait().expect("waitable").is_none() {
            assert!(
                start.elapsed() < bound,
                "{} survived SIGKILL for {bound:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The log of an exited process, complete once its stderr is closed (a child it started may
    /// hold the pipe a little longer: waited for a few seconds at most).
    fn drain_log(&self) -> String {
        let start = Instant::now();
        while !self.reader.is_finished() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.log()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop(Signal::KILL);
            let _ = self.child.wait();
        }
    }
}
