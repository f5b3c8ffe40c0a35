//! Untrusted children (the tests, the `command` model) run through a helper: the worker's own
//! program re-invoked with [`SPEC_VARIABLE`], which starts a session of its own, drops every
//! capability under `no_new_privs`, restricts writes to the worktree and a private temp
//! directory with Landlock where the kernel has it, and then executes the command.
//!
//! A helper process is how the restrictions get between fork and exec without `unsafe` code (a
//! pre-exec hook is unsafe, and this workspace forbids it): they apply to the helper's own
//! thread and carry over into the command it executes.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use landlock::{
    ABI, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, path_beneath_rules,
};
use leviathan_api::wire::{GATEWAY_ANTHROPIC_BASE, GATEWAY_OPENAI_BASE};
use leviathan_core::{
    model::{LandlockState, SandboxReport},
    secret::Secret,
};
use rustix::thread::{CapabilitySet, CapabilitySets};
use serde::{Deserialize, Serialize};

/// The variable that turns an invocation of the worker's program into the helper; its value is
/// the [`HelperSpec`] as JSON. The helper's command never sees it.
pub(crate) const SPEC_VARIABLE: &str = "LEVIATHAN_SANDBOX_EXEC";

/// Exit code of the helper when the command could not be started (as `sh` reports it).
const EXIT_NOT_STARTED: u8 = 127;

/// Device files every program expects to write to.
const WRITABLE_DEVICES: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];

/// The newest Landlock ABI this worker asks for; older kernels get what they offer.
const LANDLOCK_ABI: ABI = ABI::V6;

/// How the worker's program is re-invoked as the helper: the same executable and arguments it
/// was started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Helper {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments (those the worker was started with, e.g. `worker`).
    pub args: Vec<OsString>,
}

impl Helper {
    /// This process's own program and arguments.
    pub fn this_process() -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// Whether and how untrusted children are confined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxSettings {
    /// `LEVIATHAN_LANDLOCK`: restrict writes with Landlock (best effort).
    pub landlock: bool,
    /// The helper; without one (a worker run inside another program's tests), children run in
    /// a process group of their own and nothing more.
    pub helper: Option<Helper>,
}

/// What every untrusted child of one attempt gets: its environment (already scrubbed of secrets,
/// `TMPDIR` its private temp directory) and the sandbox.
#[derive(Clone, Debug)]
pub struct Untrusted {
    /// The whole environment of each child.
    pub env: BTreeMap<String, String>,
    /// How children are confined.
    pub settings: SandboxSettings,
    /// The private temp directory children may write to besides their worktree.
    pub temp_dir: PathBuf,
}

impl Untrusted {
    /// `env` with `TMPDIR` set to `temp_dir`.
    pub fn new(
        mut env: BTreeMap<String, String>,
        settings: SandboxSettings,
        temp_dir: PathBuf,
    ) -> Self {
        env.insert("TMPDIR".to_owned(), temp_dir.to_string_lossy().into_owned());
        Self {
            env,
            settings,
            temp_dir,
        }
    }

    /// This environment with the model gateway below `control_plane_url` as the providers'
    /// usual base URL and key variables, for an external agent (only the model command gets
    /// them, never the tests): the key is the attempt's `token`, which the gateway meters.
    pub(crate) fn with_model_gateway(mut self, control_plane_url: &str, token: &Secret) -> Self {
        let anthropic = format!("{control_plane_url}{GATEWAY_ANTHROPIC_BASE}");
        let openai = format!("{control_plane_url}{GATEWAY_OPENAI_BASE}");
        for (name, value) in [
            ("ANTHROPIC_BASE_URL", anthropic.as_str()),
            ("OPENAI_BASE_URL", openai.as_str()),
            ("OPENAI_API_BASE", openai.as_str()),
            ("ANTHROPIC_API_KEY", token.expose()),
            ("OPENAI_API_KEY", token.expose()),
        ] {
            self.env.insert(name.to_owned(), value.to_owned());
        }
        self
    }

    /// The confinement of a child working in `worktree`.
    pub(crate) fn confined(&self, worktree: &Path) -> Confined<'_> {
        Confined {
            settings: &self.settings,
            writable: vec![worktree.to_owned(), self.temp_dir.clone()],
        }
    }
}

/// How one untrusted child is confined.
#[derive(Debug)]
pub(crate) struct Confined<'a> {
    /// The sandbox settings (and the helper that applies them).
    pub settings: &'a SandboxSettings,
    /// The directories it may write to.
    pub writable: Vec<PathBuf>,
}

/// What one helper run should do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HelperSpec {
    /// The command.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: BTreeMap<String, String>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// The directories it may write to (with Landlock).
    pub writable: Vec<PathBuf>,
    /// Apply Landlock.
    pub landlock: bool,
    /// Only report what applied (as JSON on stdout) instead of running a command.
    #[serde(default)]
    pub probe: bool,
}

/// What the helper applied to itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Confinement {
    landlock: LandlockState,
    session: bool,
    capabilities_dropped: bool,
}

/// Runs the helper if this process was invoked as one (never returns then), else `None`.
pub(crate) fn run_if_invoked() -> Option<ExitCode> {
    let spec = std::env::var(SPEC_VARIABLE).ok()?;
    Some(run_helper(&spec))
}

fn run_helper(spec: &str) -> ExitCode {
    let spec: HelperSpec = match serde_json::from_str(spec) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("leviathan sandbox: {SPEC_VARIABLE} is not a helper spec: {e}");
            return ExitCode::from(EXIT_NOT_STARTED);
        }
    };
    let confinement = confine(&spec);
    if spec.probe {
        println!(
            "{}",
            serde_json::to_string(&confinement).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let error = std::process::Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .exec();
    eprintln!(
        "leviathan sandbox: cannot start `{}`: {error}",
        spec.program
    );
    ExitCode::from(EXIT_NOT_STARTED)
}

/// Applies everything the helper can to its own thread, which the command inherits.
fn confine(spec: &HelperSpec) -> Confinement {
    let session = rustix::process::setsid().is_ok();
    // Should the worker die, its untrusted child dies with it rather than outlive it.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let capabilities_dropped = drop_capabilities();
    let landlock = if spec.landlock {
        restrict_writes(&spec.writable)
    } else {
        LandlockState::Off
    };
    Confinement {
        landlock,
        session,
        capabilities_dropped,
    }
}

/// Empties the bounding set (so executing anything, even as root, grants nothing back), the
/// ambient, inheritable, permitted and effective sets, and sets `no_new_privs`. True when the
/// thread ends with no capability at all.
fn drop_capabilities() -> bool {
    for capability in CapabilitySet::all().iter() {
        match rustix::thread::remove_capability_from_bounding_set(capability) {
            // Unknown to this kernel: nothing to drop.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            // Without CAP_SETPCAP the bounding set cannot shrink; the sets below still empty.
            Err(_) => break,
        }
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    let _ = rustix::thread::set_capabilities(None, none);
    let _ = rustix::thread::set_no_new_privs(true);
    rustix::thread::capabilities(None).is_ok_and(|sets| {
        sets.effective.is_empty() && sets.permitted.is_empty() && sets.inheritable.is_empty()
    }) && rustix::thread::no_new_privs().unwrap_or(false)
}

/// Landlock: writes of every kind only beneath `writable` (and to a few device files).
fn restrict_writes(writable: &[PathBuf]) -> LandlockState {
    let write = AccessFs::from_write(LANDLOCK_ABI);
    let status = Ruleset::default()
        .handle_access(write)
        .and_then(|ruleset| ruleset.create())
        .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(writable, write)))
        .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(WRITABLE_DEVICES, write)))
        .and_then(|ruleset| ruleset.restrict_self());
    match status.map(|s| s.ruleset) {
        Ok(RulesetStatus::FullyEnforced) => LandlockState::Enforced,
        Ok(RulesetStatus::PartiallyEnforced) => LandlockState::Partial,
        Ok(RulesetStatus::NotEnforced) | Err(_) => LandlockState::Unsupported,
    }
}

impl SandboxSettings {
    /// The helper's spec for `program args` in `cwd`, writing only beneath `writable`.
    pub(crate) fn spec(
        &self,
        program: &str,
        args: &[String],
        cwd: &Path,
        env: BTreeMap<String, String>,
        writable: Vec<PathBuf>,
    ) -> HelperSpec {
        HelperSpec {
            program: program.to_owned(),
            args: args.to_vec(),
            env,
            cwd: cwd.to_owned(),
            writable,
            landlock: self.landlock,
            probe: false,
        }
    }

    /// Asks the helper what it applies here (it confines itself and reports, running nothing),
    /// for `attempt.started`. Without a helper: nothing but the worker's own non-dumpability.
    pub(crate) async fn probe(&self, non_dumpable: bool) -> SandboxReport {
        let confinement = match &self.helper {
            Some(helper) => probe_helper(helper, self.landlock).await,
            None => None,
        };
        SandboxReport {
            landlock: confinement.map_or(
                if self.landlock {
                    LandlockState::Unsupported
                } else {
                    LandlockState::Off
                },
                |c| c.landlock,
            ),
            non_dumpable,
            confined_children: confinement.is_some_and(|c| c.session && c.capabilities_dropped),
        }
    }
}

async fn probe_helper(helper: &Helper, landlock: bool) -> Option<Confinement> {
    let spec = HelperSpec {
        program: String::new(),
        args: Vec::new(),
        env: BTreeMap::new(),
        cwd: PathBuf::from("/"),
        writable: Vec::new(),
        landlock,
        probe: true,
    };
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&helper.program)
            .args(&helper.args)
            .env_clear()
            .env(SPEC_VARIABLE, serde_json::to_string(&spec).ok()?)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(leviathan_core::executor::protocol::last_line(&text)?).ok()
}
