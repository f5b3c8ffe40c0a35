//! The store commands of the real binary: verify (also on a tampered PostgreSQL log), export and
//! import round trips, rebuild, local queries and invalidation, token commands, usage errors.

mod support {
    pub(crate) mod cli;
}

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use leviathan::stores::open_stores;
use leviathan_core::{
    Expectations, Ledger, NewEvent,
    model::Priority,
    testkit::{Scenario, lifecycle},
};
use serde_json::{Value, json};
use support::cli::{home, leviathan, run, run_with, token_file};

/// Appends events through a ledger on the store at `url`, then closes the store.
async fn populate(url: &str, events: Vec<NewEvent>) {
    let stores = open_stores(url).await.unwrap();
    let ledger = Ledger::open(stores.events.clone(), stores.graphs.clone())
        .await
        .unwrap();
    ledger.ingest(events, Expectations::Derived).await.unwrap();
    ledger.flush().await.unwrap();
}

/// A realistic log with an unknown event type and awkward payloads.
fn realistic() -> Vec<NewEvent> {
    let mut events = lifecycle("exp", "demo", 3);
    let mut odd = Scenario::new("odd", "other");
    odd.register_target()
        .create_task("t1", &[], Priority::Low)
        .unknown_event();
    events.extend(odd.build());
    events.push(
        serde_json::from_value(json!({
            "event_id": "awkward", "event_type": "note.added", "timestamp": "2026-01-28T12:00:00.000001Z",
            "payload": {"text": "café — 日本語 🦑 \"quoted\"\n", "max": u64::MAX, "min": i64::MIN, "pi": std::f64::consts::PI, "tiny": 5e-324, "nested": [{"b": 1, "a": [true, null]}]}
        }))
        .unwrap(),
    );
    events
}

fn sled(dir: &Path, name: &str) -> String {
    format!("sled:{}", dir.join(name).display())
}

#[tokio::test(flavor = "multi_thread")]
async fn export_then_import_reproduces_the_chain_and_the_graph() {
    let home = home();
    let h = home.path();
    let source = sled(h, "source");
    let events = realistic();
    populate(&source, events.clone()).await;
    let n = events.len() as u64;

    let head = run(h, &["events", "head", "--store", &source, "--json"])
        .expect(0)
        .json();
    assert_eq!(head["head"]["seq"], n);
    run(h, &["events", "verify", "--store", &source]).expect(0);

    let export = h.join("log.ndjson");
    let exported = run(
        h,
        &[
            "events",
            "export",
            "--store",
            &source,
            "-o",
            export.to_str().unwrap(),
        ],
    )
    .expect(0);
    assert!(
        exported.stderr.contains(&format!("exported {n} events")),
        "{}",
        exported.stderr
    );
    let text = fs::read_to_string(&export).unwrap();
    assert_eq!(text.lines().count() as u64, n);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["prev_hash"], Value::Null);
    // The same export on stdout.
    let stdout = run(h, &["events", "export", "--store", &source])
        .expect(0)
        .stdout;
    assert_eq!(stdout, text);

    let target = sled(h, "target");
    let imported = run(
        h,
        &[
            "events",
            "import",
            "--store",
            &target,
            "-i",
            export.to_str().unwrap(),
            "--json",
        ],
    )
    .expect(0)
    .json();
    assert_eq!(imported["imported"], n);
    assert_eq!(imported["head"], head["head"]);
    let verified = run(h, &["events", "verify", "--store", &target, "--json"])
        .expect(0)
        .json();
    assert_eq!(
        (verified["ok"].as_bool(), verified["events"].as_u64()),
        (Some(true), Some(n))
    );
    assert_eq!(verified["head"], head["head"]);
    let again = run(h, &["events", "export", "--store", &target])
        .expect(0)
        .stdout;
    assert_eq!(again, text, "the re-exported log is byte for byte the same");
    let summary_of = |store: &str| {
        run(h, &["graph", "summary", "--store", store, "--json"])
            .expect(0)
            .json()
    };
    assert_eq!(summary_of(&target), summary_of(&source));

    // The export can come from stdin too.
    let piped = sled(h, "piped");
    run_with(
        leviathan(h)
            .args(["events", "import", "--store", &piped, "-i", "-"])
            .stdin(fs::File::open(&export).unwrap()),
    )
    .expect(0);
    assert_eq!(
        run(h, &["events", "export", "--store", &piped])
            .expect(0)
            .stdout,
        text
    );

    // Importing into a store that is not empty is refused and changes nothing.
    let refused = run(
        h,
        &[
            "events",
            "import",
            "--store",
            &target,
            "-i",
            export.to_str().unwrap(),
        ],
    )
    .expect(1);
    assert!(refused.stderr.contains("not empty"), "{}", refused.stderr);
    let head_after = run(h, &["events", "head", "--store", &target, "--json"])
        .expect(0)
        .json();
    assert_eq!(head_after, head);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_modified_export_is_refused_and_nothing_is_imported() {
    let home = home();
    let h = home.path();
    let source = sled(h, "source");
    populate(&source, lifecycle("mod", "demo", 2)).await;
    let export = h.join("log.ndjson");
    run(
        h,
        &[
            "events",
            "export",
            "--store",
            &source,
            "-o",
            export.to_str().unwrap(),
        ],
    )
    .expect(0);
    let text = fs::read_to_string(&export).unwrap();

    // Change one payload value of the 5th event, keeping its stored hash.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut event: Value = serde_json::from_str(&lines[4]).unwrap();
    event["actor_id"] = json!("someone-else");
    lines[4] = serde_json::to_string(&event).unwrap();
    let tampered = h.join("tampered.ndjson");
    fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let target = sled(h, "target");
    let refused = run(
        h,
        &[
            "events",
            "import",
            "--store",
            &target,
            "-i",
            tampered.to_str().unwrap(),
        ],
    )
    .expect(1);
    assert!(refused.stderr.contains("line 5"), "{}", refused.stderr);
    assert!(refused.stderr.contains("seq 5"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("nothing was imported"),
        "{}",
        refused.stderr
    );
    let head = run(h, &["events", "head", "--store", &target, "--json"])
        .expect(0)
        .json();
    assert_eq!(head["head"], Value::Null);

    // A dropped line is a gap.
    lines = text.lines().map(str::to_owned).collect();
    lines.remove(2);
    fs::write(&tampered, lines.join("\n")).unwrap();
    let gap = run(
        h,
        &[
            "events",
            "import",
            "--store",
            &target,
            "-i",
            tampered.to_str().unwrap(),
        ],
    )
    .expect(1);
    assert!(gap.stderr.contains("seq 3"), "{}", gap.stderr);

    // Not JSON at all.
    fs::write(&tampered, "{\"seq\": 1,\n").unwrap();
    let garbage = run(
        h,
        &[
            "events",
            "import",
            "--store",
            &target,
            "-i",
            tampered.to_str().unwrap(),
        ],
    )
    .expect(1);
    assert!(garbage.stderr.contains("line 1"), "{}", garbage.stderr);
    run(h, &["events", "verify", "--store", &target]).expect(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_exits_1_at_the_first_tampered_seq_of_a_postgres_log() {
    let db = leviathan_store_pg::testkit::TestDatabase::create().await;
    let url = db.url().to_owned();
    populate(&url, lifecycle("pg", "demo", 1)).await;
    let home = home();
    let h = home.path();
    let ok = run(h, &["events", "verify", "--store", &url]).expect(0);
    assert!(ok.stdout.starts_with("chain verified"), "{}", ok.stdout);

    // Tamper with the stored bytes of seq 3 behind the store's back (the table refuses updates,
    // so the test switches its guard off as a superuser would).
    let store = db.store().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete; \
         UPDATE events SET canonical = overlay(canonical placing '\\x21'::bytea from 20 for 1) WHERE seq = 3; \
         ALTER TABLE events ENABLE TRIGGER events_refuse_update_delete;",
    ))
    .execute(store.pool())
    .await
    .unwrap();
    drop(store);

    let broken = run(h, &["events", "verify", "--store", &url]).expect(1);
    assert!(
        broken.stdout.contains("chain broken at seq 3"),
        "{broken:#?}"
    );
    assert!(broken.stderr.contains("first bad seq 3"), "{broken:#?}");
    let json = run(h, &["events", "verify", "--store", &url, "--json"])
        .expect(1)
        .json();
    assert_eq!(
        (json["ok"].as_bool(), json["seq"].as_u64()),
        (Some(false), Some(3))
    );
    assert!(json["fault"].as_str().is_some(), "{json}");
    assert!(
        !broken.stderr.contains("postgres@"),
        "no credentials in errors"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn store_commands_query_rebuild_and_invalidate_locally() {
    let home = home();
    let h = home.path();
    let store = sled(h, "data");
    populate(&store, lifecycle("loc", "demo", 2)).await;

    let page = run(h, &["attempts", "list", "--store", &store, "--json"])
        .expect(0)
        .json();
    assert_eq!(page["count"], 4);
    assert_eq!(page["attempts"][0]["attempt_id"], "attempt-00001-b");
    let failures = run(
        h,
        &["failures", "--store", &store, "--json", "--limit", "1"],
    )
    .expect(0)
    .json();
    assert_eq!(failures["failures"][0]["attempt_id"], "attempt-00001-a");
    let cursor = failures["next_cursor"]
        .as_u64()
        .expect("a full page has a cursor");
    let human = run(h, &["failures", "--store", &store, "--limit", "1"])
        .expect(0)
        .stdout;
    assert!(
        human.contains(&format!("more: --cursor {cursor}")),
        "{human}"
    );
    let cursor = cursor.to_string();
    let human = run(h, &["failures", "--store", &store, "--cursor", &cursor])
        .expect(0)
        .stdout;
    assert!(human.contains("attempt-00000-a"), "{human}");
    assert!(!human.contains("attempt-00001-a"), "{human}");

    let done = run(
        h,
        &[
            "invalidate",
            "attempt-00000-b",
            "--reason",
            "rolled back",
            "--store",
            &store,
        ],
    )
    .expect(0);
    assert!(
        done.stdout.contains("attempt attempt-00000-b invalidated"),
        "{}",
        done.stdout
    );
    let detail = run(
        h,
        &[
            "attempts",
            "show",
            "attempt-00000-b",
            "--store",
            &store,
            "--json",
        ],
    )
    .expect(0)
    .json();
    assert_eq!(detail["attempt"]["status"], "invalidated");
    assert_eq!(detail["attempt"]["invalidated_reason"], "rolled back");

    let before = run(h, &["graph", "summary", "--store", &store, "--json"])
        .expect(0)
        .json();
    let rebuilt = run(h, &["graph", "rebuild", "--store", &store, "--json"])
        .expect(0)
        .json();
    assert_eq!(rebuilt["events"], before["checkpoint"]["seq"]);
    let after = run(h, &["graph", "summary", "--store", &store, "--json"])
        .expect(0)
        .json();
    assert_eq!(after, before);

    // The default store is sled in ~/.leviathan/data.
    let default = run(h, &["events", "head", "--json"]).expect(0).json();
    assert_eq!(default["head"], Value::Null);
    assert!(h.join(".leviathan/data").exists());
}

#[test]
fn token_show_and_rotate() {
    let home = home();
    let h = home.path();
    let missing = run(h, &["token", "show"]).expect(1);
    assert!(
        missing.stderr.contains("token rotate"),
        "{}",
        missing.stderr
    );
    let rotated = run(h, &["token", "rotate", "--json"]).expect(0).json();
    assert_eq!(rotated["rotated"], true);
    let path = token_file(h);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = fs::read_to_string(&path).unwrap().trim().to_owned();
    assert_eq!(run(h, &["token", "show"]).expect(0).stdout.trim(), token);
    let shown = run(h, &["token", "show", "--json"]).expect(0).json();
    assert_eq!(shown["token"], token);
    run(h, &["token", "rotate"]).expect(0);
    assert_ne!(fs::read_to_string(&path).unwrap().trim(), token);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let refused = run(h, &["token", "show"]).expect(2);
    assert!(refused.stderr.contains("chmod 600"), "{}", refused.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let home = home();
    let h = home.path();
    for args in [
        &["frobnicate"][..],
        &["events"],
        &[
            "events",
            "verify",
            "--store",
            "memory:",
            "--api",
            "http://127.0.0.1:1",
        ],
        &["invalidate", "attempt-1", "--store", "memory:"],
        &[
            "invalidate",
            "attempt-1",
            "--reason",
            " ",
            "--store",
            "memory:",
        ],
        &["attempts", "show", "bad..id", "--store", "memory:"],
        &[
            "attempts", "list", "--status", "exploded", "--store", "memory:",
        ],
        &["events", "head", "--store", "ftp://nowhere"],
        &[
            "events",
            "import",
            "--api",
            "http://127.0.0.1:1",
            "-i",
            "x.ndjson",
        ],
        &["graph", "rebuild", "--api", "http://127.0.0.1:1"],
        &[
            "events",
            "import",
            "--store",
            "memory:",
            "-i",
            "/nonexistent/export.ndjson",
        ],
        &["events", "head", "--api", "http://127.0.0.1:1"],
    ] {
        let outcome = run(h, args);
        assert_eq!(outcome.code, 2, "{args:?}: {outcome:#?}");
        assert!(!outcome.stderr.is_empty(), "{args:?} explains itself");
    }
}
