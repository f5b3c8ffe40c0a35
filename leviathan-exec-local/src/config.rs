//! How the local executor starts workers: which program, where attempts live, what the worker
//! is told (control plane URL, model) and the secrets it gets, read from the scheduler's
//! environment by [`LocalConfig::from_env`].

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use leviathan_core::{ArtifactStore, executor::protocol, secret::Secret};

/// A variable of the scheduler's environment that [`LocalConfig::from_env`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The name.
    pub name: &'static str,
    /// The default when unset (empty: none).
    pub default: &'static str,
    /// What it does.
    pub description: &'static str,
}

/// Path of the worker executable.
pub const WORKER_BIN: &str = "LEVIATHAN_WORKER_BIN";
/// Directory holding one subdirectory per running attempt.
pub const WORKSPACE_ROOT: &str = "LEVIATHAN_WORKSPACE_ROOT";
/// Control plane URL given to workers.
pub const WORKER_CONTROL_PLANE_URL: &str = "LEVIATHAN_WORKER_CONTROL_PLANE_URL";
/// The control plane token, given to workers as `CONTROL_PLANE_TOKEN`.
pub const CONTROL_PLANE_TOKEN: &str = "LEVIATHAN_CONTROL_PLANE_TOKEN";
/// `true` keeps the directory of a failed attempt for inspection.
pub const KEEP_FAILED_WORKSPACES: &str = "LEVIATHAN_KEEP_FAILED_WORKSPACES";

/// Every variable [`LocalConfig::from_env`] reads.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: WORKER_BIN,
        default: "the running `leviathan` executable",
        description: "Worker executable; it is run as `<bin> worker`.",
    },
    Variable {
        name: WORKSPACE_ROOT,
        default: "`<temp dir>/leviathan-attempts`",
        description: "Absolute directory holding one subdirectory per running attempt.",
    },
    Variable {
        name: WORKER_CONTROL_PLANE_URL,
        default: DEFAULT_CONTROL_PLANE_URL,
        description: "Control plane URL the workers report to (`CONTROL_PLANE_URL`).",
    },
    Variable {
        name: CONTROL_PLANE_TOKEN,
        default: "",
        description: "Control plane token, given to workers as `CONTROL_PLANE_TOKEN`.",
    },
    Variable {
        name: protocol::GITHUB_TOKEN,
        default: "",
        description: "Forge token, given to workers.",
    },
    Variable {
        name: protocol::LEVIATHAN_CLAUDE_MODEL,
        default: "",
        description: "Claude model name, given to workers (else the worker's default).",
    },
    Variable {
        name: KEEP_FAILED_WORKSPACES,
        default: "false",
        description: "`true` keeps the directory of a failed attempt for inspection.",
    },
];

/// Where workers report unless configured otherwise.
pub const DEFAULT_CONTROL_PLANE_URL: &str = "http://127.0.0.1:8000";

/// Variables of the scheduler's environment that workers inherit by default: what git, TLS and
/// logging need, nothing else (the scheduler's own credentials stay with it).
pub const DEFAULT_INHERITED: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// A variable of the scheduler's environment that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// The local executor's settings. Build with [`LocalConfig::default`] or
/// [`LocalConfig::from_env`], then adjust with the chained setters.
#[derive(Clone)]
#[non_exhaustive]
pub struct LocalConfig {
    /// The worker executable.
    pub worker_program: PathBuf,
    /// Its arguments (default `worker`).
    pub worker_args: Vec<String>,
    /// Directory holding `<attempt_id>/` for each running attempt.
    pub workspace_root: PathBuf,
    /// `CONTROL_PLANE_URL` of the workers.
    pub control_plane_url: String,
    /// `LEVIATHAN_CLAUDE_MODEL` of the workers, unless the attempt's env sets it.
    pub claude_model: Option<String>,
    /// Credentials by worker variable name (`CONTROL_PLANE_TOKEN`, `GITHUB_TOKEN`, …).
    pub secrets: BTreeMap<String, Secret>,
    /// Names of the scheduler's variables the worker inherits when set.
    pub inherited: Vec<String>,
    /// Keep the directory of a failed attempt (it is always removed after a success).
    pub keep_failed_workspaces: bool,
    /// Between SIGTERM and SIGKILL when an attempt is stopped.
    pub stop_grace: Duration,
    /// Where the worker's log is stored as an artifact; without one, logs are not kept.
    pub artifacts: Option<Arc<dyn ArtifactStore>>,
}

impl fmt::Debug for LocalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalConfig")
            .field("worker_program", &self.worker_program)
            .field("worker_args", &self.worker_args)
            .field("workspace_root", &self.workspace_root)
            .field("control_plane_url", &self.control_plane_url)
            .field("claude_model", &self.claude_model)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("inherited", &self.inherited)
            .field("keep_failed_workspaces", &self.keep_failed_workspaces)
            .field("stop_grace", &self.stop_grace)
            .field("artifacts", &self.artifacts.is_some())
            .finish()
    }
}

impl Default for LocalConfig {
    /// The running executable as worker, attempts under the temp dir, no secrets, 10 s grace.
    fn default() -> Self {
        Self {
            worker_program: std::env::current_exe().unwrap_or_else(|_| "leviathan".into()),
            worker_args: vec!["worker".to_owned()],
            workspace_root: std::env::temp_dir().join("leviathan-attempts"),
            control_plane_url: DEFAULT_CONTROL_PLANE_URL.to_owned(),
            claude_model: None,
            secrets: BTreeMap::new(),
            inherited: DEFAULT_INHERITED.iter().map(|s| (*s).to_owned()).collect(),
            keep_failed_workspaces: false,
            stop_grace: Duration::from_secs(10),
            artifacts: None,
        }
    }
}

impl LocalConfig {
    /// Reads [`VARIABLES`] from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads [`VARIABLES`] through `lookup` (empty values count as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Self::default();
        if let Some(bin) = get(WORKER_BIN) {
            config.worker_program = bin.into();
        }
        if let Some(root) = get(WORKSPACE_ROOT) {
            let root = PathBuf::from(root);
            if !root.is_absolute() {
                return Err(ConfigError {
                    variable: WORKSPACE_ROOT,
                    reason: format!("`{}` is not an absolute path", root.display()),
                });
            }
            config.workspace_root = root;
        }
        if let Some(url) = get(WORKER_CONTROL_PLANE_URL) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError {
                    variable: WORKER_CONTROL_PLANE_URL,
                    reason: format!("`{url}` is not an http:// or https:// URL"),
                });
            }
            config.control_plane_url = url;
        }
        config.claude_model = get(protocol::LEVIATHAN_CLAUDE_MODEL);
        for (source, worker_name) in [
            (CONTROL_PLANE_TOKEN, protocol::CONTROL_PLANE_TOKEN),
            (protocol::GITHUB_TOKEN, protocol::GITHUB_TOKEN),
        ] {
            if let Some(value) = get(source) {
                config
                    .secrets
                    .insert(worker_name.to_owned(), Secret::new(value));
            }
        }
        if let Some(keep) = get(KEEP_FAILED_WORKSPACES) {
            config.keep_failed_workspaces = match keep.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(ConfigError {
                        variable: KEEP_FAILED_WORKSPACES,
                        reason: format!("`{other}` is not `true` or `false`"),
                    });
                }
            };
        }
        Ok(config)
    }

    /// Sets the worker executable and its arguments.
    pub fn worker(mut self, program: impl Into<PathBuf>, args: &[&str]) -> Self {
        self.worker_program = program.into();
        self.worker_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Sets the directory holding the attempts' directories.
    pub fn workspace_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.workspace_root = root.into();
        self
    }

    /// Sets the control plane URL workers report to.
    pub fn control_plane_url(mut self, url: impl Into<String>) -> Self {
        self.control_plane_url = url.into();
        self
    }

    /// Sets the Claude model workers use.
    pub fn claude_model(mut self, model: impl Into<String>) -> Self {
        self.claude_model = Some(model.into());
        self
    }

    /// Gives workers the credential `variable` (e.g. `GITHUB_TOKEN`).
    pub fn secret(mut self, variable: impl Into<String>, value: Secret) -> Self {
        self.secrets.insert(variable.into(), value);
        self
    }

    /// Sets which of the scheduler's variables workers inherit.
    pub fn inherited(mut self, names: &[&str]) -> Self {
        self.inherited = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// Keeps (or not) the directory of a failed attempt.
    pub fn keep_failed_workspaces(mut self, keep: bool) -> Self {
        self.keep_failed_workspaces = keep;
        self
    }

    /// Sets the delay between SIGTERM and SIGKILL when an attempt is stopped.
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Stores worker logs in `store`.
    pub fn artifacts(mut self, store: Arc<dyn ArtifactStore>) -> Self {
        self.artifacts = Some(store);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn reads_every_variable() {
        let config = LocalConfig::from_lookup(lookup(&[
            (WORKER_BIN, "/opt/leviathan"),
            (WORKSPACE_ROOT, "/var/lib/leviathan"),
            (WORKER_CONTROL_PLANE_URL, "http://cp:8000"),
            (CONTROL_PLANE_TOKEN, "cp-token"),
            ("GITHUB_TOKEN", ""),
            ("LEVIATHAN_CLAUDE_API_KEY", "claude-key"),
            ("LEVIATHAN_CLAUDE_MODEL", "claude-x"),
            (KEEP_FAILED_WORKSPACES, "true"),
        ]))
        .unwrap();
        assert_eq!(config.worker_program, PathBuf::from("/opt/leviathan"));
        assert_eq!(config.worker_args, ["worker"]);
        assert_eq!(config.workspace_root, PathBuf::from("/var/lib/leviathan"));
        assert_eq!(config.control_plane_url, "http://cp:8000");
        assert_eq!(config.claude_model.as_deref(), Some("claude-x"));
        assert!(config.keep_failed_workspaces);
        let secrets: Vec<(&str, &str)> = config
            .secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(
            secrets,
            [("CONTROL_PLANE_TOKEN", "cp-token")],
            "the empty GitHub token counts as unset, and no model provider key is given to workers"
        );
        let debug = format!("{config:?}");
        for value in ["cp-token", "claude-key"] {
            assert!(!debug.contains(value), "{debug}");
        }
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let config = LocalConfig::from_lookup(|_| None).unwrap();
        assert_eq!(config.control_plane_url, DEFAULT_CONTROL_PLANE_URL);
        assert!(config.secrets.is_empty() && config.claude_model.is_none());
        assert!(!config.keep_failed_workspaces);
        assert!(config.workspace_root.is_absolute());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (vars, variable) in [
            (&[(WORKSPACE_ROOT, "relative/dir")][..], WORKSPACE_ROOT),
            (
                &[(WORKER_CONTROL_PLANE_URL, "cp:8000")][..],
                WORKER_CONTROL_PLANE_URL,
            ),
            (
                &[(KEEP_FAILED_WORKSPACES, "yes")][..],
                KEEP_FAILED_WORKSPACES,
            ),
        ] {
            let err = LocalConfig::from_lookup(lookup(vars)).unwrap_err();
            assert_eq!(err.variable, variable);
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }

    #[test]
    fn reads_exactly_the_documented_variables() {
        let asked = std::sync::Mutex::new(std::collections::BTreeSet::new());
        LocalConfig::from_lookup(|name| {
            asked.lock().unwrap().insert(name.to_owned());
            None
        })
        .unwrap();
        let documented: std::collections::BTreeSet<String> =
            VARIABLES.iter().map(|v| v.name.to_owned()).collect();
        assert_eq!(asked.into_inner().unwrap(), documented);
    }
}
