//! A control plane on memory stores served on 127.0.0.1, and helpers to talk to it raw.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use leviathan_api::{
    ApiConfig, ApiState, BearerToken,
    client::{ControlPlaneClient, RetryPolicy},
    router,
    wire::IngestRequest,
};
use leviathan_core::{
    EventStore, Ledger, NewEvent,
    memory::{MemoryArtifactStore, MemoryEventStore, MemoryGraphStore},
    model::Priority,
    testkit::Scenario,
};
use leviathan_testkit::TestServer;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

pub(crate) const TOKEN: &str = "test-token-0123456789abcdef";

/// How a raw request authenticates.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Auth {
    Token,
    None,
    Wrong,
}

pub(crate) struct Harness {
    pub(crate) server: TestServer,
    pub(crate) state: ApiState,
    pub(crate) events: MemoryEventStore,
    pub(crate) artifacts: MemoryArtifactStore,
    pub(crate) http: reqwest::Client,
}

impl Harness {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(configure: impl FnOnce(&mut ApiConfig)) -> Self {
        let events = MemoryEventStore::new();
        Self::start_on(events.clone(), Arc::new(events), configure).await
    }

    /// A control plane whose log is `log` (e.g. a wrapper of `events` that injects faults).
    pub(crate) async fn start_on(
        events: MemoryEventStore,
        log: Arc<dyn EventStore>,
        configure: impl FnOnce(&mut ApiConfig),
    ) -> Self {
        let artifacts = MemoryArtifactStore::new();
        let ledger = Ledger::open(log, Arc::new(MemoryGraphStore::new()))
            .await
            .unwrap();
        let mut config = ApiConfig::new(BearerToken::new(TOKEN).unwrap());
        configure(&mut config);
        let state = ApiState::new(Arc::new(ledger), Arc::new(artifacts.clone()), config);
        let server = TestServer::spawn(router(state.clone())).await.unwrap();
        Self {
            server,
            state,
            events,
            artifacts,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// A typed client with fast retries.
    pub(crate) fn client(&self) -> ControlPlaneClient {
        ControlPlaneClient::new(&self.server.url(), TOKEN)
            .unwrap()
            .with_retry(fast_retry())
    }

    pub(crate) async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        auth: Auth,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = self.http.request(method, self.url(path));
        request = match auth {
            Auth::Token => request.bearer_auth(TOKEN),
            Auth::Wrong => request.bearer_auth("wrong-token-0123456789abcdef"),
            Auth::None => request,
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        (status, headers, body)
    }

    /// An authenticated JSON request; the answer parsed as JSON.
    pub(crate) async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        let (status, headers, bytes) = self.raw(method, path, body, Auth::Token).await;
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{path} answered {status} with content type {content_type:?}"
        );
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.json(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.json(Method::POST, path, Some(body)).await
    }

    pub(crate) async fn ingest(&self, bundle: &Value) -> (StatusCode, Value) {
        self.post("/v1/events/ingest", bundle).await
    }

    pub(crate) async fn head_seq(&self) -> u64 {
        self.events.head().await.unwrap().map_or(0, |h| h.seq)
    }
}

pub(crate) fn fast_retry() -> RetryPolicy {
    RetryPolicy::new(5, Duration::from_millis(5), Duration::from_millis(50))
}

/// A bundle in the wire shape.
pub(crate) fn bundle(bundle_id: &str, events: &[NewEvent]) -> Value {
    json!({
        "target": "demo",
        "bundle_id": bundle_id,
        "events": events,
        "artifacts": [],
    })
}

/// A target with one task, a failed and a successful attempt (attempt ids are global, so each
/// target gets its own).
pub(crate) fn attempts_of_target(i: usize) -> Vec<NewEvent> {
    let (a, b) = (format!("attempt-{i}-a"), format!("attempt-{i}-b"));
    let mut s = Scenario::new(&format!("c{i}"), &format!("target-{i}"));
    s.register_target()
        .create_task("t", &[], Priority::High)
        .start_attempt("t", &a, 1)
        .fail_attempt("t", &a, 2)
        .start_attempt("t", &b, 2)
        .succeed_attempt("t", &b, 1);
    s.build()
}

/// An event outside the catalogue.
pub(crate) fn note(id: &str, n: u64) -> NewEvent {
    serde_json::from_value(json!({
        "event_id": id,
        "event_type": "note.added",
        "timestamp": "2026-01-28T12:00:00Z",
        "actor_id": "tests",
        "payload": {"n": n},
    }))
    .unwrap()
}

/// Asserts the JSON error shape and returns the code.
pub(crate) fn error_code(body: &Value) -> &str {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`, whose open connections can be cut.
pub(crate) struct Proxy {
    pub(crate) url: String,
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Proxy {
    pub(crate) async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let set = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                set.lock().await.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            url,
            accept,
            connections,
        }
    }

    /// Drops every open connection (new ones are still accepted).
    pub(crate) async fn cut(&self) {
        self.connections.lock().await.abort_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A typed ingest request of `events` for target `demo`.
pub(crate) fn ingest_request(id: &str, events: Vec<NewEvent>) -> IngestRequest {
    IngestRequest {
        target: "demo".into(),
        bundle_id: id.into(),
        events,
        artifacts: vec![],
        expectations: vec![],
    }
}

/// Records through `h`'s API target `demo` with tasks `t1` and `t2`, running attempts `a1` and
/// `a2` (`seed` names the scenario's events).
pub(crate) async fn seed_running_attempts(h: &Harness, seed: &str, a1: &str, a2: &str) {
    let mut s = Scenario::new(seed, "demo");
    s.register_target()
        .create_task("t1", &[], Priority::High)
        .create_task("t2", &[], Priority::High)
        .start_attempt("t1", a1, 1)
        .start_attempt("t2", a2, 1);
    h.client()
        .ingest(&ingest_request("setup", s.build()))
        .await
        .unwrap();
}

/// Signs `token` in to the console at `base` and returns the session's `Cookie` header.
pub(crate) async fn console_sign_in(http: &reqwest::Client, base: &str, token: &str) -> String {
    let response = http
        .post(format!("{base}/ui/sign-in"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "signed in");
    let cookie = response
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap();
    cookie.split(';').next().unwrap().to_owned()
}
