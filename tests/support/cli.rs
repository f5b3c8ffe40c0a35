//! Running the real `leviathan` binary in tests: one-shot commands and a served control plane.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use serde_json::Value;

/// Variables the binary reads; cleared so that the developer's environment cannot leak in.
const ENV: [&str; 6] = [
    "LEVIATHAN_STORE",
    "LEVIATHAN_BIND",
    "LEVIATHAN_API_URL",
    "LEVIATHAN_CONTROL_PLANE_TOKEN",
    "LEVIATHAN_TOKEN_FILE",
    "LEVIATHAN_LOG",
];

/// The binary with `HOME` set to `home` and no Leviathan variables.
pub(crate) fn leviathan(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leviathan"));
    for name in ENV {
        command.env_remove(name);
    }
    command.env("HOME", home);
    command
}

/// What a finished command did.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Outcome {
    /// Asserts the exit code, showing the output when it differs.
    pub(crate) fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, code, "{self:#?}");
        self
    }

    /// stdout as one JSON document.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs `leviathan args…` to completion.
pub(crate) fn run(home: &Path, args: &[&str]) -> Outcome {
    run_with(leviathan(home).args(args))
}

pub(crate) fn run_with(command: &mut Command) -> Outcome {
    let output = command.output().expect("the binary runs");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `leviathan serve` running in the background on 127.0.0.1 with an ephemeral port.
pub(crate) struct Served {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) url: String,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Starts `leviathan serve --bind 127.0.0.1:0 extra…` and waits (bounded) until it logs the
    /// address it listens on.
    pub(crate) fn start(home: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(home, extra, &[])
    }

    /// [`Served::start`] with extra environment variables for the server process.
    pub(crate) fn start_with_env(home: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = leviathan(home);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix("addr="))
                {
                    let _ = tx.send(addr.to_owned());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not start:\n{}", log.lock().unwrap());
            }
        };
        Self {
            child,
            url: format!("http://{addr}"),
            addr,
            log,
            reader: Some(reader),
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub(crate) fn terminate(mut self) -> (i32, String) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a live pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal sent");
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                // The reader ends when the process's stderr closes: the log is then complete.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return (status.code().unwrap_or(-1), self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("serve did not stop within 30 s of SIGTERM:\n{}", self.log());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory used as `HOME`.
pub(crate) fn home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `~/.leviathan/control-plane-token` under `home`.
pub(crate) fn token_file(home: &Path) -> PathBuf {
    home.join(".leviathan").join("control-plane-token")
}
