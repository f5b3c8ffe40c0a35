//! The real `leviathan worker` binary: a configuration error exits 2 with every problem listed
//! and no side effect; a full attempt with the credentials in the process environment delivers a
//! pull request without a credential reaching any output.

mod support {
    #[allow(
        dead_code,
        reason = "this test's worker runs a command model: no use of the scripted one"
    )]
    pub(crate) mod worker;
}

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Output,
};

use leviathan_core::{
    AttemptResult,
    executor::protocol,
    model::{AttemptStatus, FailureClass, FailureKind},
    store::ArtifactStore,
};
use support::worker::{BAD_GUIDE, GOOD_GUIDE, World};

/// The binary with exactly `env` (plus `PATH`), nothing inherited.
async fn worker(env: &BTreeMap<String, String>) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .await
        .expect("run leviathan worker")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => out.push(entry.path()),
                _ => {}
            }
        }
    }
    out
}

#[tokio::test]
async fn a_bad_environment_exits_2_listing_every_problem_and_does_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let workspace = scratch.path().join("workspace");
    let termination = scratch.path().join("termination-log");
    // A control plane that must never be contacted.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let env = BTreeMap::from(
        [
            (
                protocol::TARGET_REPO_URL,
                "https://github.com/acme/widgets.git".to_owned(),
            ),
            (protocol::TASK_ID, "not a valid id".to_owned()),
            (protocol::ATTEMPT_ID, "attempt-1".to_owned()),
            (
                protocol::CONTROL_PLANE_URL,
                format!("http://{}", listener.local_addr().unwrap()),
            ),
            (
                protocol::CONTROL_PLANE_TOKEN,
                "cp-token-0123456789abcdef".to_owned(),
            ),
            ("LEVIATHAN_REPAIR_ROUNDS", "lots".to_owned()),
            (
                protocol::LEVIATHAN_WORKSPACE_DIR,
                workspace.display().to_string(),
            ),
            (
                protocol::LEVIATHAN_TERMINATION_MESSAGE_PATH,
                termination.display().to_string(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let out = worker(&env).await;

    assert_eq!(out.status.code(), Some(protocol::EXIT_CONFIGURATION));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: invalid worker configuration (4 problems):"),
        "{stderr}"
    );
    for variable in [
        "TARGET_NAME: missing",
        "TASK_ID: invalid task id",
        "GITHUB_TOKEN: missing",
        "LEVIATHAN_REPAIR_ROUNDS: `lots` is not an integer",
    ] {
        assert!(stderr.contains(variable), "{variable} in {stderr}");
    }
    let result = protocol::parse_worker_result(&String::from_utf8_lossy(&out.stdout));
    let Some(AttemptResult::Failed(failure)) = result else {
        panic!("expected a failed result line: {result:?}");
    };
    assert_eq!(
        (failure.kind, failure.class),
        (FailureKind::Setup, FailureClass::Permanent)
    );
    assert!(!workspace.exists(), "no workspace was created");
    assert!(!termination.exists(), "no file was written");
    assert!(
        listener.accept().is_err(),
        "the control plane was not contacted"
    );
}

#[tokio::test]
async fn the_binary_delivers_a_pull_request_and_leaks_no_credential() {
    let world = World::start().await;
    let spec = world.create_attempt("attempt-cli-1", 1, "cli").await;
    let scratch = tempfile::tempdir().unwrap();
    let workspace = scratch.path().join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let termination = scratch.path().join("termination-log");
    // A coding agent that prints its whole environment and git's configuration, then edits:
    // a guide the tests reject first, the right one in the repair round.
    let agent = scratch.path().join("agent.sh");
    std::fs::write(
        &agent,
        format!(
            "cat > /dev/null\nenv\ngit config --list --show-origin\nmkdir -p docs\n\
             if [ \"$LEVIATHAN_REPAIR_ROUND\" = 0 ]; then\ncat > docs/GUIDE.md <<'GUIDE'\n{BAD_GUIDE}GUIDE\n\
             else\ncat > docs/GUIDE.md <<'GUIDE'\n{GOOD_GUIDE}GUIDE\nfi\n"
        ),
    )
    .unwrap();

    let mut env: BTreeMap<String, String> = protocol::attempt_variables(&spec)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.extend(spec.env.clone());
    for (name, value) in world.secrets() {
        env.insert(name.to_owned(), value);
    }
    for (name, value) in [
        (protocol::CONTROL_PLANE_URL, world.api_url.clone()),
        (
            protocol::LEVIATHAN_WORKSPACE_DIR,
            workspace.display().to_string(),
        ),
        (
            protocol::LEVIATHAN_TERMINATION_MESSAGE_PATH,
            termination.display().to_string(),
        ),
        ("HOME", home.display().to_string()),
        ("LEVIATHAN_MODEL_PROVIDER", "command".to_owned()),
        ("LEVIATHAN_MODEL_COMMAND", format!("sh {}", agent.display())),
        ("LEVIATHAN_REPAIR_ROUNDS", "1".to_owned()),
    ] {
        env.insert(name.to_owned(), value);
    }
    let out = worker(&env).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();

    assert_eq!(
        out.status.code(),
        Some(protocol::EXIT_SUCCEEDED),
        "{stderr}"
    );
    let result = protocol::parse_worker_result(&stdout).expect("a result line");
    let AttemptResult::Succeeded { pr_number, .. } = &result else {
        panic!("expected success: {result:?}\n{stderr}");
    };
    assert_eq!(world.pulls()[0].number, *pr_number);
    assert_eq!(
        protocol::parse_worker_result(&std::fs::read_to_string(&termination).unwrap()),
        Some(result.clone())
    );
    assert_eq!(
        world
            .github
            .read_file(
                support::worker::OWNER,
                support::worker::REPO,
                "agent/docs-guide-attempt-cli-1",
                "docs/GUIDE.md"
            )
            .await
            .unwrap()
            .as_deref(),
        Some(GOOD_GUIDE.as_bytes())
    );
    let attempt = world.attempt("attempt-cli-1").await;
    assert_eq!(attempt.status, AttemptStatus::Succeeded);
    // The command model called no model through the gateway, so none is recorded.
    assert_eq!((attempt.model_calls, attempt.test_runs), (0, 2));

    // Everything the worker wrote, stored or sent.
    let mut outputs: Vec<(String, Vec<u8>)> = vec![
        ("stdout".into(), out.stdout.clone()),
        ("stderr".into(), out.stderr.clone()),
        ("termination".into(), std::fs::read(&termination).unwrap()),
    ];
    for file in files_under(&workspace)
        .into_iter()
        .chain(files_under(&home))
    {
        outputs.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    let events = world.ledger.events().read(0, 10_000).await.unwrap();
    outputs.push(("events".into(), serde_json::to_vec(&events).unwrap()));
    let mut transcripts = Vec::new();
    for event in events.iter().filter(|e| e.event_type == "artifact.created") {
        let sha = serde_json::from_value(event.payload["sha256"].clone()).unwrap();
        let content = world.artifacts.get(&sha).await.unwrap().to_vec();
        if event.payload["kind"] == "model_output" {
            transcripts.push(String::from_utf8_lossy(&content).into_owned());
        }
        outputs.push((format!("artifact {}", event.payload["name"]), content));
    }
    assert!(
        outputs
            .iter()
            .any(|(name, _)| name.ends_with(".git/config")),
        "the scan covers .git/config"
    );
    for (name, secret) in world.secrets() {
        for (place, bytes) in &outputs {
            assert!(
                !String::from_utf8_lossy(bytes).contains(&secret),
                "{name} leaked into {place}"
            );
        }
    }
    // The agent's environment had no credential variable at all (not merely redacted values),
    // and git's configuration no credential header.
    assert_eq!(transcripts.len(), 2, "one transcript per agent run");
    for transcript in &transcripts {
        assert!(transcript.contains("PATH="), "{transcript}");
        for name in protocol::SECRET_VARIABLES {
            assert!(
                !transcript.contains(&format!("{name}=")),
                "{name} in {transcript}"
            );
        }
        assert!(
            !transcript.to_ascii_lowercase().contains("extraheader"),
            "{transcript}"
        );
        assert!(!transcript.contains("GIT_CONFIG"), "{transcript}");
    }
}

/// A worker whose stdout reader is gone (a killed scheduler) still exits with the attempt's code:
/// the result line cannot be printed, the termination message file carries it.
#[test]
fn a_closed_stdout_does_not_change_the_exit_code() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run leviathan worker");
    assert_eq!(
        status.code(),
        Some(2),
        "a configuration error exits 2, not a panic's 101"
    );
}
