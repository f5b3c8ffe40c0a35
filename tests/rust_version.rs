//! Every crate's `rust-version` is true: no lower than what any crate it builds with declares
//! (its dependencies, build dependencies and dev-dependencies, and theirs, as `Cargo.lock` resolves
//! them for this host; other platforms' crates are not downloaded on a CI machine). A dependency update that needs a newer Rust fails here, not in a
//! user's build. That the crates' own code calls no standard library API newer than their
//! `rust-version` is clippy's `incompatible_msrv` lint, which CI runs with `-D warnings`.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use serde_json::Value;

/// The platform the tests run on, as rustc names it.
fn host() -> String {
    let out = Command::new("rustc")
        .args(["--print", "host-tuple"])
        .output()
        .expect("run rustc --print host-tuple");
    assert!(out.status.success(), "rustc --print host-tuple failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

/// `cargo metadata` of the workspace for this host, resolved from `Cargo.lock`.
fn metadata() -> Value {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .arg("--filter-platform")
        .arg(host())
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// `"1.94"` as `[1, 94, 0]`, so that versions compare as numbers.
fn version(text: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text
        .split('.')
        .map(|part| {
            part.parse()
                .unwrap_or_else(|_| panic!("rust-version `{text}`"))
        })
        .collect();
    parts.resize(3, 0);
    parts
}

fn strings(value: &Value) -> impl Iterator<Item = &str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Each package's dependencies by id, split into those it builds with (normal and build
/// dependencies) and its dev-dependencies.
fn dependencies(metadata: &Value) -> BTreeMap<&str, (Vec<&str>, Vec<&str>)> {
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes");
    nodes
        .iter()
        .map(|node| {
            let (mut built, mut dev) = (Vec::new(), Vec::new());
            for dep in node["deps"].as_array().expect("deps") {
                let id = dep["pkg"].as_str().expect("dep id");
                let kinds = dep["dep_kinds"].as_array().expect("dep kinds");
                if kinds.iter().any(|k| k["kind"].as_str() != Some("dev")) {
                    built.push(id);
                } else {
                    dev.push(id);
                }
            }
            (node["id"].as_str().expect("node id"), (built, dev))
        })
        .collect()
}

#[test]
fn every_crates_rust_version_covers_what_it_builds_with() {
    let metadata = metadata();
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("package id"), p))
        .collect();
    let dependencies = dependencies(&metadata);
    let members: Vec<&str> = strings(&metadata["workspace_members"]).collect();
    assert!(members.len() > 1, "the workspace's crates: {members:?}");
    for member in members {
        let name = packages[member]["name"].as_str().expect("name");
        let declared = packages[member]["rust_version"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} declares no rust-version"));
        let (built, dev) = &dependencies[member];
        let mut todo: Vec<&str> = built.iter().chain(dev).copied().collect();
        let mut reached = BTreeSet::new();
        while let Some(id) = todo.pop() {
            if reached.insert(id) {
                todo.extend(&dependencies[id].0);
            }
        }
        let newer: Vec<String> = reached
            .iter()
            .filter_map(|id| {
                let package = packages[id];
                let needs = package["rust_version"].as_str()?;
                let name = package["name"].as_str().unwrap_or_default();
                let at = package["version"].as_str().unwrap_or_default();
                (version(needs) > version(declared)).then(|| format!("{name} {at} needs {needs}"))
            })
            .collect();
        assert!(
            newer.is_empty(),
            "{name} declares rust-version {declared}, but it builds with crates that need more: {}",
            newer.join(", ")
        );
    }
}
