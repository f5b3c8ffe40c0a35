//! One attempt, end to end: `attempt.started`, clone, task, model and tests with repair,
//! allowed paths on the final tree, commit, push, pull request, artifacts, terminal bundle.

use std::{collections::BTreeMap, path::Path};

use leviathan_core::{
    AttemptResult, NewEvent,
    backlog::BacklogTask,
    catalogue::{
        AttemptFailed, AttemptStarted, AttemptSucceeded, CommitCreated, PrCreated, TestRunReport,
        TestsFailed, TestsPassed,
    },
    event::batch_digest,
    forge::{Forge, PullRequest, PullRequestSpec, open_pull_request},
    model::{Failure, FailureClass, FailureKind, SandboxReport},
};

use leviathan_core::redact::Redactor;

use crate::{
    config::{BaseBundle, Budget, ConfigError, WorkerConfig},
    control_plane::{self, Bundle, ControlPlane},
    envelope, files,
    forge::{self, GitHubForge},
    git::{self, Git},
    journal::Journal,
    llm::{self, CodeModel, Completion, ModelError, ModelRequest},
    process,
    prompt::{self, Feedback, OutputStyle},
    report::{AttemptReport, Delivery, write_termination_message},
    sandbox::Untrusted,
    scope,
    task::load_task,
    test_runner::{self, TestRun},
};

/// Consecutive unusable model answers after which the attempt gives up.
const MAX_INVALID_ANSWERS: u32 = 3;

/// Longest failure summary kept.
const SUMMARY_CHARS: usize = 600;

/// What a successful attempt delivered.
struct Delivered {
    branch: String,
    commit_sha: String,
    pr_number: u64,
    pr_url: String,
}

/// A failure with its kind and class, summary not yet redacted or shortened.
fn fail(kind: FailureKind, class: FailureClass, summary: impl Into<String>) -> Failure {
    Failure {
        kind,
        class,
        summary: summary.into(),
    }
}

/// `text` on one line, at most [`SUMMARY_CHARS`] characters.
fn one_line(text: &str) -> String {
    let flat = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    match flat.char_indices().nth(SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// Runs one attempt end to end and returns its report; the result has also been written to the
/// termination message path. The only error is a configuration the control-plane client cannot
/// use, found before any side effect.
pub async fn run_attempt(config: WorkerConfig) -> Result<AttemptReport, ConfigError> {
    let client = control_plane::client(&config)?;
    Ok(run(&config, &client).await)
}

/// Runs the attempt against `control_plane`, writes the result to the termination message path
/// and returns the report. Never panics on a runtime failure: every failure becomes the result.
pub(crate) async fn run(config: &WorkerConfig, control_plane: &dyn ControlPlane) -> AttemptReport {
    let redactor = Redactor::new(config.secrets());
    let mut journal = Journal::new(&config.attempt_id, redactor.clone(), config.echo_log);
    journal.log(format!(
        "attempt {} (number {}) of task {} on target {}: {} at {}",
        config.attempt_id,
        config.attempt_number,
        config.task_id,
        config.target,
        config.repo_url,
        config.base_branch
    ));

    let non_dumpable = matches!(
        rustix::process::dumpable_behavior(),
        Ok(rustix::process::DumpableBehavior::NotDumpable)
    );
    let sandbox = config.sandbox.probe(non_dumpable).await;
    journal.log(format!(
        "sandbox: landlock {}, worker {}, untrusted children {}",
        sandbox.landlock,
        if sandbox.non_dumpable {
            "non-dumpable"
        } else {
            "DUMPABLE"
        },
        if sandbox.confined_children {
            "in their own session without capabilities"
        } else {
            "in their own process group only"
        }
    ));
    let refused = post_started(config, control_plane, &mut journal, sandbox).await;
    let outcome = match &refused {
        Some(reason) => Err(fail(
            FailureKind::Setup,
            FailureClass::Permanent,
            format!("the control plane refused attempt.started: {reason}"),
        )),
        None => execute(config, control_plane, &mut journal).await,
    };
    let result = conclude(outcome, &redactor, &mut journal);
    let delivery = match refused {
        Some(reason) => Delivery::Refused(redactor.redact(&reason)),
        None => deliver_record(config, control_plane, &mut journal, &result).await,
    };

    let (events, artifacts, log) = journal.into_parts();
    let report = AttemptReport {
        attempt_id: config.attempt_id.clone(),
        result,
        events,
        artifacts,
        delivery,
        log,
    };
    if let Some(path) = &config.termination_message_path
        && let Err(e) = write_termination_message(path, &report.result_line())
        && config.echo_log
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "cannot write the termination message to {}: {e}",
            path.display()
        );
    }
    report
}

/// Step 1: `attempt.started` at once, as a one-event bundle. Returns the reason when the control
/// plane refused it (the attempt must not run); an unreachable control plane is only logged,
/// the event goes again with the final bundle.
async fn post_started(
    config: &WorkerConfig,
    control_plane: &dyn ControlPlane,
    journal: &mut Journal,
    sandbox: SandboxReport,
) -> Option<String> {
    let started = journal.event(&AttemptStarted {
        attempt_id: config.attempt_id.clone(),
        task_id: Some(config.task_id.clone()),
        target_id: Some(config.target.clone()),
        worker: hostname(),
        sandbox: Some(sandbox),
    });
    let events = std::slice::from_ref(&started);
    let bundle = Bundle {
        target: &config.target,
        bundle_id: bundle_id(config, "started", events),
        events,
        artifacts: &[],
    };
    match control_plane::deliver(control_plane, &bundle).await {
        Ok(()) => {
            journal.log("attempt.started recorded by the control plane");
            None
        }
        Err(e) if e.transient => {
            journal.log(format!(
                "control plane unreachable for attempt.started ({e}); continuing, it is re-sent with the final bundle"
            ));
            None
        }
        Err(e) => Some(e.message),
    }
}

/// `bundle-<attempt_id>-<step>-<digest>`: the digest of the events makes the id name this one
/// content, so the worker never sends other content under an id it used (the control plane
/// refuses that with 409 `bundle_conflict`), while a retry of the same bundle keeps its id.
fn bundle_id(config: &WorkerConfig, step: &str, events: &[NewEvent]) -> String {
    let digest = batch_digest(events).to_string();
    format!("bundle-{}-{step}-{}", config.attempt_id, &digest[..16])
}

/// The attempt's result, logged; failure summaries redacted and cut to one line.
fn conclude(
    outcome: Result<Delivered, Failure>,
    redactor: &Redactor,
    journal: &mut Journal,
) -> AttemptResult {
    match outcome {
        Ok(delivered) => {
            journal.log(format!(
                "succeeded: pull request #{} {} ({} at {})",
                delivered.pr_number, delivered.pr_url, delivered.branch, delivered.commit_sha
            ));
            AttemptResult::Succeeded {
                branch: delivered.branch,
                commit_sha: delivered.commit_sha,
                pr_number: delivered.pr_number,
                pr_url: delivered.pr_url,
            }
        }
        Err(failure) => {
            let failure = Failure {
                summary: one_line(&redactor.redact(&failure.summary)),
                ..failure
            };
            journal.log(format!(
                "failed ({}, {}): {}",
                failure.kind, failure.class, failure.summary
            ));
            AttemptResult::Failed(failure)
        }
    }
}

/// Step 9: closes the record (the log artifact, then the terminal event), uploads every
/// artifact and posts the whole bundle (`attempt.started` again, skipped as a duplicate).
async fn deliver_record(
    config: &WorkerConfig,
    control_plane: &dyn ControlPlane,
    journal: &mut Journal,
    result: &AttemptResult,
) -> Delivery {
    let log = journal.log_text().to_owned();
    journal.artifact("log", "worker.log", &log);
    match result {
        AttemptResult::Succeeded {
            branch,
            commit_sha,
            pr_number,
            pr_url,
        } => journal
            .event(&AttemptSucceeded {
                attempt_id: config.attempt_id.clone(),
                branch: branch.clone(),
                commit_sha: commit_sha.clone(),
                pr_number: i64::try_from(*pr_number).unwrap_or(i64::MAX),
                pr_url: pr_url.clone(),
            })
            .into(),
        // The proposal's `delivery.requested` is in the bundle: the trusted side ends the attempt.
        AttemptResult::Proposed { .. } => None,
        AttemptResult::Failed(failure) => journal
            .event(&AttemptFailed {
                attempt_id: config.attempt_id.clone(),
                failure_kind: failure.kind,
                failure_class: Some(failure.class),
                error_summary: failure.summary.clone(),
            })
            .into(),
    };
    let bundle = Bundle {
        target: &config.target,
        bundle_id: bundle_id(config, "final", journal.events()),
        events: journal.events(),
        artifacts: journal.artifacts(),
    };
    let delivered_id = bundle.bundle_id.clone();
    match control_plane::deliver(control_plane, &bundle).await {
        Ok(()) => {
            let (events, artifacts) = (journal.events().len(), journal.artifacts().len());
            journal.log(format!(
                "{delivered_id} delivered ({events} events, {artifacts} artifacts)"
            ));
            Delivery::Delivered
        }
        Err(e) => {
            let reason = journal.redactor().redact(&e.message);
            journal.log(format!("the final bundle was not delivered: {reason}"));
            Delivery::Failed(reason)
        }
    }
}

/// The pod or host name, for `attempt.started`.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// `Transient` when retrying may help, else `Permanent`.
fn class(transient: bool) -> FailureClass {
    if transient {
        FailureClass::Transient
    } else {
        FailureClass::Permanent
    }
}

/// The worker's own machinery failed (the filesystem, git bookkeeping).
fn infrastructure(what: impl std::fmt::Display) -> Failure {
    fail(
        FailureKind::Infrastructure,
        FailureClass::Transient,
        what.to_string(),
    )
}

/// Steps 2 to 8.
async fn execute(
    config: &WorkerConfig,
    control_plane: &dyn ControlPlane,
    journal: &mut Journal,
) -> Result<Delivered, Failure> {
    let forge = GitHubForge::new(
        &config.github_api_url,
        &config.github_token,
        &config.repo_url,
    )
    .map_err(|e| {
        fail(
            FailureKind::PullRequest,
            class(e.is_transient()),
            e.to_string(),
        )
    })?;

    // A fresh `<workspace>/<attempt_id>/{home,repo,tmp}`; children never see a secret
    // variable, and untrusted ones write only to the worktree and `tmp`.
    let attempt_dir = config.attempt_dir();
    if attempt_dir.exists() {
        std::fs::remove_dir_all(&attempt_dir)
            .map_err(|e| infrastructure(format!("cannot clear {}: {e}", attempt_dir.display())))?;
    }
    let (home, temp_dir) = (attempt_dir.join("home"), attempt_dir.join("tmp"));
    for dir in [&home, &temp_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| infrastructure(format!("cannot create {}: {e}", dir.display())))?;
    }
    let repo = attempt_dir.join("repo");
    let base_env = process::scrubbed_env(&config.secrets());
    let untrusted = Untrusted::new(base_env.clone(), config.sandbox.clone(), temp_dir);
    let git = Git::new(
        &home,
        &base_env,
        &config.git_identity,
        &config.repo_url,
        &config.github_token,
        journal.redactor().clone(),
    );

    let checkout = clone(config, control_plane, &git, &repo, journal).await?;
    let task = load_task(&repo, &config.task_id)
        .map_err(|e| fail(FailureKind::Setup, FailureClass::Permanent, e.to_string()))?;
    if task.spec.allowed_paths.is_empty() {
        return Err(fail(
            FailureKind::Setup,
            FailureClass::Permanent,
            format!(
                "task `{}` has no allowed_paths: nothing may change",
                task.id
            ),
        ));
    }
    journal.log(format!(
        "task `{}`: {} (scope {}, allowed paths: {})",
        task.id,
        task.spec.title,
        task.spec.scope,
        task.spec
            .allowed_paths
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let model = llm::from_settings(
        &config.model,
        &config.control_plane_token,
        untrusted.clone(),
    )
    .map_err(|e| fail(FailureKind::Model, class(e.is_transient()), e.to_string()))?;
    generate_and_test(config, journal, model.as_ref(), &task, &repo, &untrusted).await?;
    check_final_tree(&git, &repo, &checkout, &task, journal).await?;
    let (branch, commit_sha) = commit_and_push(config, &git, &repo, &task, journal).await?;
    let pr = open_pr(config, &forge, &task, &branch, journal).await?;
    Ok(Delivered {
        branch,
        commit_sha,
        pr_number: pr.number,
        pr_url: pr.url,
    })
}

/// The state right after the clone, which the final tree is compared with.
struct Checkout {
    base_commit: String,
    config_fingerprint: leviathan_core::Sha256Digest,
}

/// Step 2: clones the base branch, from the published bundle when the scheduler gave one.
async fn clone(
    config: &WorkerConfig,
    control_plane: &dyn ControlPlane,
    git: &Git,
    repo: &Path,
    journal: &mut Journal,
) -> Result<Checkout, Failure> {
    let cloned = match &config.base {
        Some(base) => clone_bundle(config, control_plane, git, base, repo).await?,
        None => git.clone(&config.repo_url, &config.base_branch, repo).await,
    };
    cloned.map_err(|e| {
        fail(
            FailureKind::Setup,
            class(!e.auth_failed),
            format!(
                "clone of {} at {}: {e}",
                config.repo_url, config.base_branch
            ),
        )
    })?;
    let base_commit = git
        .rev_parse(repo, "HEAD")
        .await
        .map_err(|e| fail(FailureKind::Setup, FailureClass::Transient, e.to_string()))?;
    if let Some(base) = config.base.as_ref().filter(|b| b.commit != base_commit) {
        return Err(fail(
            FailureKind::Setup,
            FailureClass::Permanent,
            format!(
                "the base bundle holds {base_commit}, not the dispatched base {}",
                base.commit
            ),
        ));
    }
    let config_fingerprint = git::config_fingerprint(repo)
        .map_err(|e| infrastructure(format!("cannot read .git/config: {e}")))?;
    journal.log(format!("cloned {} at {base_commit}", config.base_branch));
    Ok(Checkout {
        base_commit,
        config_fingerprint,
    })
}

/// Downloads the base bundle with the attempt's token and clones it: no forge credential is
/// used, and `origin` names the repository without one.
async fn clone_bundle(
    config: &WorkerConfig,
    control_plane: &dyn ControlPlane,
    git: &Git,
    base: &BaseBundle,
    repo: &Path,
) -> Result<Result<(), git::GitError>, Failure> {
    let bundle = control_plane
        .get_artifact(&base.bundle_sha256)
        .await
        .map_err(|e| {
            fail(
                FailureKind::Setup,
                class(e.transient),
                format!(
                    "cannot download the base bundle {}: {e}",
                    base.bundle_sha256
                ),
            )
        })?;
    let file = repo.with_file_name("base.bundle");
    std::fs::write(&file, &bundle)
        .map_err(|e| infrastructure(format!("cannot write {}: {e}", file.display())))?;
    Ok(git
        .clone_bundle(&file, &config.base_branch, repo, &config.repo_url)
        .await)
}

/// Step 6: everything the attempt changed, staged, must lie within `allowed_paths`; commits
/// made in the worktree are undone first (their changes kept) and `.git/config` must be as
/// cloned. Records the diff artifact.
async fn check_final_tree(
    git: &Git,
    repo: &Path,
    checkout: &Checkout,
    task: &BacklogTask,
    journal: &mut Journal,
) -> Result<(), Failure> {
    let head = git.rev_parse(repo, "HEAD").await.map_err(infrastructure)?;
    if head != checkout.base_commit {
        journal.log(format!(
            "HEAD moved to {head} during the attempt; undoing those commits, keeping their changes"
        ));
        git.reset_soft(repo, &checkout.base_commit)
            .await
            .map_err(infrastructure)?;
    }
    if git::config_fingerprint(repo).ok() != Some(checkout.config_fingerprint) {
        return Err(fail(
            FailureKind::PathViolation,
            FailureClass::Permanent,
            ".git/config was changed during the attempt; nothing is committed or pushed",
        ));
    }
    let status = git
        .stage_all_and_status(repo)
        .await
        .map_err(infrastructure)?;
    let changes = scope::parse_status(&status).map_err(infrastructure)?;
    if changes.is_empty() {
        return Err(fail(
            FailureKind::NoChanges,
            FailureClass::Permanent,
            "the model changed nothing",
        ));
    }
    let violations = scope::violations(&changes, &task.spec.allowed_paths);
    if !violations.is_empty() {
        let shown: Vec<&str> = violations.iter().take(5).map(String::as_str).collect();
        let more = match violations.len() - shown.len() {
            0 => String::new(),
            n => format!("; and {n} more"),
        };
        return Err(fail(
            FailureKind::PathViolation,
            FailureClass::Permanent,
            format!(
                "{}{more}; nothing was committed or pushed",
                shown.join("; ")
            ),
        ));
    }
    journal.log(format!(
        "{} changed path(s), all within allowed_paths",
        changes.len()
    ));
    match git.staged_diff(repo).await {
        Ok(diff) => {
            journal.artifact("diff", "changes.diff", &diff);
        }
        Err(e) => journal.log(format!("no diff artifact: {e}")),
    }
    Ok(())
}

/// Step 7: commits the staged change as the configured identity to the attempt's branch and
/// pushes it; returns the branch and the commit.
async fn commit_and_push(
    config: &WorkerConfig,
    git: &Git,
    repo: &Path,
    task: &BacklogTask,
    journal: &mut Journal,
) -> Result<(String, String), Failure> {
    let branch = config.branch();
    let message = format!(
        "Leviathan: {}\n\nTask-ID: {}\nAttempt-ID: {}\n",
        task.spec.title, task.id, config.attempt_id
    );
    let push_failure =
        |e: git::GitError| fail(FailureKind::Push, class(!e.auth_failed), e.to_string());
    let commit_sha = git
        .commit(repo, &branch, &message)
        .await
        .map_err(push_failure)?;
    git.push(repo, &config.repo_url, &branch)
        .await
        .map_err(push_failure)?;
    journal.event(&CommitCreated {
        attempt_id: config.attempt_id.clone(),
        commit_sha: commit_sha.clone(),
        branch: branch.clone(),
        message: Some(message.trim_end().to_owned()),
    });
    journal.log(format!("pushed {commit_sha} to {branch}"));
    Ok((branch, commit_sha))
}

/// Step 8: reuses the branch's open pull request or opens one.
async fn open_pr(
    config: &WorkerConfig,
    forge: &dyn Forge,
    task: &BacklogTask,
    branch: &str,
    journal: &mut Journal,
) -> Result<PullRequest, Failure> {
    let spec = PullRequestSpec {
        head: branch.to_owned(),
        base: config.base_branch.clone(),
        title: forge::pull_request_title(&task.spec),
        body: forge::pull_request_body(
            &task.id,
            &config.attempt_id,
            config.attempt_number,
            &task.spec,
        ),
        draft: config.draft_pull_requests,
    };
    let pr = open_pull_request(forge, &spec).await.map_err(|e| {
        fail(
            FailureKind::PullRequest,
            class(e.is_transient()),
            e.to_string(),
        )
    })?;
    journal.event(&PrCreated {
        attempt_id: config.attempt_id.clone(),
        pr_number: i64::try_from(pr.number).unwrap_or(i64::MAX),
        pr_url: pr.url.clone(),
        title: Some(spec.title),
        branch: Some(branch.to_owned()),
        reused: pr.reused,
    });
    journal.log(format!(
        "{} pull request #{} {}",
        if pr.reused { "reused open" } else { "opened" },
        pr.number,
        pr.url
    ));
    Ok(pr)
}

/// The task for a `command` model, as `LEVIATHAN_TASK_*` variables.
fn task_env(config: &WorkerConfig, task: &BacklogTask, round: u32) -> BTreeMap<String, String> {
    let spec = &task.spec;
    BTreeMap::from([
        ("LEVIATHAN_TASK_ID".to_owned(), task.id.to_string()),
        ("LEVIATHAN_TASK_TITLE".to_owned(), spec.title.clone()),
        ("LEVIATHAN_TASK_SCOPE".to_owned(), spec.scope.clone()),
        (
            "LEVIATHAN_TASK_DESCRIPTION".to_owned(),
            spec.description.clone().unwrap_or_default(),
        ),
        (
            "LEVIATHAN_TASK_ALLOWED_PATHS".to_owned(),
            spec.allowed_paths
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (
            "LEVIATHAN_TASK_ACCEPTANCE_CRITERIA".to_owned(),
            spec.acceptance_criteria.join("\n"),
        ),
        (
            "LEVIATHAN_ATTEMPT_ID".to_owned(),
            config.attempt_id.to_string(),
        ),
        ("LEVIATHAN_REPAIR_ROUND".to_owned(), round.to_string()),
    ])
}

/// Model calls and test runs until the tests pass (or there is no test command), the repair
/// rounds are used up, or the budget is spent.
async fn generate_and_test(
    config: &WorkerConfig,
    journal: &mut Journal,
    model: &dyn CodeModel,
    task: &BacklogTask,
    repo: &Path,
    untrusted: &Untrusted,
) -> Result<(), Failure> {
    let test_command = task
        .spec
        .test_command
        .clone()
        .or_else(|| config.test_command.clone());
    let mut progress = Progress::default();
    loop {
        progress.check_budget(config.budget)?;
        let completion = call_model(config, journal, model, task, repo, &mut progress).await?;
        if model.output_style() == OutputStyle::Envelope
            && !write_answer(journal, task, repo, &completion.text, &mut progress)?
        {
            continue;
        }
        let Some(command) = &test_command else {
            journal.log("no test command (task or LEVIATHAN_TEST_COMMAND): tests skipped");
            return Ok(());
        };
        let run = run_tests(config, journal, command, repo, untrusted, progress.round).await;
        if run.passed {
            return Ok(());
        }
        if progress.round >= config.repair_rounds {
            return Err(fail(
                FailureKind::TestsFailed,
                FailureClass::Transient,
                format!(
                    "tests failed after {} repair round(s) ({}): {}",
                    progress.round,
                    run.outcome,
                    run.last_line()
                ),
            ));
        }
        progress.round += 1;
        progress.feedback = Some(Feedback::TestsFailed {
            command: command.clone(),
            output: run.output,
        });
    }
}

/// How far the generate-and-test loop has come.
#[derive(Debug, Default)]
struct Progress {
    /// The repair round (0: the first try).
    round: u32,
    /// Model calls made, including unusable answers.
    calls: u32,
    /// Input plus output tokens spent.
    tokens: u64,
    /// Unusable answers in a row.
    invalid: u32,
    /// What the next prompt tells the model about the previous answer.
    feedback: Option<Feedback>,
}

impl Progress {
    /// Fails the attempt when no model call may start any more, saying what was left undone.
    fn check_budget(&self, budget: Budget) -> Result<(), Failure> {
        let Self {
            round,
            calls,
            tokens,
            ..
        } = self;
        if *calls < budget.max_model_calls && *tokens < budget.max_tokens {
            return Ok(());
        }
        let spent = format!(
            "budget spent ({calls} of {} model calls, {tokens} of {} tokens)",
            budget.max_model_calls, budget.max_tokens
        );
        Err(match &self.feedback {
            Some(Feedback::TestsFailed { output, .. }) => fail(
                FailureKind::TestsFailed,
                FailureClass::Transient,
                format!(
                    "tests still failing after {round} repair round(s), {spent}: {}",
                    test_runner::last_line(output)
                ),
            ),
            Some(Feedback::InvalidOutput(e)) => fail(
                FailureKind::Model,
                FailureClass::Transient,
                format!("{spent}; the last answer was unusable: {e}"),
            ),
            None => fail(FailureKind::Model, FailureClass::Permanent, spent),
        })
    }
}

/// One model call: prompt and answer as artifacts, the log. The gateway records the call
/// (`model.call_completed`, from the upstream's own usage), never the worker.
async fn call_model(
    config: &WorkerConfig,
    journal: &mut Journal,
    model: &dyn CodeModel,
    task: &BacklogTask,
    repo: &Path,
    progress: &mut Progress,
) -> Result<Completion, Failure> {
    progress.calls += 1;
    let (round, calls) = (progress.round, progress.calls);
    let prompt = prompt::build(
        &task.id,
        &task.spec,
        repo,
        progress.feedback.as_ref(),
        model.output_style(),
    );
    let env = task_env(config, task, round);
    journal.log(format!(
        "model call {calls} (round {round}) to {} {}",
        model.provider(),
        model.model()
    ));
    let completion = model
        .complete(&ModelRequest {
            prompt: &prompt,
            worktree: repo,
            task_env: &env,
        })
        .await
        .map_err(|e| {
            let kind = match e {
                ModelError::BudgetExhausted { .. } => FailureKind::Budget,
                _ => FailureKind::Model,
            };
            fail(kind, class(e.is_transient()), e.to_string())
        })?;
    progress.tokens = progress
        .tokens
        .saturating_add(completion.tokens_in + completion.tokens_out);
    journal.artifact(
        "model_prompt",
        &format!("prompt-r{round}-c{calls}.txt"),
        &prompt,
    );
    journal.artifact(
        "model_output",
        &format!("response-r{round}-c{calls}.txt"),
        &completion.text,
    );
    journal.log(format!(
        "model answered: {} tokens in, {} out{}",
        completion.tokens_in,
        completion.tokens_out,
        if completion.truncated {
            " (stopped at the output token limit)"
        } else {
            ""
        }
    ));
    Ok(completion)
}

/// Writes the files of an envelope answer into the worktree. `false` when the answer is
/// unusable and the model is asked again; too many unusable answers in a row fail the attempt.
fn write_answer(
    journal: &mut Journal,
    task: &BacklogTask,
    repo: &Path,
    answer: &str,
    progress: &mut Progress,
) -> Result<bool, Failure> {
    let parsed = envelope::parse(answer).and_then(|parsed| {
        envelope::check(&parsed.files, &task.spec.allowed_paths).map(|()| parsed)
    });
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            progress.invalid += 1;
            let invalid = progress.invalid;
            journal.log(format!("unusable answer ({invalid} in a row): {e}"));
            if invalid >= MAX_INVALID_ANSWERS {
                return Err(fail(
                    FailureKind::Model,
                    FailureClass::Transient,
                    format!("{invalid} unusable model answers in a row; the last: {e}"),
                ));
            }
            progress.feedback = Some(Feedback::InvalidOutput(e.to_string()));
            return Ok(false);
        }
    };
    progress.invalid = 0;
    for note in &parsed.notes {
        journal.log(format!("answer repaired: {note}"));
    }
    let written = files::write_all(repo, &parsed.files).map_err(|e| {
        fail(
            FailureKind::Model,
            FailureClass::Permanent,
            format!("cannot write the model's files: {e}"),
        )
    })?;
    journal.log(format!("wrote {}", written.join(", ")));
    Ok(true)
}

/// One test run, recorded: its output as an artifact, `tests.passed` or `tests.failed`, the log.
async fn run_tests(
    config: &WorkerConfig,
    journal: &mut Journal,
    command: &str,
    repo: &Path,
    untrusted: &Untrusted,
    round: u32,
) -> TestRun {
    journal.log(format!("running tests: {command}"));
    let run = test_runner::run(
        command,
        repo,
        untrusted,
        config.test_timeout,
        journal.redactor(),
    )
    .await;
    let output_sha256 =
        journal.artifact("test_output", &format!("tests-r{round}.txt"), &run.output);
    let report = TestRunReport {
        attempt_id: config.attempt_id.clone(),
        round,
        command: command.to_owned(),
        exit_code: run.exit_code,
        output_sha256: Some(output_sha256),
        duration_ms: Some(u64::try_from(run.duration.as_millis()).unwrap_or(u64::MAX)),
    };
    if run.passed {
        journal.event(&TestsPassed(report));
        journal.log(format!("tests passed in round {round}"));
    } else {
        journal.event(&TestsFailed(report));
        journal.log(format!(
            "tests failed in round {round} ({}): {}",
            run.outcome,
            run.last_line()
        ));
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_one_bounded_line() {
        assert_eq!(one_line("a\n\n  b  \nc"), "a | b | c");
        let long = "x".repeat(SUMMARY_CHARS + 10);
        assert_eq!(one_line(&long).chars().count(), SUMMARY_CHARS + 1);
    }
}
