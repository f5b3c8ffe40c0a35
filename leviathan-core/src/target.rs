//! Target configuration: where a target's repository is and the guardrails the scheduler enforces.
//!
//! Three shapes are accepted, and may be mixed:
//! - this project's: `name`, `repo_url`, `default_branch`, `backlog_path`, `test_command`,
//!   `landlock`, `autonomy: {enabled}`, `guardrails: {allowed_path_prefixes, max_open_prs,
//!   max_running_attempts, max_attempts_per_task, circuit_breaker: {enabled,
//!   consecutive_failures_threshold, cooldown_minutes}, timeout: {attempt_timeout_minutes},
//!   retry: {initial_backoff_seconds, factor, max_backoff_seconds, jitter}}`, `delivery:
//!   {forbidden_paths, max_files_changed, max_file_bytes, max_diff_lines, allow_binary, draft_prs,
//!   labels}` (checked by the trusted side at delivery, see [`crate::delivery`]);
//! - the predecessor's target file (`local_cache_dir` accepted and ignored; `contract_path` and
//!   `policy_path` refused with a message that says where their rules go);
//! - the predecessor's flat autonomy file (`autonomy_enabled`, `target_id`, `target_repo_url`,
//!   `target_branch`, `allowed_path_prefixes`, `max_open_prs`, `max_running_attempts`,
//!   `max_attempts_per_task`, `circuit_breaker_failures`, `attempt_timeout_seconds`,
//!   `backoff_seconds`; `control_plane_url`, `worker_image`, `worker_namespace`, `workspace_dir`
//!   and `schedule_cron` accepted and ignored).
//!
//! Unknown keys are refused, so a typo cannot silently disable a guardrail. Autonomy fails closed:
//! unless `autonomy.enabled` (or `autonomy_enabled`) is `true`, nothing is dispatched.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    backlog::DEFAULT_BACKLOG_PATH, delivery::DeliveryPolicy, id::TargetId, paths::PathRule,
};

/// A target and its policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetConfig {
    /// The target id.
    pub name: TargetId,
    /// Clone URL.
    pub repo_url: String,
    /// Base branch.
    pub default_branch: String,
    /// Backlog location inside the repository.
    pub backlog_path: String,
    /// Default test command for tasks without one.
    pub test_command: Option<String>,
    /// Whether the worker confines its tests and `command` model with Landlock (default true;
    /// off for targets whose tests write outside the worktree and their temp directory).
    pub landlock: bool,
    /// The guardrails.
    pub policy: Policy,
    /// What the trusted side accepts from a proposal and how it opens the pull request.
    pub delivery: DeliveryPolicy,
}

/// The scheduler's guardrails for one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Policy {
    /// Nothing is dispatched unless this is true.
    pub autonomy_enabled: bool,
    /// Every `allowed_paths` entry of a dispatched task must lie under one of these (`/` = anywhere).
    pub allowed_path_prefixes: Vec<String>,
    /// No dispatch while this many of the target's PRs are open.
    pub max_open_prs: u32,
    /// Attempts of this target running at once.
    pub max_running_attempts: u32,
    /// Attempts per task before it is given up.
    pub max_attempts_per_task: u32,
    /// Backoff between attempts of a task.
    pub retry: RetryPolicy,
    /// Pause after consecutive failures.
    pub circuit_breaker: CircuitPolicy,
    /// Wall-clock budget of one attempt.
    #[serde(with = "secs")]
    pub attempt_timeout: Duration,
}

/// Exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Backoff after the first failure.
    #[serde(with = "secs")]
    pub initial: Duration,
    /// Growth per further failure.
    pub factor: f64,
    /// Upper bound.
    #[serde(with = "secs")]
    pub max: Duration,
    /// Full jitter: the actual delay is uniform in `[0, backoff]`.
    pub jitter: bool,
}

/// The circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CircuitPolicy {
    /// Off: failures never pause the target.
    pub enabled: bool,
    /// Consecutive failed attempts that open the circuit.
    pub threshold: u32,
    /// How long it stays open before one probe attempt may run.
    #[serde(with = "secs")]
    pub cooldown: Duration,
}

mod secs {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Default for Policy {
    /// The predecessor's documented DEV defaults, with autonomy off.
    fn default() -> Self {
        Self {
            autonomy_enabled: false,
            allowed_path_prefixes: Vec::new(),
            max_open_prs: 1,
            max_running_attempts: 1,
            max_attempts_per_task: 3,
            retry: RetryPolicy {
                initial: Duration::from_secs(60),
                factor: 2.0,
                max: Duration::from_secs(3600),
                jitter: true,
            },
            circuit_breaker: CircuitPolicy {
                enabled: true,
                threshold: 3,
                cooldown: Duration::from_secs(30 * 60),
            },
            attempt_timeout: Duration::from_secs(900),
        }
    }
}

impl Policy {
    /// True when every rule lies under one of the allowed prefixes.
    pub fn in_scope<'a>(&self, rules: impl IntoIterator<Item = &'a PathRule>) -> bool {
        let mut rules = rules.into_iter().peekable();
        rules.peek().is_some()
            && rules.all(|rule| {
                self.allowed_path_prefixes
                    .iter()
                    .any(|prefix| prefix == "/" || rule.within_prefix(prefix))
            })
    }

    /// The un-jittered backoff before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .retry
            .factor
            .powi(retry.saturating_sub(1).min(64) as i32);
        let secs = (self.retry.initial.as_secs_f64() * exp).min(self.retry.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// Why a target configuration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {location}: {message}")]
pub struct TargetConfigError {
    /// The configuration file.
    pub file: String,
    /// The field (`guardrails.max_open_prs`) or `root`.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    target_id: Option<String>,
    repo_url: Option<String>,
    target_repo_url: Option<String>,
    default_branch: Option<String>,
    target_branch: Option<String>,
    backlog_path: Option<String>,
    test_command: Option<String>,
    landlock: Option<bool>,
    autonomy: Option<RawAutonomy>,
    autonomy_enabled: Option<bool>,
    guardrails: Option<RawGuardrails>,
    delivery: Option<RawDelivery>,
    allowed_path_prefixes: Option<Vec<String>>,
    max_open_prs: Option<u32>,
    max_running_attempts: Option<u32>,
    max_attempts_per_task: Option<u32>,
    circuit_breaker_failures: Option<u32>,
    attempt_timeout_seconds: Option<u64>,
    backoff_seconds: Option<u64>,
    // The predecessor's policy and contract files: refused, not ignored (see `refuse_policy_files`).
    contract_path: Option<serde_yaml_ng::Value>,
    policy_path: Option<serde_yaml_ng::Value>,
    // Accepted for compatibility with the predecessor's files; they configure nothing here.
    #[serde(rename = "local_cache_dir")]
    _local_cache_dir: Option<serde_yaml_ng::Value>,
    #[serde(rename = "control_plane_url")]
    _control_plane_url: Option<serde_yaml_ng::Value>,
    #[serde(rename = "worker_image")]
    _worker_image: Option<serde_yaml_ng::Value>,
    #[serde(rename = "worker_namespace")]
    _worker_namespace: Option<serde_yaml_ng::Value>,
    #[serde(rename = "workspace_dir")]
    _workspace_dir: Option<serde_yaml_ng::Value>,
    #[serde(rename = "schedule_cron")]
    _schedule_cron: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutonomy {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuardrails {
    allowed_path_prefixes: Option<Vec<String>>,
    max_open_prs: Option<u32>,
    max_running_attempts: Option<u32>,
    max_attempts_per_task: Option<u32>,
    circuit_breaker: Option<RawCircuit>,
    timeout: Option<RawTimeout>,
    retry: Option<RawRetry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    forbidden_paths: Option<Vec<String>>,
    max_files_changed: Option<u32>,
    max_file_bytes: Option<u64>,
    max_diff_lines: Option<u64>,
    allow_binary: Option<bool>,
    draft_prs: Option<bool>,
    labels: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCircuit {
    enabled: Option<bool>,
    consecutive_failures_threshold: Option<u32>,
    cooldown_minutes: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeout {
    attempt_timeout_minutes: Option<f64>,
    attempt_timeout_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_backoff_seconds: Option<f64>,
    factor: Option<f64>,
    max_backoff_seconds: Option<f64>,
    jitter: Option<bool>,
}

/// Parses target configuration `text` read from `file`. `default_name` names the target when the
/// file does not (the predecessor defaulted it to the argument used to find the file).
pub fn parse_target_config(
    file: &str,
    text: &str,
    default_name: Option<&str>,
) -> Result<TargetConfig, TargetConfigError> {
    let at = Locate { file };
    let raw: Raw = if text.trim().is_empty() {
        Raw::default()
    } else {
        serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)).map_err(
            |e| {
                let path = e.path().to_string();
                let location = if path == "." { "root".to_owned() } else { path };
                at.error(&location, e.inner().to_string())
            },
        )?
    };
    let name = at
        .pick(raw.name.clone(), raw.target_id.clone(), "name", "target_id")?
        .or_else(|| default_name.map(str::to_owned))
        .ok_or_else(|| at.error("name", "missing (or `target_id`)".into()))?;
    let name = TargetId::new(name).map_err(|e| at.error("name", e.to_string()))?;
    let repo_url = at
        .pick(
            raw.repo_url.clone(),
            raw.target_repo_url.clone(),
            "repo_url",
            "target_repo_url",
        )?
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| at.error("repo_url", "missing (or `target_repo_url`)".into()))?;
    let default_branch = at
        .pick(
            raw.default_branch.clone(),
            raw.target_branch.clone(),
            "default_branch",
            "target_branch",
        )?
        .unwrap_or_else(|| "main".into());
    at.refuse_policy_files(&raw)?;
    let policy = at.policy(&raw)?;
    let delivery = at.delivery(raw.delivery.as_ref())?;
    Ok(TargetConfig {
        name,
        repo_url,
        default_branch,
        backlog_path: raw
            .backlog_path
            .unwrap_or_else(|| DEFAULT_BACKLOG_PATH.to_owned()),
        test_command: raw.test_command,
        landlock: raw.landlock.unwrap_or(true),
        policy,
        delivery,
    })
}

/// Reads the sections of a parsed file, naming the file and the field in every error.
struct Locate<'f> {
    file: &'f str,
}

impl Locate<'_> {
    fn error(&self, location: &str, message: String) -> TargetConfigError {
        TargetConfigError {
            file: self.file.to_owned(),
            location: location.to_owned(),
            message,
        }
    }

    /// One of two spellings of a field (this project's and the predecessor's); both may be
    /// given only when they agree.
    fn pick(
        &self,
        ours: Option<String>,
        theirs: Option<String>,
        ours_key: &str,
        theirs_key: &str,
    ) -> Result<Option<String>, TargetConfigError> {
        match (ours, theirs) {
            (Some(a), Some(b)) if a != b => {
                Err(self.error(ours_key, format!("conflicts with `{theirs_key}` ({b})")))
            }
            (a, b) => Ok(a.or(b)),
        }
    }

    fn positive(&self, location: &str, v: u32) -> Result<u32, TargetConfigError> {
        if v == 0 {
            Err(self.error(location, "must be at least 1".into()))
        } else {
            Ok(v)
        }
    }

    fn duration(&self, location: &str, secs: f64) -> Result<Duration, TargetConfigError> {
        Duration::try_from_secs_f64(secs).map_err(|_| {
            self.error(
                location,
                format!("must be a non-negative number, got {secs}"),
            )
        })
    }

    /// The guardrails, from `guardrails` or the predecessor's flat keys.
    fn policy(&self, raw: &Raw) -> Result<Policy, TargetConfigError> {
        let g = raw.guardrails.as_ref();
        let defaults = Policy::default();
        let prefixes = g
            .and_then(|g| g.allowed_path_prefixes.clone())
            .or_else(|| raw.allowed_path_prefixes.clone())
            .unwrap_or_default();
        for (i, prefix) in prefixes.iter().enumerate() {
            if prefix != "/" {
                PathRule::parse(prefix).map_err(|e| {
                    self.error(&format!("allowed_path_prefixes[{i}]"), e.to_string())
                })?;
            }
        }
        let limit = |ours: Option<u32>, theirs: Option<u32>, default: u32, location: &str| {
            self.positive(location, ours.or(theirs).unwrap_or(default))
        };
        let policy = Policy {
            autonomy_enabled: raw
                .autonomy
                .as_ref()
                .and_then(|a| a.enabled)
                .or(raw.autonomy_enabled)
                .unwrap_or(false),
            allowed_path_prefixes: prefixes,
            max_open_prs: limit(
                g.and_then(|g| g.max_open_prs),
                raw.max_open_prs,
                defaults.max_open_prs,
                "max_open_prs",
            )?,
            max_running_attempts: limit(
                g.and_then(|g| g.max_running_attempts),
                raw.max_running_attempts,
                defaults.max_running_attempts,
                "max_running_attempts",
            )?,
            max_attempts_per_task: limit(
                g.and_then(|g| g.max_attempts_per_task),
                raw.max_attempts_per_task,
                defaults.max_attempts_per_task,
                "max_attempts_per_task",
            )?,
            retry: self.retry(g.and_then(|g| g.retry.as_ref()), raw.backoff_seconds)?,
            circuit_breaker: self.circuit_breaker(
                g.and_then(|g| g.circuit_breaker.as_ref()),
                raw.circuit_breaker_failures,
            )?,
            attempt_timeout: self.attempt_timeout(
                g.and_then(|g| g.timeout.as_ref()),
                raw.attempt_timeout_seconds,
            )?,
        };
        Ok(policy)
    }

    /// The predecessor's `policy_path` and `contract_path` name files whose rules this project
    /// would not read; accepting the keys would silently drop those rules, so they are refused.
    fn refuse_policy_files(&self, raw: &Raw) -> Result<(), TargetConfigError> {
        for (key, value) in [
            ("policy_path", &raw.policy_path),
            ("contract_path", &raw.contract_path),
        ] {
            if value.is_some() {
                return Err(self.error(
                    key,
                    "the predecessor's policy and contract files are not read: put their rules in \
                     this file (`guardrails:` and `delivery: {forbidden_paths, max_files_changed, \
                     max_file_bytes, max_diff_lines, allow_binary}`) and remove the key"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// The `delivery` section; limits are at least 1, paths clean rules, labels non-empty.
    fn delivery(&self, raw: Option<&RawDelivery>) -> Result<DeliveryPolicy, TargetConfigError> {
        let defaults = DeliveryPolicy::default();
        let Some(raw) = raw else {
            return Ok(defaults);
        };
        let forbidden_paths = raw
            .forbidden_paths
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| {
                PathRule::parse(p).map_err(|e| {
                    self.error(&format!("delivery.forbidden_paths[{i}]"), e.to_string())
                })
            })
            .collect::<Result<_, _>>()?;
        let labels = raw.labels.clone().unwrap_or_default();
        if let Some(i) = labels.iter().position(|l| l.trim().is_empty()) {
            return Err(self.error(&format!("delivery.labels[{i}]"), "must not be empty".into()));
        }
        let at_least_one = |v: Option<u64>, default: u64, field: &str| match v {
            Some(0) => Err(self.error(&format!("delivery.{field}"), "must be at least 1".into())),
            v => Ok(v.unwrap_or(default)),
        };
        Ok(DeliveryPolicy {
            forbidden_paths,
            max_files_changed: self.positive(
                "delivery.max_files_changed",
                raw.max_files_changed.unwrap_or(defaults.max_files_changed),
            )?,
            max_file_bytes: at_least_one(
                raw.max_file_bytes,
                defaults.max_file_bytes,
                "max_file_bytes",
            )?,
            max_diff_lines: at_least_one(
                raw.max_diff_lines,
                defaults.max_diff_lines,
                "max_diff_lines",
            )?,
            allow_binary: raw.allow_binary.unwrap_or(defaults.allow_binary),
            draft_prs: raw.draft_prs.unwrap_or(defaults.draft_prs),
            labels,
        })
    }

    /// `guardrails.retry`, or the predecessor's `backoff_seconds` for the first wait.
    fn retry(
        &self,
        retry: Option<&RawRetry>,
        backoff_seconds: Option<u64>,
    ) -> Result<RetryPolicy, TargetConfigError> {
        let defaults = Policy::default().retry;
        let retry = retry.cloned().unwrap_or_default();
        Ok(RetryPolicy {
            initial: match retry.initial_backoff_seconds {
                Some(s) => self.duration("guardrails.retry.initial_backoff_seconds", s)?,
                None => backoff_seconds
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.initial),
            },
            factor: match retry.factor {
                Some(f) if f.is_finite() && f >= 1.0 => f,
                Some(f) => {
                    return Err(self.error(
                        "guardrails.retry.factor",
                        format!("must be at least 1, got {f}"),
                    ));
                }
                None => defaults.factor,
            },
            max: match retry.max_backoff_seconds {
                Some(s) => self.duration("guardrails.retry.max_backoff_seconds", s)?,
                None => defaults.max,
            },
            jitter: retry.jitter.unwrap_or(defaults.jitter),
        })
    }

    /// `guardrails.circuit_breaker`, or the predecessor's `circuit_breaker_failures`.
    fn circuit_breaker(
        &self,
        circuit: Option<&RawCircuit>,
        failures: Option<u32>,
    ) -> Result<CircuitPolicy, TargetConfigError> {
        let defaults = Policy::default().circuit_breaker;
        let circuit = circuit.cloned().unwrap_or_default();
        Ok(CircuitPolicy {
            enabled: circuit.enabled.unwrap_or(defaults.enabled),
            threshold: self.positive(
                "guardrails.circuit_breaker.consecutive_failures_threshold",
                circuit
                    .consecutive_failures_threshold
                    .or(failures)
                    .unwrap_or(defaults.threshold),
            )?,
            cooldown: match circuit.cooldown_minutes {
                Some(m) => {
                    self.duration("guardrails.circuit_breaker.cooldown_minutes", m * 60.0)?
                }
                None => defaults.cooldown,
            },
        })
    }

    /// `guardrails.timeout`, or the predecessor's `attempt_timeout_seconds`; never zero.
    fn attempt_timeout(
        &self,
        timeout: Option<&RawTimeout>,
        seconds: Option<u64>,
    ) -> Result<Duration, TargetConfigError> {
        let timeout = timeout.cloned().unwrap_or_default();
        let limit = match (
            timeout.attempt_timeout_minutes,
            timeout.attempt_timeout_seconds.or(seconds),
        ) {
            (Some(m), _) => {
                self.duration("guardrails.timeout.attempt_timeout_minutes", m * 60.0)?
            }
            (None, Some(s)) => Duration::from_secs(s),
            (None, None) => Policy::default().attempt_timeout,
        };
        if limit.is_zero() {
            return Err(self.error(
                "guardrails.timeout",
                "the attempt timeout must be positive".into(),
            ));
        }
        Ok(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_shape() {
        let c = parse_target_config(
            "demo.yaml",
            r#"
name: demo
repo_url: https://example.com/o/demo.git
autonomy: {enabled: true}
guardrails:
  allowed_path_prefixes: [docs/, tests/]
  max_open_prs: 2
  circuit_breaker: {consecutive_failures_threshold: 4, cooldown_minutes: 1.5}
  timeout: {attempt_timeout_minutes: 2}
  retry: {initial_backoff_seconds: 10, factor: 3, max_backoff_seconds: 100, jitter: false}
"#,
            None,
        )
        .unwrap();
        assert_eq!(c.name, "demo");
        assert_eq!(c.default_branch, "main");
        assert!(c.landlock, "Landlock is on unless the target turns it off");
        assert!(c.policy.autonomy_enabled);
        assert_eq!(c.policy.max_open_prs, 2);
        assert_eq!(c.policy.circuit_breaker.threshold, 4);
        assert_eq!(c.policy.circuit_breaker.cooldown, Duration::from_secs(90));
        assert_eq!(c.policy.attempt_timeout, Duration::from_secs(120));
        assert_eq!(c.policy.backoff(1), Duration::from_secs(10));
        assert_eq!(c.policy.backoff(2), Duration::from_secs(30));
        assert_eq!(c.policy.backoff(5), Duration::from_secs(100));
        let off = parse_target_config(
            "demo.yaml",
            "name: demo\nrepo_url: https://example.com/o/demo.git\nlandlock: false\n",
            None,
        )
        .unwrap();
        assert!(!off.landlock);
    }

    #[test]
    fn predecessor_autonomy_shape() {
        let c = parse_target_config(
            "dev.yaml",
            "autonomy_enabled: true\ntarget_id: radix\ntarget_repo_url: https://github.com/o/radix.git\ntarget_branch: main\n\
             allowed_path_prefixes: [.leviathan/, docs/]\nmax_open_prs: 1\nmax_running_attempts: 1\nmax_attempts_per_task: 2\n\
             circuit_breaker_failures: 2\nschedule_cron: \"*/5 * * * *\"\nattempt_timeout_seconds: 900\n\
             control_plane_url: http://cp:8000\nworker_image: leviathan-worker:local\nworker_namespace: leviathan\nworkspace_dir: /workspace\n",
            None,
        )
        .unwrap();
        assert_eq!(c.name, "radix");
        assert_eq!(c.policy.max_attempts_per_task, 2);
        assert_eq!(c.policy.circuit_breaker.threshold, 2);
        assert_eq!(c.policy.attempt_timeout, Duration::from_secs(900));
    }

    #[test]
    fn predecessor_target_file_and_default_name() {
        let c = parse_target_config(
            "radix.yaml",
            "repo_url: git@github.com:o/radix.git\ndefault_branch: main\nlocal_cache_dir: ~/.leviathan/targets/radix\n\
             backlog_path: .leviathan/backlog.yaml\n",
            Some("radix"),
        )
        .unwrap();
        assert_eq!(c.name, "radix");
        assert!(
            !c.policy.autonomy_enabled,
            "autonomy fails closed when not enabled explicitly"
        );
        for key in ["policy_path", "contract_path"] {
            let e = parse_target_config(
                "radix.yaml",
                &format!("repo_url: u\n{key}: .leviathan/{key}.yaml\n"),
                Some("radix"),
            )
            .unwrap_err();
            assert_eq!(e.location, key);
            assert!(e.message.contains("are not read"), "{e}");
        }
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = parse_target_config("t.yaml", "name: x\nrepo_url: u\nmax_open_pr: 1\n", None)
            .unwrap_err();
        assert_eq!(e.file, "t.yaml");
        assert!(e.message.contains("unknown field `max_open_pr`"), "{e}");
        let e = parse_target_config(
            "t.yaml",
            "name: x\nrepo_url: u\nguardrails: {max_open_prs: -1}\n",
            None,
        )
        .unwrap_err();
        assert_eq!(e.location, "guardrails.max_open_prs");
        let e = parse_target_config("t.yaml", "name: x\nrepo_url: u\nmax_open_prs: 0\n", None)
            .unwrap_err();
        assert_eq!(e.location, "max_open_prs");
        let e = parse_target_config("t.yaml", "name: x\n", None).unwrap_err();
        assert_eq!(e.location, "repo_url");
        let e = parse_target_config("t.yaml", "name: x\ntarget_id: y\nrepo_url: u\n", None)
            .unwrap_err();
        assert_eq!(e.location, "name");
        let e = parse_target_config(
            "t.yaml",
            "name: x\nrepo_url: u\nallowed_path_prefixes: [../]\n",
            None,
        )
        .unwrap_err();
        assert_eq!(e.location, "allowed_path_prefixes[0]");
    }

    #[test]
    fn delivery_section() {
        let c = parse_target_config(
            "t.yaml",
            "name: x\nrepo_url: u\ndelivery:\n  forbidden_paths: [docs/private/, LICENSE]\n  \
             max_files_changed: 3\n  max_file_bytes: 2048\n  max_diff_lines: 40\n  allow_binary: true\n  \
             draft_prs: true\n  labels: [agent, docs]\n",
            None,
        )
        .unwrap();
        let d = &c.delivery;
        assert_eq!(d.forbidden_paths.len(), 2);
        assert!(d.forbidden_paths[0].allows("docs/private/a.md"));
        assert_eq!(
            (d.max_files_changed, d.max_file_bytes, d.max_diff_lines),
            (3, 2048, 40)
        );
        assert!(d.allow_binary && d.draft_prs);
        assert_eq!(d.labels, ["agent", "docs"]);
        let plain = parse_target_config("t.yaml", "name: x\nrepo_url: u\n", None).unwrap();
        assert_eq!(plain.delivery, DeliveryPolicy::default());
        for (text, location) in [
            (
                "delivery: {forbidden_paths: [../x]}",
                "delivery.forbidden_paths[0]",
            ),
            ("delivery: {max_diff_lines: 0}", "delivery.max_diff_lines"),
            (
                "delivery: {max_files_changed: 0}",
                "delivery.max_files_changed",
            ),
            ("delivery: {labels: [' ']}", "delivery.labels[0]"),
        ] {
            let e = parse_target_config("t.yaml", &format!("name: x\nrepo_url: u\n{text}\n"), None)
                .unwrap_err();
            assert_eq!(e.location, location, "{text}: {e}");
        }
        let e = parse_target_config(
            "t.yaml",
            "name: x\nrepo_url: u\ndelivery: {draft: true}\n",
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("unknown field `draft`"), "{e}");
    }

    #[test]
    fn scope() {
        let policy = Policy {
            allowed_path_prefixes: vec!["docs/".into()],
            ..Policy::default()
        };
        let docs = PathRule::parse("docs/a.md").unwrap();
        let src = PathRule::parse("src/a.rs").unwrap();
        assert!(policy.in_scope([&docs]));
        assert!(!policy.in_scope([&docs, &src]));
        assert!(
            !policy.in_scope([]),
            "a task without paths is never in scope"
        );
        let anywhere = Policy {
            allowed_path_prefixes: vec!["/".into()],
            ..Policy::default()
        };
        assert!(anywhere.in_scope([&src]));
    }
}
