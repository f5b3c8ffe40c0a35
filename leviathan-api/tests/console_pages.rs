//! The console's pages over HTTP on what the model gateway and the trusted delivery record: a
//! refused delivery and a spent budget need an operator, the proposal's patch is the attempt's
//! diff, and spend shows the calls' cost per day, target and model.

mod support;

use axum::Router;
use bytes::Bytes;
use leviathan_api::console::{self, ConsoleConfig};
use leviathan_core::{
    EventId, Expectations, NewEvent, Payload, Sha256Digest, Timestamp,
    catalogue::{BudgetExhausted, DeliveryRefused, DeliveryRequested, ModelCallCompleted},
    id::AttemptId,
    model::Priority,
    testkit::Scenario,
};
use leviathan_testkit::TestServer;
use support::{Harness, TOKEN, console_sign_in, ingest_request};

const PATCH: &str = "diff --git a/docs/a.md b/docs/a.md\n--- a/docs/a.md\n+++ b/docs/a.md\n@@ -1 +1 @@\n-old\n+<img src=x onerror=alert(1)>\n";

fn event<P: Payload>(id: &str, payload: &P) -> NewEvent {
    NewEvent::new(
        EventId::new(id).unwrap(),
        Timestamp::now(),
        Some("console-pages".into()),
        payload,
    )
}

fn attempt(id: &str) -> AttemptId {
    AttemptId::new(id).unwrap()
}

fn call(id: &str, attempt_id: &str, cost_usd: Option<f64>) -> NewEvent {
    event(
        id,
        &ModelCallCompleted {
            attempt_id: attempt(attempt_id),
            model: "claude-test-1".into(),
            provider: Some("anthropic".into()),
            tokens_in: 1000,
            tokens_out: 200,
            prompt_sha256: Sha256Digest::of(b"prompt"),
            response_sha256: Sha256Digest::of(b"answer"),
            round: 0,
            duration_ms: Some(900),
            target_id: None,
            cost_usd,
            prices_as_of: cost_usd.map(|_| "2026-01-01".into()),
        },
    )
}

/// Target `demo`: `a1` proposed a patch that was refused, `a2` ran out of its day's budget,
/// `a3` made three model calls (two priced).
async fn seed(h: &Harness) {
    let mut s = Scenario::new("pages", "demo");
    s.register_target();
    for (task, attempt) in [("t1", "a1"), ("t2", "a2"), ("t3", "a3")] {
        s.create_task(task, &[], Priority::High)
            .start_attempt(task, attempt, 1);
    }
    let patch = Sha256Digest::of(PATCH.as_bytes());
    let client = h.client();
    client
        .put_artifact(&patch, Bytes::from_static(PATCH.as_bytes()))
        .await
        .unwrap();
    let mut events = s.build();
    events.push(event(
        "proposal-a1",
        &DeliveryRequested {
            attempt_id: attempt("a1"),
            base: "0123456789abcdef0123456789abcdef01234567".into(),
            patch_sha256: patch,
            files_changed: 1,
            message_sha256: None,
        },
    ));
    events.push(event(
        "refused-a1",
        &DeliveryRefused {
            attempt_id: attempt("a1"),
            reason: "touches <b>.github/workflows</b>, outside the allowed paths".into(),
        },
    ));
    events.push(call("call-1", "a3", Some(0.42)));
    events.push(call("call-2", "a3", Some(0.08)));
    events.push(call("call-3", "a3", None));
    client
        .ingest(&ingest_request("pages", events))
        .await
        .unwrap();
    // Only the control plane records a spent budget (the gateway does); straight to its ledger.
    let spent = event(
        "budget-a2",
        &BudgetExhausted {
            scope: "target:demo:2026-01-02".into(),
            resource: "usd".into(),
            limit: 5.0,
            spent: 5.25,
            attempt_id: attempt("a2"),
            target_id: None,
        },
    );
    h.state
        .control_plane()
        .ledger()
        .ingest(vec![spent], Expectations::Derived)
        .await
        .unwrap();
}

/// The console at `/ui` of a harness with [`seed`]'s log, and a signed-in admin's page getter.
async fn pages() -> (Harness, TestServer, impl AsyncFn(&str) -> String) {
    let h = Harness::start().await;
    seed(&h).await;
    let ui = Router::new().nest(
        "/ui",
        console::router(h.state.clone(), ConsoleConfig::default()),
    );
    let server = TestServer::spawn(ui).await.unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = console_sign_in(&http, &server.url(), TOKEN).await;
    let base = server.url();
    let get = async move |path: &str| {
        let response = http
            .get(format!("{base}/ui{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.unwrap()
    };
    (h, server, get)
}

#[tokio::test]
async fn refused_deliveries_spent_budgets_proposals_and_costs_show() {
    let (_h, _server, get) = pages().await;

    let overview = get("").await;
    let needs = &overview[overview.find("class=\"needs\"").unwrap()..];
    let needs = &needs[..needs.find("class=\"running\"").unwrap()];
    assert!(
        needs.contains("Delivery refused")
            && needs.contains("href=\"/ui/attempts/a1\"")
            && needs.contains(
                "touches &lt;b&gt;.github/workflows&lt;/b&gt;, outside the allowed paths"
            ),
        "{needs}"
    );
    assert!(
        needs.contains("Budget spent")
            && needs.contains("href=\"/ui/attempts/a2\"")
            && needs.contains("usd of target:demo:2026-01-02 (spent 5.25 of 5)"),
        "{needs}"
    );
    assert!(!needs.contains("/ui/attempts/a3"), "{needs}");

    let a1 = get("/attempts/a1").await;
    assert!(a1.contains("1 files: <code>docs/a.md</code>"), "{a1}");
    assert!(
        a1.contains("<span class=\"add\">+&lt;img src=x onerror=alert(1)&gt;</span>"),
        "{a1}"
    );
    assert!(
        a1.contains("delivery.refused"),
        "the answer is among its events"
    );

    let spend = get("/spend").await;
    assert!(spend.contains("Cost in USD per day"), "{spend}");
    let row = &spend[spend
        .find("<td>claude-test-1</td>")
        .expect("a row per model")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("<td>3</td>") && row.contains("$0.50") && row.contains("(1 unpriced)"),
        "{row}"
    );
    assert!(spend.contains(">$0.50<"), "the chart's scale: {spend}");
}
