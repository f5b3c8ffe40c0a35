//! `job_spec` against committed snapshots (`tests/snapshots/*.yaml`). On a mismatch the test
//! prints a line diff; after an intended change, regenerate with
//! `LEVIATHAN_UPDATE_SNAPSHOTS=1 cargo test -p leviathan-exec-k8s --test job_spec` and review
//! the diff in git.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use k8s_openapi::api::batch::v1::Job;
use leviathan_core::AttemptSpec;
use leviathan_exec_k8s::{K8sConfig, job_spec, names};

fn spec(attempt: &str) -> AttemptSpec {
    AttemptSpec {
        attempt_id: attempt.parse().unwrap(),
        attempt_number: 2,
        task_id: "docs-guide".parse().unwrap(),
        target_id: "demo".parse().unwrap(),
        repo_url: "https://github.com/example/demo.git".to_owned(),
        base_branch: "main".to_owned(),
        deadline: Duration::from_secs(900),
        env: BTreeMap::from(
            [
                ("LEVIATHAN_MODEL_PROVIDER", "anthropic"),
                ("LEVIATHAN_TEST_COMMAND", "cargo test --quiet"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        ),
        worker_token: None,
    }
}

fn config() -> K8sConfig {
    K8sConfig::default().claude_model("claude-sonnet-4-5")
}

/// Compares `actual` with the snapshot `name`, or rewrites it when asked to.
fn assert_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("LEVIATHAN_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read snapshot {}: {e}", path.display()));
    if expected != actual {
        panic!(
            "{} differs from the generated Job (- snapshot, + generated):\n{}\n\
             If the change is intended: LEVIATHAN_UPDATE_SNAPSHOTS=1 cargo test -p leviathan-exec-k8s --test job_spec",
            path.display(),
            line_diff(&expected, actual)
        );
    }
}

/// A minimal line diff (longest common subsequence), changed lines with two lines of context.
fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(op, _)| *op != ' ')
    };
    ops.iter()
        .enumerate()
        .filter(|(k, _)| near_change(*k))
        .map(|(_, (op, line))| format!("{op} {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn default_job_matches_the_snapshot() {
    let job = job_spec(&spec("attempt-1a2b3c4d5e6f7a8b"), &config());
    let yaml = serde_yaml_ng::to_string(&job).unwrap();
    assert_snapshot("job_spec.yaml", &yaml);
    // The snapshot is what the API server receives: it reads back as the same Job.
    let parsed: Job = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(parsed, job);
}

#[test]
fn long_and_odd_ids_get_valid_names_and_labels() {
    let id = format!("Attempt_{}", "x".repeat(100));
    let job = job_spec(&spec(&id), &config());
    let name = job.metadata.name.clone().unwrap();
    assert!(names::is_dns_label(&name), "{name}");
    assert_eq!(name.len(), 63);
    for (key, value) in job.metadata.labels.as_ref().unwrap() {
        assert!(names::is_label_value(value), "{key}: {value}");
    }
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()["leviathan.dev/attempt"],
        id,
        "the annotation keeps the exact id"
    );
    let yaml = serde_yaml_ng::to_string(&job).unwrap();
    assert_snapshot("job_spec_long_id.yaml", &yaml);
}

#[test]
fn the_attempts_env_cannot_override_what_the_executor_sets() {
    let mut spec = spec("attempt-1");
    spec.env
        .insert("GITHUB_TOKEN".to_owned(), "smuggled".to_owned());
    spec.env.insert("HOME".to_owned(), "/root".to_owned());
    spec.env.insert(
        "LEVIATHAN_CLAUDE_MODEL".to_owned(),
        "claude-from-spec".to_owned(),
    );
    let job = job_spec(&spec, &config());
    let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
    let env = container.env.as_ref().unwrap();
    let values = |name: &str| -> Vec<Option<String>> {
        env.iter()
            .filter(|e| e.name == name)
            .map(|e| e.value.clone())
            .collect()
    };
    assert_eq!(values("GITHUB_TOKEN"), [None], "only the secretKeyRef");
    assert_eq!(values("HOME"), [Some("/tmp".to_owned())]);
    assert_eq!(
        values("LEVIATHAN_CLAUDE_MODEL"),
        [Some("claude-from-spec".to_owned())],
        "the attempt's model wins over the configured one"
    );
    let mut names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "no variable twice");
}
