//! `leviathan log`: proofs written through a running control plane and checked offline, a
//! witness that cosigns a grown log and refuses a rewritten or rolled-back one, and a log
//! rewritten behind its store's back (sled and PostgreSQL), which `log check-consistency`
//! against an older checkpoint and `events verify` both report at the first bad seq.

mod support {
    pub(crate) mod cli;
}

use std::{fs, path::Path};

use leviathan::{api::log_key, stores::open_stores};
use leviathan_core::{
    Expectations, Ledger, NewEvent,
    testkit::lifecycle,
    tlog::{self, StoredCheckpoint, checkpoint::TreeHead, cosignature::CosignatureVerifier},
};
use support::cli::{Served, home, run, token_file};

async fn populate(url: &str, events: Vec<NewEvent>) {
    let stores = open_stores(url).await.unwrap();
    let ledger = Ledger::open(stores.events.clone(), stores.graphs.clone())
        .await
        .unwrap();
    ledger.ingest(events, Expectations::Derived).await.unwrap();
    ledger.flush().await.unwrap();
}

/// Signs and records a checkpoint of the whole log with the key `serve` would use, as the
/// control plane's signer does; returns the signed note.
async fn sign(url: &str, home: &Path) -> String {
    let stores = open_stores(url).await.unwrap();
    let key_file = log_key::key_file_beside(&token_file(home));
    let (signer, _) = log_key::load_or_create(&key_file, "test.example/log").unwrap();
    let size = stores.tree.tree_size().await.unwrap();
    let root = tlog::root(&*stores.tree, size).await.unwrap();
    let note = signer.sign(TreeHead { size, root }).unwrap();
    stores
        .tree
        .record_checkpoint(&StoredCheckpoint {
            size,
            note: note.clone(),
        })
        .await
        .unwrap();
    note
}

fn public_key(home: &Path) -> String {
    run(home, &["log", "key"])
        .expect(0)
        .stdout
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proof_from_the_control_plane_verifies_offline_and_a_forged_one_does_not() {
    let home = home();
    let h = home.path();
    let url = format!("sled:{}", h.join("data").display());
    let events = lifecycle("cli", "demo", 2);
    populate(&url, events.clone()).await;
    let served = Served::start(h, &["--store", &url, "--checkpoint-every-ms", "0"]);
    let id = events[3].event_id.to_string();
    let proof = run(h, &["log", "prove", &id, "--api", &served.url]).expect(0);
    served.terminate();
    let key = public_key(h);
    assert!(key.starts_with("leviathan.localhost/log+"), "{key}");
    let file = h.join("proof.json");
    fs::write(&file, &proof.stdout).unwrap();
    let path = file.to_str().unwrap();
    let ok = run(h, &["log", "verify", path, "--key", &key]).expect(0);
    assert!(
        ok.stdout.contains(&format!("event {id} (seq 4)")),
        "{ok:#?}"
    );

    let mut bundle = proof.json();
    bundle["event"]["payload"]["attempt_id"] = "forged".into();
    fs::write(&file, bundle.to_string()).unwrap();
    let forged = run(h, &["log", "verify", path, "--key", &key]).expect(1);
    assert!(forged.stderr.contains("was altered"), "{forged:#?}");

    let mut bundle = proof.json();
    bundle["inclusion"]["tree_size"] =
        (bundle["inclusion"]["tree_size"].as_u64().unwrap() + 1).into();
    fs::write(&file, bundle.to_string()).unwrap();
    run(h, &["log", "verify", path, "--key", &key]).expect(1);

    fs::write(&file, "not a proof").unwrap();
    run(h, &["log", "verify", path, "--key", &key]).expect(2);
    fs::write(&file, &proof.stdout).unwrap();
    run(h, &["log", "verify", path, "--key", "not-a-key"]).expect(2);
    let other_home = support::cli::home();
    let (other, _) = log_key::load_or_create(
        &log_key::key_file_beside(&token_file(other_home.path())),
        "leviathan.localhost/log",
    )
    .unwrap();
    let wrong = run(h, &["log", "verify", path, "--key", other.verifier_key()]).expect(1);
    assert!(wrong.stderr.contains("not signed by the key"), "{wrong:#?}");
}

/// A log at `dir` under `home` holding `events`, with a checkpoint signed by the home's key,
/// served with the witness `witness_key`; returns its size.
async fn serve_log(
    home: &Path,
    dir: &str,
    events: Vec<NewEvent>,
    witness_key: &str,
) -> (Served, u64) {
    let url = format!("sled:{}", home.join(dir).display());
    populate(&url, events).await;
    sign(&url, home).await;
    let size = open_stores(&url)
        .await
        .unwrap()
        .tree
        .tree_size()
        .await
        .unwrap();
    let served = Served::start(
        home,
        &[
            "--store",
            &url,
            "--checkpoint-every-ms",
            "0",
            "--witness-key",
            witness_key,
        ],
    );
    (served, size)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_witness_cosigns_a_grown_log_and_refuses_a_rewritten_or_rolled_back_one() {
    let home = home();
    let h = home.path();
    let made = run(h, &["log", "witness-key", "witness.test/w1"]).expect(0);
    let witness_key = made.stdout.trim().to_owned();
    let cosigner = CosignatureVerifier::new(&witness_key).unwrap();
    let mut history = lifecycle("witness", "demo", 6);
    let later = history.split_off(history.len() / 2);
    let (served, first_size) = serve_log(h, "data", history, &witness_key).await;
    let key = public_key(h);
    let state = h.join("witness.state");
    let witness = |url: &str| {
        let state = state.to_str().unwrap();
        run(
            h,
            &[
                "log", "witness", "--log", url, "--key", &key, "--state", state,
            ],
        )
    };
    let first = witness(&served.url).expect(0);
    assert!(first.stdout.contains("(first sight)"), "{first:#?}");
    let cosigned = fs::read_to_string(&state).unwrap();
    assert_eq!(cosigner.verify(cosigned.as_bytes()).map(|_| ()), Ok(()));
    served.terminate();

    let url = format!("sled:{}", h.join("data").display());
    populate(&url, later).await;
    let grown = sign(&url, h).await;
    let served = Served::start(
        h,
        &[
            "--store",
            &url,
            "--checkpoint-every-ms",
            "0",
            "--witness-key",
            &witness_key,
        ],
    );
    let second = witness(&served.url).expect(0);
    assert!(
        second.stdout.contains(&format!("({first_size})")),
        "{second:#?}"
    );
    let state_now = fs::read_to_string(&state).unwrap();
    assert!(state_now.starts_with(grown.trim_end()), "{state_now}");
    let checkpoint = client_checkpoint(h, &served.url).await;
    assert!(
        cosigner.verify(checkpoint.as_bytes()).is_ok(),
        "{checkpoint}"
    );
    served.terminate();

    // The same key signs a different history, longer than what the witness saw, then a
    // shorter one: both refused, and the state keeps the last checkpoint it cosigned.
    let rewritten = lifecycle("rewritten", "demo", 12);
    let (served, size) = serve_log(h, "rewritten", rewritten, &witness_key).await;
    assert!(size > first_size * 2, "{size}");
    let refused = witness(&served.url).expect(1);
    assert!(
        refused.stderr.contains("the log was rewritten"),
        "{refused:#?}"
    );
    assert_eq!(fs::read_to_string(&state).unwrap(), state_now);
    served.terminate();
    let (served, _) = serve_log(h, "short", lifecycle("short", "demo", 1), &witness_key).await;
    let refused = witness(&served.url).expect(1);
    assert!(
        refused.stderr.contains("the log rolled back"),
        "{refused:#?}"
    );
    assert_eq!(fs::read_to_string(&state).unwrap(), state_now);
    served.terminate();
}

/// The checkpoint the control plane at `url` serves, read with the home's token.
async fn client_checkpoint(home: &Path, url: &str) -> String {
    let token = fs::read_to_string(token_file(home)).unwrap();
    let client = leviathan::api::client::ControlPlaneClient::new(url, token.trim()).unwrap();
    client.checkpoint().await.unwrap()
}

/// Writes an older checkpoint, appends more, signs again; then `tamper` rewrites the event at
/// `seq` behind the store's back, and both commands name it.
async fn rewritten_event_is_named(url: &str, home: &Path, tamper: impl AsyncFnOnce(u64)) {
    let mut history = lifecycle("tamper", "demo", 6);
    let later = history.split_off(history.len() / 2);
    populate(url, history).await;
    let old = sign(url, home).await;
    let old_file = home.join("old.checkpoint");
    fs::write(&old_file, &old).unwrap();
    populate(url, later).await;
    sign(url, home).await;
    let key = public_key(home);
    let old_path = old_file.to_str().unwrap();
    let fine = run(
        home,
        &[
            "log",
            "check-consistency",
            old_path,
            "--key",
            &key,
            "--store",
            url,
        ],
    )
    .expect(0);
    assert!(fine.stdout.starts_with("consistent"), "{fine:#?}");

    let bad = 7;
    tamper(bad).await;
    let report = run(
        home,
        &[
            "log",
            "check-consistency",
            old_path,
            "--key",
            &key,
            "--store",
            url,
        ],
    )
    .expect(1);
    assert!(
        report.stderr.contains(&format!("first bad seq {bad}")),
        "{report:#?}"
    );
    let verify = run(home, &["events", "verify", "--store", url]).expect(1);
    assert!(
        verify.stderr.contains(&format!("first bad seq {bad}")),
        "{verify:#?}"
    );
}

/// The event's canonical bytes with `demo` replaced by `dem0`: still a decodable event.
fn rewritten(canonical: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(canonical.to_vec()).unwrap();
    assert!(text.contains("\"demo\""), "{text}");
    text.replacen("\"demo\"", "\"dem0\"", 1).into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_rewritten_in_sled_is_named_by_both_checks() {
    let home = home();
    let h = home.path();
    let dir = h.join("data");
    let url = format!("sled:{}", dir.display());
    rewritten_event_is_named(&url, h, async |seq| {
        let db = sled::open(&dir).unwrap();
        let events = db.open_tree("events").unwrap();
        let record = events.get(seq.to_be_bytes()).unwrap().unwrap();
        let (hash, canonical) = record.split_at(32);
        let mut tampered = hash.to_vec();
        tampered.extend(rewritten(canonical));
        events.insert(seq.to_be_bytes(), tampered).unwrap();
        db.flush().unwrap();
        drop(events);
        drop(db);
        // sled's pool threads release the directory's lock a moment after the last handle.
        for _ in 0..500 {
            if sled::Config::new().path(&dir).open().is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_rewritten_in_postgres_is_named_by_both_checks() {
    let db = leviathan_store_pg::testkit::TestDatabase::create().await;
    let home = home();
    let url = db.url().to_owned();
    rewritten_event_is_named(&url, home.path(), async |seq| {
        let store = db.store().await;
        let canonical: Vec<u8> = sqlx::query_scalar("SELECT canonical FROM events WHERE seq = $1")
            .bind(seq as i64)
            .fetch_one(store.pool())
            .await
            .unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::raw_sql("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("UPDATE events SET canonical = $1 WHERE seq = $2")
            .bind(rewritten(&canonical))
            .bind(seq as i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::raw_sql("ALTER TABLE events ENABLE TRIGGER events_refuse_update_delete")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    })
    .await;
}
