//! The worker's configuration, read from environment variables.
//!
//! The names come from core's executor protocol ([`VARIABLES`] is the one table of every
//! variable the worker reads); the table in the crate's README (and crate docs) is rendered from
//! it by [`variables_table`](leviathan_core::executor::protocol::variables_table), and tests check both that the README matches and that the parser
//! reads exactly these names.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use leviathan_core::{
    AttemptId, Sha256Digest, TargetId, TaskId,
    executor::protocol::{
        ATTEMPT_ID, CONTROL_PLANE_TOKEN, CONTROL_PLANE_URL, GITHUB_TOKEN, LEVIATHAN_ATTEMPT_NUMBER,
        LEVIATHAN_BASE_BUNDLE, LEVIATHAN_BASE_COMMIT, LEVIATHAN_CLAUDE_MODEL, LEVIATHAN_DRAFT_PRS,
        LEVIATHAN_GIT_AUTHOR_EMAIL, LEVIATHAN_GIT_AUTHOR_NAME, LEVIATHAN_GITHUB_API_URL,
        LEVIATHAN_LANDLOCK, LEVIATHAN_MAX_MODEL_CALLS, LEVIATHAN_MAX_TOKENS,
        LEVIATHAN_MODEL_COMMAND, LEVIATHAN_MODEL_MAX_OUTPUT_TOKENS, LEVIATHAN_MODEL_PROVIDER,
        LEVIATHAN_MODEL_TIMEOUT_SECS, LEVIATHAN_OPENAI_MODEL, LEVIATHAN_REPAIR_ROUNDS,
        LEVIATHAN_TERMINATION_MESSAGE_PATH, LEVIATHAN_TEST_COMMAND, LEVIATHAN_TEST_TIMEOUT_SECS,
        LEVIATHAN_WORKSPACE_DIR, TARGET_BRANCH, TARGET_NAME, TARGET_REPO_URL, TASK_ID, VARIABLES,
    },
    secret::Secret,
};

use leviathan_api::wire::{GATEWAY_ANTHROPIC_BASE, GATEWAY_OPENAI_BASE};
pub use leviathan_core::retry::RetryPolicy;

use crate::sandbox::SandboxSettings;

/// The default for [`LEVIATHAN_CLAUDE_MODEL`].
pub const DEFAULT_CLAUDE_MODEL: &str = "claude-sonnet-4-5";
/// The default GitHub API base URL.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";
/// Where Kubernetes reads a container's termination message.
pub const KUBERNETES_TERMINATION_LOG: &str = "/dev/termination-log";

/// Which model generates the changes. Every provider reaches the model through the control
/// plane's model gateway with the attempt's token: the worker holds no provider key, and the
/// gateway holds each call to the budgets and records it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelProvider {
    /// Anthropic's Messages API.
    Anthropic {
        /// Model name.
        model: String,
        /// The gateway's Messages API base URL, without a trailing slash.
        base_url: String,
    },
    /// An OpenAI-compatible chat completions API.
    OpenAi {
        /// Model name.
        model: String,
        /// The gateway's chat completions base URL (ending in `/v1`), without a trailing slash.
        base_url: String,
    },
    /// An external program that edits the worktree in place, given the gateway's base URLs
    /// and the attempt's token in the providers' usual variables.
    Command {
        /// The shell command line.
        command: String,
        /// The control plane's URL, without a trailing slash (the gateway is below it).
        control_plane_url: String,
    },
}

impl ModelProvider {
    /// `anthropic`, `openai` or `command`, as recorded in `model.call_completed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Anthropic { .. } => "anthropic",
            Self::OpenAi { .. } => "openai",
            Self::Command { .. } => "command",
        }
    }
}

/// Model settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelSettings {
    /// The provider and its credentials.
    pub provider: ModelProvider,
    /// Time limit of one call.
    pub timeout: Duration,
    /// `max_tokens` of each API call.
    pub max_output_tokens: u32,
    /// Retries of API calls answered 429, 529 or 5xx, or failing in transport.
    pub retry: RetryPolicy,
}

/// The attempt's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Model calls per attempt.
    pub max_model_calls: u32,
    /// Input plus output tokens over all calls.
    pub max_tokens: u64,
}

/// The attempt's base as the scheduler published it: a git bundle artifact of `commit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseBundle {
    /// The commit the attempt starts from.
    pub commit: String,
    /// The bundle artifact.
    pub bundle_sha256: Sha256Digest,
}

/// Author and committer of the attempt's commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitIdentity {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
}

impl Default for GitIdentity {
    /// The bot, as `LEVIATHAN_GIT_AUTHOR_NAME` and `LEVIATHAN_GIT_AUTHOR_EMAIL` default to.
    fn default() -> Self {
        Self {
            name: "Leviathan".into(),
            email: "leviathan@users.noreply.github.com".into(),
        }
    }
}

/// Everything one attempt needs. Built by [`WorkerConfig::from_env`]; tests adjust fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// `TARGET_NAME`.
    pub target: TargetId,
    /// `TARGET_REPO_URL`, normalised (`git@host:o/r` becomes `https://host/o/r`).
    pub repo_url: String,
    /// `TARGET_BRANCH`.
    pub base_branch: String,
    /// `LEVIATHAN_BASE_BUNDLE` and `LEVIATHAN_BASE_COMMIT`: the base to clone from, when the
    /// scheduler published one.
    pub base: Option<BaseBundle>,
    /// `TASK_ID`.
    pub task_id: TaskId,
    /// `ATTEMPT_ID`.
    pub attempt_id: AttemptId,
    /// `LEVIATHAN_ATTEMPT_NUMBER`.
    pub attempt_number: u32,
    /// `CONTROL_PLANE_URL`, without a trailing slash.
    pub control_plane_url: String,
    /// `CONTROL_PLANE_TOKEN`.
    pub control_plane_token: Secret,
    /// Retries of every post to the control plane.
    pub control_plane_retry: RetryPolicy,
    /// `GITHUB_TOKEN`.
    pub github_token: Secret,
    /// `LEVIATHAN_GITHUB_API_URL`, without a trailing slash.
    pub github_api_url: String,
    /// The model.
    pub model: ModelSettings,
    /// `LEVIATHAN_WORKSPACE_DIR`.
    pub workspace_dir: PathBuf,
    /// `LEVIATHAN_REPAIR_ROUNDS`.
    pub repair_rounds: u32,
    /// `LEVIATHAN_MAX_MODEL_CALLS`, `LEVIATHAN_MAX_TOKENS`.
    pub budget: Budget,
    /// `LEVIATHAN_TEST_COMMAND`.
    pub test_command: Option<String>,
    /// `LEVIATHAN_TEST_TIMEOUT_SECS`.
    pub test_timeout: Duration,
    /// `LEVIATHAN_LANDLOCK`, and the helper that confines untrusted children (set by
    /// [`run_from_env`](crate::run_from_env), which knows its own program).
    pub sandbox: SandboxSettings,
    /// `LEVIATHAN_TERMINATION_MESSAGE_PATH`, or `/dev/termination-log` when writable.
    pub termination_message_path: Option<PathBuf>,
    /// `LEVIATHAN_GIT_AUTHOR_NAME`, `LEVIATHAN_GIT_AUTHOR_EMAIL`.
    pub git_identity: GitIdentity,
    /// `LEVIATHAN_DRAFT_PRS`.
    pub draft_pull_requests: bool,
    /// Echo log lines (redacted) to stderr as they happen; the binary does, tests need not.
    pub echo_log: bool,
}

/// One problem with one variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong (never quoting a secret).
    pub problem: String,
}

/// Every problem found in the environment, reported at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in [`VARIABLES`] order.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid worker configuration ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {}: {}", p.variable, p.problem)?;
        }
        Ok(())
    }
}

/// Reads variables through a lookup function and collects problems instead of stopping at the
/// first one.
struct Reader<F> {
    lookup: F,
    problems: Vec<ConfigProblem>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// The trimmed value; empty counts as unset (Kubernetes often sets empty values).
    fn optional(&self, name: &'static str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn problem(&mut self, variable: &'static str, problem: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable,
            problem: problem.into(),
        });
    }

    fn required(&mut self, name: &'static str, what: &str) -> Option<String> {
        let value = self.optional(name);
        if value.is_none() {
            self.problem(name, format!("missing (required: {what})"));
        }
        value
    }

    fn parsed<T, E: fmt::Display>(
        &mut self,
        name: &'static str,
        value: Option<String>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let value = value?;
        match parse(&value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(name, e.to_string());
                None
            }
        }
    }

    fn number(&mut self, name: &'static str, default: u64, min: u64) -> u64 {
        let Some(raw) = self.optional(name) else {
            return default;
        };
        match raw.parse::<u64>() {
            Ok(n) if n >= min => n,
            _ => {
                self.problem(
                    name,
                    format!("`{}` is not an integer ≥ {min}", ellipsize(&raw)),
                );
                default
            }
        }
    }

    /// [`Self::number`] for a value that must fit in a `u32`.
    fn number_u32(&mut self, name: &'static str, default: u32, min: u32) -> u32 {
        let n = self.number(name, default.into(), min.into());
        u32::try_from(n).unwrap_or_else(|_| {
            self.problem(name, "is too large");
            default
        })
    }

    /// Every problem found, in [`VARIABLES`] order, or nothing.
    fn finish(&mut self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            return Ok(());
        }
        let order = |name: &str| VARIABLES.iter().position(|v| v.name == name);
        let mut problems = std::mem::take(&mut self.problems);
        problems.sort_by_key(|p| order(p.variable));
        Err(ConfigError { problems })
    }

    fn seconds(&mut self, name: &'static str, default: u64) -> Duration {
        Duration::from_secs(self.number(name, default, 1))
    }

    fn flag(&mut self, name: &'static str) -> bool {
        match self
            .optional(name)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false" | "0" | "no") => false,
            Some("true" | "1" | "yes") => true,
            Some(other) => {
                self.problem(
                    name,
                    format!("`{}` is not a boolean (true or false)", ellipsize(other)),
                );
                false
            }
        }
    }

    fn http_url(&mut self, name: &'static str, value: Option<String>) -> Option<String> {
        self.parsed(name, value, |raw| {
            let url = url::Url::parse(raw)
                .map_err(|e| format!("`{}` is not a URL: {e}", ellipsize(raw)))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("`{}` must be an http(s) URL", ellipsize(raw)));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err("must not embed credentials".to_owned());
            }
            Ok(raw.trim_end_matches('/').to_owned())
        })
    }
}

/// What the attempt is about: target, repository, branch, task, attempt.
struct AttemptSection {
    target: TargetId,
    repo_url: String,
    base_branch: String,
    base: Option<BaseBundle>,
    task_id: TaskId,
    attempt_id: AttemptId,
    attempt_number: u32,
}

/// Where the attempt reports.
struct ControlPlaneSection {
    url: String,
    token: Secret,
}

/// The forge the attempt pushes to and opens its pull request on.
struct GitHubSection {
    token: Secret,
    api_url: String,
}

/// The attempt's workspace, repair rounds, budget and tests.
struct WorkSection {
    workspace_dir: PathBuf,
    repair_rounds: u32,
    budget: Budget,
    test_command: Option<String>,
    test_timeout: Duration,
    landlock: bool,
}

/// How the result leaves the worker: the commit's author, the pull request, the termination
/// message.
struct DeliverySection {
    termination_message_path: Option<PathBuf>,
    git_identity: GitIdentity,
    draft_pull_requests: bool,
}

/// One method per section of [`VARIABLES`]: each reads all of its variables before giving up, so
/// that every problem is reported, and returns `None` when one of them has a problem.
impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// `LEVIATHAN_BASE_BUNDLE` with its `LEVIATHAN_BASE_COMMIT` (both or neither).
    fn base_bundle(&mut self) -> Option<Option<BaseBundle>> {
        let bundle = self.optional(LEVIATHAN_BASE_BUNDLE);
        let commit = self.optional(LEVIATHAN_BASE_COMMIT);
        match (bundle, commit) {
            (None, None) => Some(None),
            (Some(_), None) => {
                self.problem(
                    LEVIATHAN_BASE_COMMIT,
                    "missing (required with LEVIATHAN_BASE_BUNDLE)",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(LEVIATHAN_BASE_COMMIT, "set without LEVIATHAN_BASE_BUNDLE");
                None
            }
            (Some(bundle), Some(commit)) => {
                let bundle_sha256 = self.parsed(LEVIATHAN_BASE_BUNDLE, Some(bundle), |v| {
                    Sha256Digest::parse_hex(v)
                });
                let commit = self.parsed(LEVIATHAN_BASE_COMMIT, Some(commit), check_commit);
                Some(Some(BaseBundle {
                    commit: commit?,
                    bundle_sha256: bundle_sha256?,
                }))
            }
        }
    }

    fn attempt(&mut self) -> Option<AttemptSection> {
        let target = self.required(TARGET_NAME, "target identifier");
        let target = self.parsed(TARGET_NAME, target, |v| TargetId::new(v));
        let repo_url = self.required(TARGET_REPO_URL, "git repository URL");
        let repo_url = self.parsed(TARGET_REPO_URL, repo_url, normalise_repo_url);
        let base_branch = self
            .optional(TARGET_BRANCH)
            .unwrap_or_else(|| "main".into());
        let base_branch = self.parsed(TARGET_BRANCH, Some(base_branch), check_branch);
        let base = self.base_bundle();
        let task_id = self.required(TASK_ID, "task identifier");
        let task_id = self.parsed(TASK_ID, task_id, |v| TaskId::new(v));
        let attempt_id = self.required(ATTEMPT_ID, "attempt identifier");
        let attempt_id = self.parsed(ATTEMPT_ID, attempt_id, |v| AttemptId::new(v));
        let attempt_number = self.number_u32(LEVIATHAN_ATTEMPT_NUMBER, 1, 1);
        Some(AttemptSection {
            target: target?,
            repo_url: repo_url?,
            base_branch: base_branch?,
            base: base?,
            task_id: task_id?,
            attempt_id: attempt_id?,
            attempt_number,
        })
    }

    fn control_plane(&mut self) -> Option<ControlPlaneSection> {
        let url = self.required(CONTROL_PLANE_URL, "control plane API URL");
        let url = self.http_url(CONTROL_PLANE_URL, url);
        let token = self.required(CONTROL_PLANE_TOKEN, "control plane API token");
        Some(ControlPlaneSection {
            url: url?,
            token: Secret::new(token?),
        })
    }

    fn github(&mut self) -> Option<GitHubSection> {
        let token = self.required(GITHUB_TOKEN, "GitHub token for push and pull requests");
        let api_url = self
            .optional(LEVIATHAN_GITHUB_API_URL)
            .unwrap_or_else(|| DEFAULT_GITHUB_API_URL.into());
        let api_url = self.http_url(LEVIATHAN_GITHUB_API_URL, Some(api_url));
        Some(GitHubSection {
            token: Secret::new(token?),
            api_url: api_url?,
        })
    }

    /// The model settings; `control_plane_url` (none when it has a problem) is where the
    /// model gateway is.
    fn model(&mut self, control_plane_url: Option<&str>) -> Option<ModelSettings> {
        let provider = self.model_provider(control_plane_url);
        let timeout = self.seconds(LEVIATHAN_MODEL_TIMEOUT_SECS, 600);
        let max_output_tokens = self.number_u32(LEVIATHAN_MODEL_MAX_OUTPUT_TOKENS, 8192, 1);
        Some(ModelSettings {
            provider: provider?,
            timeout,
            max_output_tokens,
            retry: RetryPolicy::new(5, Duration::from_secs(2), Duration::from_secs(60)),
        })
    }

    /// `LEVIATHAN_MODEL_PROVIDER` and the variables the chosen provider requires, each API
    /// provider at its endpoint of the gateway below `control_plane_url`.
    fn model_provider(&mut self, control_plane_url: Option<&str>) -> Option<ModelProvider> {
        let provider = self
            .optional(LEVIATHAN_MODEL_PROVIDER)
            .unwrap_or_else(|| "anthropic".into());
        match provider.as_str() {
            "anthropic" => {
                let model = self
                    .optional(LEVIATHAN_CLAUDE_MODEL)
                    .unwrap_or_else(|| DEFAULT_CLAUDE_MODEL.into());
                Some(ModelProvider::Anthropic {
                    model,
                    base_url: format!("{}{GATEWAY_ANTHROPIC_BASE}", control_plane_url?),
                })
            }
            "openai" => {
                let model = self.optional(LEVIATHAN_OPENAI_MODEL);
                if model.is_none() {
                    self.problem(
                        LEVIATHAN_OPENAI_MODEL,
                        "missing (required by the `openai` model provider)",
                    );
                }
                Some(ModelProvider::OpenAi {
                    model: model?,
                    base_url: format!("{}{GATEWAY_OPENAI_BASE}", control_plane_url?),
                })
            }
            "command" => {
                let command = self.optional(LEVIATHAN_MODEL_COMMAND);
                if command.is_none() {
                    self.problem(
                        LEVIATHAN_MODEL_COMMAND,
                        "missing (required by the `command` model provider)",
                    );
                }
                Some(ModelProvider::Command {
                    command: command?,
                    control_plane_url: control_plane_url?.to_owned(),
                })
            }
            other => {
                let problem = format!(
                    "`{}` is not a provider (anthropic, openai or command)",
                    ellipsize(other)
                );
                self.problem(LEVIATHAN_MODEL_PROVIDER, problem);
                None
            }
        }
    }

    fn work(&mut self) -> Option<WorkSection> {
        let workspace_dir = match self.optional(LEVIATHAN_WORKSPACE_DIR) {
            Some(raw) => self.parsed(LEVIATHAN_WORKSPACE_DIR, Some(raw), absolute_path),
            None => Some(default_workspace()),
        };
        let repair_rounds = self.number_u32(LEVIATHAN_REPAIR_ROUNDS, 3, 0);
        let max_model_calls = self.number_u32(LEVIATHAN_MAX_MODEL_CALLS, 10, 1);
        let max_tokens = self.number(LEVIATHAN_MAX_TOKENS, 500_000, 1);
        let test_command = self.optional(LEVIATHAN_TEST_COMMAND);
        let test_timeout = self.seconds(LEVIATHAN_TEST_TIMEOUT_SECS, 900);
        let landlock = self.optional(LEVIATHAN_LANDLOCK).is_none() || self.flag(LEVIATHAN_LANDLOCK);
        Some(WorkSection {
            workspace_dir: workspace_dir?,
            repair_rounds,
            budget: Budget {
                max_model_calls,
                max_tokens,
            },
            test_command,
            test_timeout,
            landlock,
        })
    }

    fn delivery(&mut self) -> Option<DeliverySection> {
        let termination_message_path = match self.optional(LEVIATHAN_TERMINATION_MESSAGE_PATH) {
            Some(raw) => self
                .parsed(LEVIATHAN_TERMINATION_MESSAGE_PATH, Some(raw), |raw| {
                    let path = absolute_path(raw)?;
                    match path.parent() {
                        Some(dir) if dir.is_dir() => Ok(path),
                        _ => Err(format!(
                            "the directory of `{}` does not exist",
                            ellipsize(raw)
                        )),
                    }
                })
                .map(Some),
            None => Some(default_termination_path()),
        };
        let bot = GitIdentity::default();
        let git_identity = GitIdentity {
            name: self.optional(LEVIATHAN_GIT_AUTHOR_NAME).unwrap_or(bot.name),
            email: self
                .optional(LEVIATHAN_GIT_AUTHOR_EMAIL)
                .unwrap_or(bot.email),
        };
        if git_identity.email.contains(char::is_whitespace) || !git_identity.email.contains('@') {
            let problem = format!(
                "`{}` is not an email address",
                ellipsize(&git_identity.email)
            );
            self.problem(LEVIATHAN_GIT_AUTHOR_EMAIL, problem);
        }
        let draft_pull_requests = self.flag(LEVIATHAN_DRAFT_PRS);
        Some(DeliverySection {
            termination_message_path: termination_message_path?,
            git_identity,
            draft_pull_requests,
        })
    }
}

fn ellipsize(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Normalises a clone URL: scp-style `user@host:path` becomes `https://host/path` (the token only
/// works over HTTPS); URLs with credentials are refused.
fn normalise_repo_url(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') {
        return Ok(raw.to_owned());
    }
    if let Ok(url) = url::Url::parse(raw) {
        return match url.scheme() {
            "http" | "https" | "file" => {
                if !url.username().is_empty() || url.password().is_some() {
                    Err(
                        "must not embed credentials (GITHUB_TOKEN is given to git separately)"
                            .to_owned(),
                    )
                } else if url.scheme() != "file"
                    && url.path_segments().is_none_or(|s| s.count() < 2)
                {
                    Err(format!(
                        "`{}` must name a repository as `<host>/<owner>/<repo>`",
                        ellipsize(raw)
                    ))
                } else {
                    Ok(raw.to_owned())
                }
            }
            "ssh" => match (url.host_str(), url.path()) {
                (Some(host), path) if path.len() > 1 => Ok(format!("https://{host}{path}")),
                _ => Err(format!("`{}` names no repository", ellipsize(raw))),
            },
            other => Err(format!(
                "unsupported scheme `{other}` (use https://, http://, file://, an absolute path or git@host:owner/repo)"
            )),
        };
    }
    // scp-like syntax: [user@]host:path
    if let Some((host_part, path)) = raw.split_once(':') {
        let host = host_part.rsplit('@').next().unwrap_or(host_part);
        if !host.is_empty()
            && !path.is_empty()
            && !host.contains('/')
            && !raw.contains(char::is_whitespace)
        {
            return Ok(format!("https://{host}/{}", path.trim_start_matches('/')));
        }
    }
    Err(format!(
        "`{}` is not a repository URL (use https://, http://, file://, an absolute path or git@host:owner/repo)",
        ellipsize(raw)
    ))
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
fn check_commit(raw: &str) -> Result<String, String> {
    let hex = raw
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if hex && (raw.len() == 40 || raw.len() == 64) {
        Ok(raw.to_owned())
    } else {
        Err(format!("`{}` is not a full commit id", ellipsize(raw)))
    }
}

fn check_branch(raw: &str) -> Result<String, String> {
    let bad = raw.starts_with('-')
        || raw.starts_with('/')
        || raw.ends_with('/')
        || raw.ends_with(".lock")
        || raw.contains("..")
        || raw.contains("//")
        || raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        Err(format!("`{}` is not a valid branch name", ellipsize(raw)))
    } else {
        Ok(raw.to_owned())
    }
}

fn absolute_path(raw: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(raw);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("`{}` is not an absolute path", ellipsize(raw)))
    }
}

fn default_workspace() -> PathBuf {
    let k8s = Path::new("/workspace");
    if k8s.is_dir() {
        k8s.to_path_buf()
    } else {
        std::env::temp_dir().join("leviathan-workspace")
    }
}

/// `/dev/termination-log` when it exists and can be opened for writing (opening changes nothing).
fn default_termination_path() -> Option<PathBuf> {
    let path = Path::new(KUBERNETES_TERMINATION_LOG);
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .ok()
        .map(|_| path.to_path_buf())
}

impl WorkerConfig {
    /// Reads the process environment.
    pub fn from_process_env() -> Result<Self, ConfigError> {
        Self::from_env(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup`, reporting every problem at once. Reads nothing but
    /// the variables (and whether the default workspace and termination paths exist).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            lookup,
            problems: Vec::new(),
        };
        let attempt = r.attempt();
        let control_plane = r.control_plane();
        let github = r.github();
        let model = r.model(control_plane.as_ref().map(|c| c.url.as_str()));
        let work = r.work();
        let delivery = r.delivery();
        r.finish()?;
        // With no problems every section is complete; a `None` here would be a bug in the
        // checks of a section, reported rather than panicking.
        let missing = |variable| ConfigError {
            problems: vec![ConfigProblem {
                variable,
                problem: "could not be read".into(),
            }],
        };
        let attempt = attempt.ok_or_else(|| missing(TARGET_NAME))?;
        let control_plane = control_plane.ok_or_else(|| missing(CONTROL_PLANE_URL))?;
        let github = github.ok_or_else(|| missing(GITHUB_TOKEN))?;
        let model = model.ok_or_else(|| missing(LEVIATHAN_MODEL_PROVIDER))?;
        let work = work.ok_or_else(|| missing(LEVIATHAN_WORKSPACE_DIR))?;
        let delivery = delivery.ok_or_else(|| missing(LEVIATHAN_TERMINATION_MESSAGE_PATH))?;
        Ok(Self {
            target: attempt.target,
            repo_url: attempt.repo_url,
            base_branch: attempt.base_branch,
            base: attempt.base,
            task_id: attempt.task_id,
            attempt_id: attempt.attempt_id,
            attempt_number: attempt.attempt_number,
            control_plane_url: control_plane.url,
            control_plane_token: control_plane.token,
            control_plane_retry: RetryPolicy::new(
                8,
                Duration::from_millis(500),
                Duration::from_secs(30),
            ),
            github_token: github.token,
            github_api_url: github.api_url,
            model,
            workspace_dir: work.workspace_dir,
            repair_rounds: work.repair_rounds,
            budget: work.budget,
            test_command: work.test_command,
            test_timeout: work.test_timeout,
            sandbox: SandboxSettings {
                landlock: work.landlock,
                helper: None,
            },
            termination_message_path: delivery.termination_message_path,
            git_identity: delivery.git_identity,
            draft_pull_requests: delivery.draft_pull_requests,
            echo_log: true,
        })
    }

    /// Every credential in the configuration, for the [`Redactor`](crate::Redactor).
    pub fn secrets(&self) -> Vec<&str> {
        vec![
            self.control_plane_token.expose(),
            self.github_token.expose(),
        ]
    }

    /// The attempt's own directory, `<workspace>/<attempt_id>`.
    pub fn attempt_dir(&self) -> PathBuf {
        self.workspace_dir.join(self.attempt_id.as_str())
    }

    /// The attempt's branch, `agent/<task_id>-<attempt_id>`.
    pub fn branch(&self) -> String {
        format!("agent/{}-{}", self.task_id, self.attempt_id)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::RefCell,
        collections::{BTreeMap, BTreeSet},
    };

    use super::*;

    fn base_env() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            (TARGET_NAME, "demo".to_owned()),
            (
                TARGET_REPO_URL,
                "https://github.com/acme/demo.git".to_owned(),
            ),
            (TASK_ID, "docs-guide".to_owned()),
            (ATTEMPT_ID, "attempt-0001".to_owned()),
            (CONTROL_PLANE_URL, "http://cp:8000/".to_owned()),
            (CONTROL_PLANE_TOKEN, "cp-secret".to_owned()),
            (GITHUB_TOKEN, "ghp_secret".to_owned()),
        ])
    }

    fn parse(env: &BTreeMap<&'static str, String>) -> Result<WorkerConfig, ConfigError> {
        WorkerConfig::from_env(|name| env.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let c = parse(&base_env()).unwrap();
        assert_eq!(c.base_branch, "main");
        assert_eq!(c.control_plane_url, "http://cp:8000");
        assert_eq!(c.repair_rounds, 3);
        assert_eq!(c.attempt_number, 1);
        assert_eq!(c.budget.max_model_calls, 10);
        assert_eq!(c.github_api_url, DEFAULT_GITHUB_API_URL);
        assert_eq!(c.branch(), "agent/docs-guide-attempt-0001");
        assert!(!c.draft_pull_requests);
        match &c.model.provider {
            ModelProvider::Anthropic {
                model, base_url, ..
            } => {
                assert_eq!(model, DEFAULT_CLAUDE_MODEL);
                assert_eq!(base_url, "http://cp:8000/v1/gateway/anthropic");
            }
            other => panic!("{other:?}"),
        }
        let mut secrets = c.secrets();
        secrets.sort_unstable();
        assert_eq!(secrets, ["cp-secret", "ghp_secret"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut env = base_env();
        env.remove(TARGET_NAME);
        env.remove(GITHUB_TOKEN);
        env.insert(TASK_ID, "bad id".into());
        env.insert(CONTROL_PLANE_URL, "ftp://x".into());
        env.insert(LEVIATHAN_REPAIR_ROUNDS, "many".into());
        env.insert(LEVIATHAN_DRAFT_PRS, "perhaps".into());
        env.insert(LEVIATHAN_WORKSPACE_DIR, "relative/dir".into());
        let err = parse(&env).unwrap_err();
        let vars: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            vars,
            [
                TARGET_NAME,
                TASK_ID,
                CONTROL_PLANE_URL,
                GITHUB_TOKEN,
                LEVIATHAN_WORKSPACE_DIR,
                LEVIATHAN_REPAIR_ROUNDS,
                LEVIATHAN_DRAFT_PRS
            ]
        );
        let message = err.to_string();
        assert!(
            message.starts_with("invalid worker configuration (7 problems):"),
            "{message}"
        );
        assert!(message.contains("  - GITHUB_TOKEN: missing"), "{message}");
    }

    #[test]
    fn secrets_are_never_quoted() {
        let mut env = base_env();
        env.insert(
            TARGET_REPO_URL,
            "https://user:hunter2@github.com/a/b".into(),
        );
        env.insert(CONTROL_PLANE_URL, "https://u:pw-secret@cp".into());
        let err = parse(&env).unwrap_err().to_string();
        assert!(
            !err.contains("hunter2") && !err.contains("pw-secret"),
            "{err}"
        );
        assert!(err.contains("must not embed credentials"), "{err}");
    }

    #[test]
    fn provider_requirements() {
        let mut env = base_env();
        env.insert(LEVIATHAN_MODEL_PROVIDER, "openai".into());
        let err = parse(&env).unwrap_err();
        assert_eq!(err.problems[0].variable, LEVIATHAN_OPENAI_MODEL);
        env.insert(LEVIATHAN_OPENAI_MODEL, "qwen2.5-coder".into());
        // A provider key in the environment is not read: the gateway holds the keys.
        env.insert("LEVIATHAN_OPENAI_API_KEY", "sk-stray".into());
        let c = parse(&env).unwrap();
        assert_eq!(
            c.model.provider,
            ModelProvider::OpenAi {
                model: "qwen2.5-coder".into(),
                base_url: "http://cp:8000/v1/gateway/openai/v1".into()
            }
        );
        env.remove("LEVIATHAN_OPENAI_API_KEY");

        env.insert(LEVIATHAN_MODEL_PROVIDER, "command".into());
        assert_eq!(
            parse(&env).unwrap_err().problems[0].variable,
            LEVIATHAN_MODEL_COMMAND
        );
        env.insert(LEVIATHAN_MODEL_COMMAND, "my-agent --edit".into());
        let c = parse(&env).unwrap();
        assert_eq!(
            c.model.provider,
            ModelProvider::Command {
                command: "my-agent --edit".into(),
                control_plane_url: "http://cp:8000".into()
            }
        );

        env.insert(LEVIATHAN_MODEL_PROVIDER, "gemini".into());
        assert!(parse(&env).unwrap_err().to_string().contains("`gemini`"));
    }

    #[test]
    fn repo_urls() {
        for (raw, want) in [
            (
                "git@github.com:acme/demo.git",
                Ok("https://github.com/acme/demo.git"),
            ),
            (
                "ssh://git@github.com/acme/demo.git",
                Ok("https://github.com/acme/demo.git"),
            ),
            (
                "https://github.com/acme/demo",
                Ok("https://github.com/acme/demo"),
            ),
            ("file:///srv/git/demo.git", Ok("file:///srv/git/demo.git")),
            ("/srv/git/demo.git", Ok("/srv/git/demo.git")),
            ("https://github.com/", Err("must name a repository")),
            ("ftp://host/a/b", Err("unsupported scheme")),
            ("not a url", Err("is not a repository URL")),
        ] {
            match (normalise_repo_url(raw), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{raw}: {got}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let mut env = base_env();
        env.insert(TARGET_BRANCH, "  ".into());
        env.insert(CONTROL_PLANE_TOKEN, String::new());
        let err = parse(&env).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].variable, CONTROL_PLANE_TOKEN);
    }

    #[test]
    fn termination_path_directory_must_exist() {
        let mut env = base_env();
        env.insert(
            LEVIATHAN_TERMINATION_MESSAGE_PATH,
            "/nonexistent-dir-for-leviathan/result.json".into(),
        );
        let err = parse(&env).unwrap_err();
        assert_eq!(err.problems[0].variable, LEVIATHAN_TERMINATION_MESSAGE_PATH);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        env.insert(
            LEVIATHAN_TERMINATION_MESSAGE_PATH,
            path.to_string_lossy().into_owned(),
        );
        assert_eq!(parse(&env).unwrap().termination_message_path, Some(path));
    }

    #[test]
    fn parser_reads_exactly_the_documented_variables() {
        let read = RefCell::new(BTreeSet::new());
        for provider in ["anthropic", "openai", "command"] {
            let mut env = base_env();
            env.insert(LEVIATHAN_MODEL_PROVIDER, provider.into());
            let _ = WorkerConfig::from_env(|name| {
                read.borrow_mut().insert(name.to_owned());
                env.get(name).cloned()
            });
        }
        let documented: BTreeSet<String> = VARIABLES.iter().map(|v| v.name.to_owned()).collect();
        assert_eq!(read.into_inner(), documented);
    }

    /// The defaults the table documents are the ones the parser applies.
    #[test]
    fn documented_defaults_are_applied() {
        let c = parse(&base_env()).unwrap();
        let default = |name: &str| VARIABLES.iter().find(|v| v.name == name).unwrap().default;
        for (name, applied) in [
            (TARGET_BRANCH, c.base_branch.clone()),
            (
                LEVIATHAN_MODEL_TIMEOUT_SECS,
                c.model.timeout.as_secs().to_string(),
            ),
            (
                LEVIATHAN_MODEL_MAX_OUTPUT_TOKENS,
                c.model.max_output_tokens.to_string(),
            ),
            (LEVIATHAN_GITHUB_API_URL, c.github_api_url.clone()),
            (LEVIATHAN_ATTEMPT_NUMBER, c.attempt_number.to_string()),
            (LEVIATHAN_REPAIR_ROUNDS, c.repair_rounds.to_string()),
            (
                LEVIATHAN_MAX_MODEL_CALLS,
                c.budget.max_model_calls.to_string(),
            ),
            (LEVIATHAN_MAX_TOKENS, c.budget.max_tokens.to_string()),
            (
                LEVIATHAN_TEST_TIMEOUT_SECS,
                c.test_timeout.as_secs().to_string(),
            ),
            (LEVIATHAN_GIT_AUTHOR_NAME, c.git_identity.name.clone()),
            (LEVIATHAN_GIT_AUTHOR_EMAIL, c.git_identity.email.clone()),
            (LEVIATHAN_DRAFT_PRS, c.draft_pull_requests.to_string()),
        ] {
            assert_eq!(default(name), applied, "{name}");
        }
        let ModelProvider::Anthropic { model, .. } = &c.model.provider else {
            panic!("default provider")
        };
        assert_eq!(default(LEVIATHAN_CLAUDE_MODEL), model);
        assert_eq!(default(LEVIATHAN_MODEL_PROVIDER), c.model.provider.name());
    }

    /// The README's table is exactly the protocol's.
    #[test]
    fn readme_table_matches_the_parser() {
        let readme = include_str!("../README.md");
        let start = "<!-- env-table:start -->\n";
        let end = "<!-- env-table:end -->";
        let from = readme.find(start).expect("start marker") + start.len();
        let to = readme.find(end).expect("end marker");
        assert_eq!(
            &readme[from..to],
            leviathan_core::executor::protocol::variables_table(),
            "README.md's table is stale; replace it with protocol::variables_table()"
        );
    }

    /// The exit codes executors read (core's executor protocol) are the ones the worker uses.
    #[test]
    fn exit_codes_match_the_executor_protocol() {
        use leviathan_core::executor::protocol as p;
        assert_eq!(
            [p::EXIT_SUCCEEDED, p::EXIT_FAILED, p::EXIT_CONFIGURATION],
            [
                i32::from(crate::EXIT_SUCCEEDED),
                i32::from(crate::EXIT_FAILED),
                i32::from(crate::EXIT_CONFIG)
            ]
        );
    }
}
