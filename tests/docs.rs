//! The documentation is held to the code, so that it cannot drift:
//! - `docs/configuration.md` carries the worker's and the local executor's variable tables as the
//!   code renders them, every Kubernetes executor variable with its default and every key of its
//!   Secret, the defaults of the target configuration, and YAML examples that parse;
//! - every long flag of every `leviathan` command (from the real binary's `--help`) is in that
//!   command's section, and the section's flag tables name no other;
//! - every variable the code reads is in the configuration reference, and every `LEVIATHAN_*` or
//!   `GITHUB_TOKEN` name the README or a doc mentions is one the code reads;
//! - the README's two commands are the quickstart and the test command `.ci/run` extracts;
//! - every `leviathan …` command the docs show exists, and every relative link resolves.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use leviathan_core::{
    backlog::parse_backlog,
    target::{Policy, parse_target_config},
};

const CONFIGURATION: &str = "docs/configuration.md";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// README.md and every page under docs/.
fn documents() -> Vec<(String, String)> {
    let mut paths = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("docs/ entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths.into_iter().map(|p| (p.clone(), read(&p))).collect()
}

/// `leviathan <path> --help`.
fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(path)
        .arg("--help")
        .output()
        .expect("run leviathan --help");
    assert!(
        out.status.success(),
        "leviathan {} --help: {}",
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// The names listed under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command of the binary by path (`[]`, `["serve"]`, `["events", "verify"]`, …), with its
/// help.
fn command_tree() -> BTreeMap<Vec<String>, String> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let text = help(&path);
        for sub in subcommands(&text) {
            let mut child = path.clone();
            child.push(sub);
            pending.push(child);
        }
        tree.insert(path, text);
    }
    tree
}

/// The long flags an option line of a help text defines (`--help` and `--version` left out).
fn long_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| {
            line.split([' ', ',', '='])
                .find(|word| word.starts_with("--") && word.len() > 2)
        })
        .filter(|flag| !matches!(*flag, "--help" | "--version"))
        .map(str::to_owned)
        .collect()
}

/// `LEVIATHAN_*` and `GITHUB_TOKEN` names in `text` (prefixes such as `LEVIATHAN_TASK_*` left
/// out).
fn variable_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let is_name_byte = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_name_byte(bytes[i]) && (i == 0 || !is_name_byte(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_name_byte(bytes[i]) {
                i += 1;
            }
            let word = &text[start..i];
            if (word.starts_with("LEVIATHAN_") || word == "GITHUB_TOKEN") && !word.ends_with('_') {
                names.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every variable the code reads: every command's help (which lists the CLI's, the scheduler's
/// and the executors' variables), the worker's, the executors' and the kind bootstrap script's.
fn variables_read_by_the_code(tree: &BTreeMap<Vec<String>, String>) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = tree.values().flat_map(|h| variable_names(h)).collect();
    names.extend(
        leviathan_core::executor::protocol::VARIABLES
            .iter()
            .map(|v| v.name.to_owned()),
    );
    names.extend(
        leviathan_exec_local::VARIABLES
            .iter()
            .map(|v| v.name.to_owned()),
    );
    names.extend(
        leviathan_exec_k8s::VARIABLES
            .iter()
            .map(|(name, _)| (*name).to_owned()),
    );
    names.extend(variable_names(&read("ops/k8s/kind-bootstrap.sh")));
    names
        .into_iter()
        .filter(|n| n.starts_with("LEVIATHAN_") || n == "GITHUB_TOKEN")
        .collect()
}

/// The text of the section whose heading is `heading` (up to the next heading).
fn section<'a>(doc: &'a str, heading: &str) -> Option<&'a str> {
    let start = doc.lines().position(|line| line == heading)?;
    let lines: Vec<&str> = doc.lines().collect();
    let end = lines[start + 1..]
        .iter()
        .position(|line| line.starts_with('#'))
        .map_or(lines.len(), |n| start + 1 + n);
    let first = lines[start + 1..end].first()?;
    let last = lines[start + 1..end].last()?;
    let from = first.as_ptr() as usize - doc.as_ptr() as usize;
    let to = last.as_ptr() as usize - doc.as_ptr() as usize + last.len();
    Some(&doc[from..to])
}

/// A table cell as markdown writes a default: `—` when empty, as is when it is already code or
/// prose, else in backticks.
fn default_cell(default: &str) -> String {
    if default.is_empty() {
        "—".to_owned()
    } else if default.starts_with('`') || default.contains(' ') {
        default.to_owned()
    } else {
        format!("`{default}`")
    }
}

#[test]
fn the_worker_table_is_the_one_the_code_renders() {
    let table = leviathan_core::executor::protocol::variables_table();
    assert!(
        read(CONFIGURATION).contains(&table),
        "{CONFIGURATION} must carry the worker's table verbatim:\n{table}"
    );
}

#[test]
fn the_local_executor_table_is_the_one_the_code_defines() {
    let mut table = String::from("| Variable | Default | Description |\n|---|---|---|\n");
    for v in leviathan_exec_local::VARIABLES {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            v.name,
            default_cell(v.default),
            v.description
        ));
    }
    assert!(
        read(CONFIGURATION).contains(&table),
        "{CONFIGURATION} must carry the local executor's table verbatim:\n{table}"
    );
}

#[test]
fn every_kubernetes_variable_and_secret_key_is_documented() {
    let doc = read(CONFIGURATION);
    for (name, default) in leviathan_exec_k8s::VARIABLES {
        let row = format!("| `{name}` | {} |", default_cell(default));
        assert!(doc.contains(&row), "{CONFIGURATION} lacks the row `{row}`");
    }
    for secret in leviathan_exec_k8s::default_secret_env() {
        let row = format!("| `{}` | `{}` |", secret.key, secret.variable);
        assert!(doc.contains(&row), "{CONFIGURATION} lacks the row `{row}`");
        let template = read("ops/k8s/base/secret.template.yaml");
        assert!(
            template.contains(&format!("  {}: ", secret.key)),
            "the Secret template lacks `{}`",
            secret.key
        );
    }
}

#[test]
fn every_flag_of_every_command_is_in_its_section() {
    let doc = read(CONFIGURATION);
    let tree = command_tree();
    assert!(tree.len() > 10, "commands found: {:?}", tree.keys());
    for (path, text) in &tree {
        if path.is_empty() || !subcommands(text).is_empty() {
            continue; // `leviathan` and the command groups have no flags of their own
        }
        let name = format!("leviathan {}", path.join(" "));
        let heading = format!("### `{name}`");
        let Some(body) = section(&doc, &heading) else {
            panic!("{CONFIGURATION} has no section `{heading}`");
        };
        let flags = long_flags(text);
        for flag in &flags {
            let documented = body.match_indices(flag.as_str()).any(|(at, _)| {
                !body[at + flag.len()..]
                    .starts_with(|c: char| c == '-' || c.is_ascii_alphanumeric())
            });
            assert!(
                documented,
                "`{flag}` of `{name}` is not in its section of {CONFIGURATION}"
            );
        }
        // The flags a section's tables describe are flags of its command.
        for row in body.lines().filter(|line| line.starts_with("| `-")) {
            let cell = row.split('|').nth(1).unwrap_or_default();
            for word in cell.split(['`', ' ', ',']) {
                if word.starts_with("--") {
                    assert!(
                        flags.contains(word),
                        "{CONFIGURATION} documents `{word}` for `{name}`, which has no such flag ({flags:?})"
                    );
                }
            }
        }
    }
}

#[test]
fn every_variable_the_code_reads_is_in_the_configuration_reference() {
    let known = variables_read_by_the_code(&command_tree());
    let documented = variable_names(&read(CONFIGURATION));
    let missing: Vec<_> = known.difference(&documented).collect();
    assert!(missing.is_empty(), "{CONFIGURATION} lacks {missing:?}");
}

#[test]
fn every_variable_the_docs_name_is_read_by_the_code() {
    let known = variables_read_by_the_code(&command_tree());
    for (path, text) in documents() {
        let unknown: Vec<_> = variable_names(&text)
            .into_iter()
            .filter(|name| !known.contains(name))
            .collect();
        assert!(
            unknown.is_empty(),
            "{path} names variables no code reads: {unknown:?}"
        );
    }
}

#[test]
fn the_readme_opens_with_the_quickstart_and_the_test_command_ci_runs() {
    let readme = read("README.md");
    let commands: Vec<Vec<&str>> = code_blocks(&readme)
        .into_iter()
        .filter(|(language, _)| *language == "sh")
        .map(|(_, lines)| lines)
        .take(2)
        .collect();
    assert_eq!(
        commands,
        [
            vec!["cargo run --example quickstart"],
            vec!["cargo test --workspace"]
        ],
        "the README's first two commands"
    );
    assert!(root().join("examples/quickstart.rs").is_file());

    // The command `.ci/run` extracts, by its own extraction line.
    let ci = read(".ci/run");
    let extraction = ci
        .lines()
        .find(|line| line.starts_with("test_command=$(awk"))
        .expect(".ci/run extracts the test command with awk");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{extraction}\nprintf '%s' \"$test_command\""))
        .current_dir(root())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cargo test --workspace"
    );
}

#[test]
fn every_leviathan_command_the_docs_show_exists() {
    let tree = command_tree();
    let top: BTreeSet<&str> = tree
        .keys()
        .filter(|p| p.len() == 1)
        .map(|p| p[0].as_str())
        .collect();
    let check = |path: &str, shown: &str| {
        let words: Vec<&str> = shown.split_whitespace().collect();
        let Some(command) = words.get(1).copied() else {
            return;
        };
        if command.starts_with('-') || command.starts_with('<') {
            return;
        }
        assert!(
            top.contains(command),
            "{path} shows `{shown}`: there is no command `{command}`"
        );
        let subs = subcommands(&tree[&vec![command.to_owned()]]);
        // `events verify|tail` names several; `events …` any.
        if let Some(sub) = words.get(2).filter(|_| !subs.is_empty()) {
            let known = sub.starts_with('-')
                || matches!(*sub, "…" | "...")
                || sub.split('|').all(|part| subs.iter().any(|s| s == part));
            assert!(
                known,
                "{path} shows `{shown}`: `{command}` has no subcommand `{sub}` ({subs:?})"
            );
        }
    };
    let mut checked = 0;
    for (path, text) in documents() {
        // Shell blocks: lines that run `leviathan`.
        for (language, lines) in code_blocks(&text) {
            for line in lines.into_iter().filter(|_| language == "sh") {
                if line.trim_start().starts_with("leviathan ") {
                    check(&path, line.trim());
                    checked += 1;
                }
            }
        }
        // Inline code outside blocks.
        let mut in_block = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
            }
            if in_block {
                continue;
            }
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1 && span.starts_with("leviathan ") {
                    check(&path, span);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} commands found in the docs");
}

/// The fenced code blocks of a markdown text: their language (`sh`, `yaml`, empty…) and lines.
fn code_blocks(text: &str) -> Vec<(&str, Vec<&str>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(&str, Vec<&str>)> = None;
    for line in text.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(language)) => current = Some((language.trim(), Vec::new())),
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some((_, lines)), None) => lines.push(line),
            (None, None) => {}
        }
    }
    blocks
}

/// GitHub's anchor of a heading.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_relative_link_resolves() {
    let mut checked = 0;
    for (path, text) in documents() {
        let dir = Path::new(&path).parent().unwrap_or(Path::new(""));
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let link = &rest[..end];
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = link.split_once('#').unwrap_or((link, ""));
            let target: PathBuf = if file.is_empty() {
                PathBuf::from(&path)
            } else {
                dir.join(file)
            };
            assert!(
                root().join(&target).exists(),
                "{path} links to {link}: {} does not exist",
                target.display()
            );
            if !fragment.is_empty() {
                let anchors: BTreeSet<String> = read(&target.display().to_string())
                    .lines()
                    .filter(|line| line.starts_with('#'))
                    .map(anchor)
                    .collect();
                assert!(
                    anchors.contains(fragment),
                    "{path} links to {link}: no heading #{fragment} in {}",
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} links found");
}

#[test]
fn the_documented_yaml_parses_and_the_target_defaults_are_the_code_s() {
    let doc = read(CONFIGURATION);
    let yaml: Vec<String> = doc
        .split("```yaml\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(yaml.len(), 2, "a target and a backlog example");
    let target = parse_target_config("target example", &yaml[0], None).expect("the target example");
    assert!(target.policy.autonomy_enabled);
    let backlog = parse_backlog("backlog example", &yaml[1]).expect("the backlog example");
    assert_eq!(backlog.tasks.len(), 1);
    parse_backlog(
        "quickstart",
        &read("examples/quickstart/repo/.leviathan/backlog.yaml"),
    )
    .expect("the backlog the docs point at");

    let defaults = Policy::default();
    let minutes = |d: std::time::Duration| d.as_secs() / 60;
    for (key, default) in [
        ("autonomy.enabled", defaults.autonomy_enabled.to_string()),
        ("guardrails.max_open_prs", defaults.max_open_prs.to_string()),
        (
            "guardrails.max_running_attempts",
            defaults.max_running_attempts.to_string(),
        ),
        (
            "guardrails.max_attempts_per_task",
            defaults.max_attempts_per_task.to_string(),
        ),
        (
            "guardrails.circuit_breaker.enabled",
            defaults.circuit_breaker.enabled.to_string(),
        ),
        (
            "guardrails.circuit_breaker.consecutive_failures_threshold",
            defaults.circuit_breaker.threshold.to_string(),
        ),
        (
            "guardrails.circuit_breaker.cooldown_minutes",
            minutes(defaults.circuit_breaker.cooldown).to_string(),
        ),
        (
            "guardrails.timeout.attempt_timeout_minutes",
            minutes(defaults.attempt_timeout).to_string(),
        ),
        (
            "guardrails.retry.initial_backoff_seconds",
            defaults.retry.initial.as_secs().to_string(),
        ),
        ("guardrails.retry.factor", defaults.retry.factor.to_string()),
        (
            "guardrails.retry.max_backoff_seconds",
            defaults.retry.max.as_secs().to_string(),
        ),
        ("guardrails.retry.jitter", defaults.retry.jitter.to_string()),
    ] {
        let row = format!("| `{key}` | `{default}` |");
        assert!(doc.contains(&row), "{CONFIGURATION} lacks the row `{row}`");
    }
}

#[test]
fn every_error_code_is_documented() {
    let doc = read("docs/control-plane.md");
    let errors = section(&doc, "### Errors and limits").expect("the errors section");
    for code in leviathan::api::ErrorCode::ALL {
        assert!(
            errors.contains(&format!("`{code}`")),
            "docs/control-plane.md does not list the error code `{code}`"
        );
    }
}
