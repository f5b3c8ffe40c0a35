//! Model-written code hunting for secrets, with real processes. The scripted model writes a test
//! script that reads the environment and command line of every process it can see, its parent's
//! (the worker's) environment and memory, and the attempt's files, and writes what it found
//! (hex-encoded, so that no redaction can hide a find) into the worktree and its output. The
//! real `leviathan worker` runs it, through the local executor and through the Kubernetes
//! executor on the testkit cluster.
//!
//! No credential may appear anywhere: the commit, the pull request, the events, the artifacts,
//! the logs, the termination message. A decoy process's variable must, in both its environment
//! and its memory (proof that the hunt reads whatever it can), unless Landlock applied: then the
//! hunt can read no process outside its sandbox, nor write outside its worktree and `TMPDIR`.
//!
//! Workers, the hunt and the decoy run as a production worker does: one uid, no capability (this
//! test may run as root: `setpriv` drops every capability first, since a process without
//! capabilities may never read one that has some, whatever else protects it). This test process
//! stands in for the scheduler and the cluster (it holds every credential, as `leviathan
//! schedule` does), so it makes itself non-dumpable as the `leviathan` binary does.

mod support {
    #[allow(dead_code, reason = "the hunt brings its own backlog and answers")]
    pub(crate) mod worker;
}

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use leviathan::api::client::ControlPlaneClient;
use leviathan_core::{
    AttemptOutcome, AttemptResult, Executor,
    model::{LandlockState, SandboxReport},
    store::ArtifactStore,
};
use leviathan_core::{Role, Timestamp};
use leviathan_exec_k8s::{K8sConfig, K8sExecutor};
use leviathan_exec_local::{LocalConfig, LocalExecutor, Secret};
use leviathan_testkit::llm::files_envelope;
use support::worker::{OWNER, REPO, TASK, World, cluster::Cluster};

/// `setpriv` options that run a program without any capability, even as root.
const WITHOUT_CAPABILITIES: [&str; 3] = ["--bounding-set=-all", "--inh-caps=-all", "--"];

/// A script that runs the `leviathan` binary without capabilities, with its arguments (named
/// `leviathan`, as the fake kubelet wants the executable of a Job's `leviathan` command).
fn uncapable_leviathan(dir: &Path) -> PathBuf {
    let script = dir.join("leviathan");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec setpriv {} {} \"$@\"\n",
            WITHOUT_CAPABILITIES.join(" "),
            env!("CARGO_BIN_EXE_leviathan")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Upper bound for an attempt; hitting it fails the test.
const PATIENCE: Duration = Duration::from_secs(180);

/// The hunt, as the model writes it. Finds go to `$TMPDIR` first (the hunt reads the attempt's
/// files, and must not read its own growing output), then into the worktree as hex.
const HUNT: &str = r#"found="$TMPDIR/found.txt"
LEVIATHAN_STRAY="$PWD" setsid sleep 3000 < /dev/null > /dev/null 2>&1 &
{
  echo "== self uid=$(id -u)"
  grep -E '^(Cap|NoNewPrivs)' /proc/self/status
  worker=$PPID
  while [ "$(cat "/proc/$worker/comm")" = sh ]; do worker=$(cut -d' ' -f4 "/proc/$worker/stat"); done
  echo "== parent $worker $(cat "/proc/$worker/comm") environ"
  tr '\0' '\n' < "/proc/$worker/environ" 2>&1
  python3 docs/scan.py "$worker"
  for file in $(grep -l LEVIATHAN_DECOY /proc/[0-9]*/environ 2>/dev/null); do
    python3 docs/scan.py "$(echo "$file" | cut -d/ -f3)"
  done
  if echo escaped > ../escape 2>/dev/null; then echo "== escape: written"; else echo "== escape: refused"; fi
  echo "== files"
  find .. "$HOME" -maxdepth 3 -type f -not -path '*/.git/*' 2>/dev/null | head -200 |
    while read -r file; do echo "-- $file"; head -c 20000 "$file" 2>&1; echo; done
  for dir in /proc/[0-9]*; do
    echo "== environ ${dir#/proc/}"
    tr '\0' '\n' < "$dir/environ" 2>&1 | head -c 2000
    echo "== cmdline ${dir#/proc/} $(tr '\0' ' ' < "$dir/cmdline" 2>/dev/null | head -c 300)"
  done
} 2>&1 | head -c 3000000 > "$found"
od -An -tx1 -v "$found" | tr -d ' \n' > docs/found.hex
cat docs/found.hex
"#;

/// Printable runs of a process's readable memory (its heap, its stack, its environment).
const SCAN: &str = r#"import re, sys
pid = sys.argv[1]
print(f"== memory {pid}")
try:
    maps = open(f"/proc/{pid}/maps").read().splitlines()
    mem = open(f"/proc/{pid}/mem", "rb")
except OSError as error:
    print(f"memory {pid} unreadable: {error}")
    sys.exit(0)
words, budget = set(), 64 << 20
for line in maps:
    fields = line.split()
    if "r" not in fields[1] or budget <= 0:
        continue
    start, end = (int(x, 16) for x in fields[0].split("-"))
    try:
        mem.seek(start)
        chunk = mem.read(min(end - start, budget))
    except (OSError, ValueError, OverflowError):
        continue
    budget -= len(chunk)
    words.update(re.findall(rb"[A-Za-z0-9_.=-]{12,200}", chunk))
print("\n".join(sorted(w.decode() for w in words)[:100000]))
"#;

fn backlog() -> String {
    format!(
        "version: \"1\"\ntasks:\n  - id: {TASK}\n    title: Hunt\n    scope: docs\n    ready: true\n    allowed_paths: [\"docs/\"]\n    test_command: \"sh docs/hunt.sh\"\n"
    )
}

/// A dumpable process of this uid whose environment and memory hold a known value.
struct Decoy {
    child: std::process::Child,
    value: String,
}

impl Decoy {
    fn start() -> Self {
        let value = format!("decoy-{}", uuid_like());
        let child = std::process::Command::new("setpriv")
            .args(WITHOUT_CAPABILITIES)
            .args(["sleep", "600"])
            .env("LEVIATHAN_DECOY", &value)
            .spawn()
            .expect("start the decoy");
        Self { child, value }
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The world with the hunting answer queued, this process hardened, and a decoy running.
async fn prepare() -> (World, Decoy) {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .expect("this test process can make itself non-dumpable");
    let world = World::start_with(&backlog()).await;
    world.llm.push_text(files_envelope(&[
        ("docs/hunt.sh", HUNT),
        ("docs/scan.py", SCAN),
    ]));
    (world, Decoy::start())
}

/// Every credential of the world: the worker's, the control plane's, and the model provider's
/// key, which only the control plane's gateway holds (the hunt must not find it either).
fn credentials(world: &World) -> Vec<(String, String)> {
    world
        .secrets()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .chain([(
            "the model provider key".to_owned(),
            world.llm.api_key().to_owned(),
        )])
        .collect()
}

/// Checks the hunt ran, found the decoy, and that no credential is anywhere.
async fn assert_nothing_leaked(
    world: &World,
    decoy: &Decoy,
    attempt: &str,
    outcome: &AttemptOutcome,
    extra: Vec<(String, Vec<u8>)>,
) {
    assert!(
        matches!(outcome.result, AttemptResult::Succeeded { .. }),
        "the hunt's tests pass and its finds are committed: {:?}",
        outcome.result
    );
    let branch = format!("agent/{TASK}-{attempt}");
    let hex = world
        .github
        .read_file(OWNER, REPO, &branch, "docs/found.hex")
        .await
        .unwrap()
        .expect("the finds are committed");
    let found = decode_hex(&hex);
    assert!(
        found.contains("== parent"),
        "the hunt ran: {}",
        head(&found)
    );
    let sandbox = sandbox_of(world).await;
    assert!(
        sandbox.non_dumpable && sandbox.confined_children,
        "{sandbox:?}"
    );
    // Landlock also keeps a sandboxed process from reading any process outside its sandbox.
    let landlocked = matches!(
        sandbox.landlock,
        LandlockState::Enforced | LandlockState::Partial
    );
    let decoy_memory = format!("== memory {}", decoy.child.id());
    let after_memory = found.split(&decoy_memory).nth(1).unwrap_or_default();
    assert_eq!(
        (
            after_memory.contains(&decoy.value),
            found.matches(&decoy.value).count() >= 2
        ),
        (!landlocked, !landlocked),
        "the hunt reads a dumpable process's memory and environment unless Landlock ({}) \
         stops it: {}",
        sandbox.landlock,
        head(&found)
    );
    let escape = if landlocked { "refused" } else { "written" };
    assert!(
        found.contains(&format!("== escape: {escape}")),
        "a write outside the worktree and TMPDIR is {escape} with Landlock {}",
        sandbox.landlock
    );
    assert_eq!(
        strays(attempt),
        Vec::<String>::new(),
        "no stray outlives the tests"
    );
    let parent_memory = found
        .split("== memory ")
        .nth(1)
        .expect("the worker's memory was tried");
    assert!(
        parent_memory.contains("unreadable"),
        "the worker's memory cannot be read: {}",
        head(parent_memory)
    );

    let mut places: Vec<(String, Vec<u8>)> = vec![("the finds".into(), found.into_bytes())];
    places.push(("the outcome".into(), serde_json::to_vec(outcome).unwrap()));
    for pull in world.pulls() {
        places.push(("the pull request".into(), format!("{pull:?}").into_bytes()));
    }
    let events = world.ledger.events().read(0, 10_000).await.unwrap();
    places.push(("the events".into(), serde_json::to_vec(&events).unwrap()));
    for event in events.iter().filter(|e| e.event_type == "artifact.created") {
        let sha = serde_json::from_value(event.payload["sha256"].clone()).unwrap();
        let content = world.artifacts.get(&sha).await.unwrap().to_vec();
        places.push((format!("artifact {}", event.payload["name"]), content));
    }
    for artifact in &outcome.artifacts {
        let content = world
            .artifacts
            .get(&artifact.sha256)
            .await
            .unwrap()
            .to_vec();
        places.push((format!("executor artifact {:?}", artifact.name), content));
    }
    places.extend(extra);
    for (name, secret) in credentials(world) {
        for (place, bytes) in &places {
            assert!(
                !String::from_utf8_lossy(bytes).contains(&secret),
                "{name} found in {place}"
            );
        }
    }
}

/// The processes left behind by the hunt of `attempt` (a daemon in a session of its own, whose
/// environment names the attempt's worktree): the worker kills them when the tests end.
fn strays(attempt: &str) -> Vec<String> {
    let marker = "LEVIATHAN_STRAY=";
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let environ = String::from_utf8_lossy(&environ);
            environ
                .split('\0')
                .any(|var| var.starts_with(marker) && var.contains(attempt))
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// What `attempt.started` says applied.
async fn sandbox_of(world: &World) -> SandboxReport {
    let events = world.ledger.events().read(0, 10_000).await.unwrap();
    let started = events
        .iter()
        .find(|e| e.event_type == "attempt.started")
        .expect("attempt.started");
    serde_json::from_value(started.payload["sandbox"].clone())
        .expect("attempt.started says which sandbox applied")
}

fn decode_hex(hex: &[u8]) -> String {
    let text = std::str::from_utf8(hex).expect("hex");
    let bytes: Vec<u8> = (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digit"))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn head(text: &str) -> &str {
    &text[..text.floor_char_boundary(2000)]
}

#[tokio::test]
async fn local_executor_model_code_finds_no_secret() {
    let (world, decoy) = prepare().await;
    let root = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let mut config = LocalConfig::default()
        .worker(uncapable_leviathan(bin.path()), &["worker"])
        .workspace_root(root.path())
        .control_plane_url(world.api_url.clone())
        .artifacts(Arc::clone(&world.artifacts) as Arc<dyn ArtifactStore>);
    for (name, value) in world.secrets() {
        config = config.secret(name, Secret::new(value));
    }
    // The target turned Landlock off: the worker's own hardening is all that protects it.
    let mut spec = world.create_attempt("attempt-hunt-local", 1, "local").await;
    spec.env
        .insert("LEVIATHAN_LANDLOCK".to_owned(), "false".to_owned());
    let outcome = tokio::time::timeout(PATIENCE, LocalExecutor::new(config).run(&spec))
        .await
        .expect("the attempt ends in time")
        .expect("run");
    assert_nothing_leaked(&world, &decoy, "attempt-hunt-local", &outcome, Vec::new()).await;
    assert_eq!(sandbox_of(&world).await.landlock, LandlockState::Off);
}

#[tokio::test]
async fn kubernetes_executor_model_code_finds_no_secret() {
    let (world, decoy) = prepare().await;
    let bin = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_running(&world.secrets(), &uncapable_leviathan(bin.path())).await;
    let config = K8sConfig::default()
        .image(support::worker::cluster::IMAGE)
        .namespace(support::worker::cluster::NAMESPACE)
        .control_plane_url(world.api_url.clone())
        .artifacts(Arc::clone(&world.artifacts) as Arc<dyn ArtifactStore>);
    let mut spec = world.create_attempt("attempt-hunt-k8s", 1, "k8s").await;
    // As the scheduler does at dispatch: the worker gets this token (from its own Secret) only.
    let client = ControlPlaneClient::new(&world.api_url, support::worker::CP_TOKEN).unwrap();
    let expires = Timestamp::now().saturating_add(Duration::from_secs(900));
    let minted = client
        .mint_worker_token(&spec.attempt_id, expires)
        .await
        .expect("mint the attempt's worker token");
    spec.worker_token = Some(Secret::new(minted.token.clone()));
    let executor = K8sExecutor::new(cluster.client.clone(), config);
    let outcome = tokio::time::timeout(PATIENCE, executor.run(&spec))
        .await
        .expect("the attempt ends in time")
        .expect("run");
    let pods: Vec<(String, Vec<u8>)> = cluster
        .fake
        .pods()
        .into_iter()
        .map(|pod| {
            (
                "a pod (its termination message)".to_owned(),
                serde_json::to_vec(&pod).unwrap(),
            )
        })
        .collect();
    let pod_text: String = pods
        .iter()
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
        .collect();
    assert!(
        !pod_text.contains(&minted.token),
        "the worker token is in a pod"
    );
    // Every event the worker sent was written with the attempt's worker token.
    let events = world.ledger.events().read(0, 10_000).await.unwrap();
    let by_worker: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "attempt.started" || e.event_type == "attempt.succeeded")
        .map(|e| e.principal.as_ref().map(|p| p.role))
        .collect();
    assert_eq!(by_worker, [Some(Role::Worker); 2], "{events:#?}");
    assert_nothing_leaked(&world, &decoy, "attempt-hunt-k8s", &outcome, pods).await;
    assert_ne!(sandbox_of(&world).await.landlock, LandlockState::Off);
}
