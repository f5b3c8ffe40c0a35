//! The verifiable log over HTTP: checkpoints signed on demand and while the log grows, proofs
//! that verify offline against the public key, the errors of requests outside the tree, and
//! witnesses' cosignatures (a forged one is refused).

mod support;

use std::{sync::Arc, time::Duration};

use leviathan_api::{
    ApiConfig, ApiState, BearerToken, ControlPlane, ErrorCode, client::ClientError, console,
    router, sign_checkpoints,
};
use leviathan_core::{
    EventStore, Ledger,
    memory::{MemoryArtifactStore, MemoryEventStore, MemoryGraphStore},
    secret::Secret,
    testkit::lifecycle,
    tlog::{
        self, ProofBundle, TreeStore,
        checkpoint::{LogSigner, LogVerifier, generate_key},
        cosignature::{CosignatureVerifier, Cosigner, generate_cosigner_key},
    },
};
use leviathan_testkit::TestServer;
use reqwest::Method;
use support::{Auth, TOKEN, console_sign_in, fast_retry};
use tokio_util::sync::CancellationToken;

struct Log {
    server: TestServer,
    plane: ControlPlane,
    events: MemoryEventStore,
    key: LogVerifier,
    /// The one witness the control plane accepts.
    witness: Cosigner,
}

async fn start(signing: bool) -> Log {
    let events = MemoryEventStore::new();
    let ledger = Ledger::open(Arc::new(events.clone()), Arc::new(MemoryGraphStore::new()))
        .await
        .unwrap();
    let (secret, public) = generate_key("test.example/leviathan").unwrap();
    let signer = LogSigner::new(&Secret::new(secret.expose()), &public).unwrap();
    let (witness, witness_public) = generate_cosigner_key("witness.example/w1").unwrap();
    let plane = ControlPlane::new(Arc::new(ledger), Arc::new(MemoryArtifactStore::new()))
        .with_log(Arc::new(events.clone()), signing.then(|| Arc::new(signer)))
        .with_witnesses(vec![CosignatureVerifier::new(&witness_public).unwrap()]);
    let config = ApiConfig::new(BearerToken::new(TOKEN).unwrap());
    let state = ApiState::from_control_plane(plane.clone(), config);
    let app = router(state.clone()).nest(
        "/ui",
        console::router(state, console::ConsoleConfig::default()),
    );
    let server = TestServer::spawn(app).await.unwrap();
    Log {
        server,
        plane,
        events,
        key: LogVerifier::new(&public).unwrap(),
        witness: Cosigner::new(&witness).unwrap(),
    }
}

fn client(log: &Log) -> leviathan_api::client::ControlPlaneClient {
    leviathan_api::client::ControlPlaneClient::new(&log.server.url(), TOKEN)
        .unwrap()
        .with_retry(fast_retry())
}

fn code(error: ClientError) -> ErrorCode {
    error
        .code()
        .unwrap_or_else(|| panic!("an API error, got {error}"))
}

#[tokio::test]
async fn proofs_from_the_api_verify_offline_with_the_public_key() {
    let log = start(true).await;
    let api = client(&log);
    assert_eq!(
        code(api.checkpoint().await.unwrap_err()),
        ErrorCode::NoCheckpoint
    );
    let mut history = lifecycle("api", "demo", 4);
    let later = history.split_off(history.len() / 2);
    log.plane
        .ledger()
        .ingest(history, Default::default())
        .await
        .unwrap();
    let size = log.events.tree_size().await.unwrap();
    let note = api.sign_checkpoint().await.unwrap();
    assert_eq!(api.checkpoint().await.unwrap(), note);
    let head = log.key.verify(note.as_bytes()).unwrap().head;
    assert_eq!(head.size, size);

    for event in log.events.read(0, 1000).await.unwrap() {
        let inclusion = api.inclusion_proof(event.seq, None).await.unwrap();
        let bundle = ProofBundle {
            canonical_sha256: event.hash,
            event,
            inclusion,
            checkpoint: note.clone(),
        };
        bundle.verify(&log.key).unwrap();
    }

    log.plane
        .ledger()
        .ingest(later, Default::default())
        .await
        .unwrap();
    let newer = api.sign_checkpoint().await.unwrap();
    let proof = api.consistency_proof(size, None).await.unwrap();
    tlog::check_consistency(&log.key, note.as_bytes(), newer.as_bytes(), &proof).unwrap();

    let beyond = api
        .inclusion_proof(size + 100, Some(size + 100))
        .await
        .unwrap_err();
    assert_eq!(code(beyond), ErrorCode::OutsideTree);
    let backwards = api.consistency_proof(size, Some(1)).await.unwrap_err();
    assert_eq!(code(backwards), ErrorCode::OutsideTree);
}

#[tokio::test]
async fn log_routes_need_the_token_and_bad_queries_change_nothing() {
    let log = start(true).await;
    let harness = Raw(log.server.url());
    for path in [
        "/v1/log/checkpoint",
        "/v1/log/proof/inclusion?seq=1",
        "/v1/log/proof/consistency?from=1",
    ] {
        let (status, _) = harness.request(Method::GET, path, Auth::None).await;
        assert_eq!(status, 401, "{path}");
    }
    for path in ["/v1/log/checkpoint", "/v1/log/cosignature"] {
        let (status, body) = harness.request(Method::POST, path, Auth::Wrong).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    assert_eq!(log.events.latest_checkpoint().await.unwrap(), None);
    for path in [
        "/v1/log/proof/inclusion?seq=1&event_id=x",
        "/v1/log/proof/inclusion?size=3",
        "/v1/log/proof/consistency?from=abc",
    ] {
        let (status, body) = harness.request(Method::GET, path, Auth::Token).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
}

/// Plain requests, to see statuses as any HTTP client would.
struct Raw(String);

impl Raw {
    async fn request(&self, method: Method, path: &str, auth: Auth) -> (u16, String) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.0));
        request = match auth {
            Auth::Token => request.bearer_auth(TOKEN),
            Auth::Wrong => request.bearer_auth("wrong-token-0123456789abcdef"),
            Auth::None => request,
        };
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

/// The console's event page offers each event's proof bundle, which verifies offline with the
/// log's public key as `leviathan log prove`'s does; before a checkpoint covers the event there
/// is none.
#[tokio::test]
async fn the_console_links_each_event_to_a_proof_bundle_that_verifies_offline() {
    let log = start(true).await;
    log.plane
        .ledger()
        .ingest(lifecycle("pb", "demo", 1), Default::default())
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = log.server.url();
    let cookie = console_sign_in(&http, &base, TOKEN).await;
    let get = async |path: &str| {
        http.get(format!("{base}/ui{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
    };
    let early = get("/events/3?format=proof").await;
    assert_eq!(early.status(), 404, "no checkpoint yet");
    log.plane.sign_checkpoint().await.unwrap();

    let page = get("/events/3").await.text().await.unwrap();
    assert!(
        page.contains("href=\"/ui/events/3?format=proof\" download=\"proof-3.json\""),
        "{page}"
    );
    let response = get("/events/3?format=proof").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"proof-3.json\""
    );
    let bundle: ProofBundle = response.json().await.unwrap();
    assert_eq!(bundle.event.seq, 3);
    let verified = bundle
        .verify(&log.key)
        .expect("the bundle verifies offline");
    assert_eq!(verified.head.size, log.events.tree_size().await.unwrap());
    let mut forged = bundle.clone();
    forged.event.payload["forged"] = true.into();
    assert!(forged.verify(&log.key).is_err(), "a changed event fails");
}

#[tokio::test]
async fn without_a_key_nothing_is_signed() {
    let log = start(false).await;
    let error = client(&log).sign_checkpoint().await.unwrap_err();
    assert_eq!(code(error), ErrorCode::NoCheckpoint);
}

/// The signer signs once per interval while the log grows and not at all when it does not.
#[tokio::test(start_paused = true)]
async fn the_signer_signs_while_the_log_grows() {
    let log = start(true).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(sign_checkpoints(
        log.plane.clone(),
        Duration::from_secs(1),
        stop.clone().cancelled_owned(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        log.events.latest_checkpoint().await.unwrap().unwrap().size,
        0
    );
    log.plane
        .ledger()
        .ingest(lifecycle("tick", "demo", 1), Default::default())
        .await
        .unwrap();
    let size = log.events.tree_size().await.unwrap();
    assert_eq!(
        log.events.latest_checkpoint().await.unwrap().unwrap().size,
        0
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let latest = log.events.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(latest.size, size);
    assert_eq!(
        log.key.verify(latest.note.as_bytes()).unwrap().head.size,
        size
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(log.events.latest_checkpoint().await.unwrap(), Some(latest));
    stop.cancel();
    task.await.unwrap();
}

/// `note` with the witness's cosignature of another checkpoint text: a valid signature on the
/// wrong message.
fn forged_cosignature(witness: &Cosigner, note: &str) -> String {
    let other = note.replacen("\n", "\n1", 1);
    let cosigned = witness.cosign(other.as_bytes(), 1_700_000_000).unwrap();
    let line = cosigned.lines().last().unwrap();
    format!("{note}{line}\n")
}

#[tokio::test]
async fn a_known_witness_cosigns_and_a_forged_cosignature_changes_nothing() {
    let log = start(true).await;
    let api = client(&log);
    let mut history = lifecycle("witness", "demo", 4);
    let later = history.split_off(history.len() / 2);
    let ingest = async |events| {
        log.plane
            .ledger()
            .ingest(events, Default::default())
            .await
            .unwrap()
    };
    ingest(history).await;
    let note = api.sign_checkpoint().await.unwrap();
    let refused = async |posted: &str, expected: ErrorCode, says: &str| {
        let error = api.post_cosignature(posted).await.unwrap_err();
        assert!(error.to_string().contains(says), "{error}");
        assert_eq!(code(error), expected);
        assert_eq!(api.checkpoint().await.unwrap(), note, "nothing changed");
    };

    let cosigned = log.witness.cosign(note.as_bytes(), 1_700_000_000).unwrap();
    let forged = forged_cosignature(&log.witness, &note);
    refused(&forged, ErrorCode::InvalidRequest, "does not verify").await;
    let (stranger, _) = generate_cosigner_key("witness.example/w1").unwrap();
    let by_stranger = Cosigner::new(&stranger).unwrap().cosign(note.as_bytes(), 1);
    refused(
        &by_stranger.unwrap(),
        ErrorCode::InvalidRequest,
        "no cosignature",
    )
    .await;
    let altered = cosigned.replacen("\n", "\n1", 1);
    refused(&altered, ErrorCode::InvalidRequest, "not the log's latest").await;
    refused("junk", ErrorCode::InvalidRequest, "not a signed note").await;

    let served = api.post_cosignature(&cosigned).await.unwrap();
    assert_eq!(api.checkpoint().await.unwrap(), served);
    log.key.verify(served.as_bytes()).unwrap();
    let verifier = CosignatureVerifier::new(&log.witness.verifier_key()).unwrap();
    assert_eq!(verifier.verify(served.as_bytes()), Ok(1_700_000_000));

    // Once the log has grown and a newer checkpoint is signed, the old one is stale.
    ingest(later).await;
    let newer = api.sign_checkpoint().await.unwrap();
    let stale = api.post_cosignature(&cosigned).await.unwrap_err();
    assert!(
        stale.to_string().contains("no longer the latest"),
        "{stale}"
    );
    assert_eq!(code(stale), ErrorCode::InvalidState);
    assert_eq!(api.checkpoint().await.unwrap(), newer);
}
