//! The console's pages served over HTTP with 100 000 events in the log, next to a raw floor:
//! the JSON API's page of 100 events from the same server (`GET /v1/events`). The issue's bound
//! is 200 ms per page.
//!
//! ```sh
//! cargo bench -p leviathan-api --bench console
//! ```

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use leviathan_api::{
    ApiConfig, ApiState, BearerToken,
    console::{self, ConsoleConfig},
    router,
};
use leviathan_core::{
    AppendRequest, EventStore, Ledger,
    memory::{MemoryArtifactStore, MemoryEventStore, MemoryGraphStore},
    testkit::lifecycle,
};
use leviathan_testkit::TestServer;
use tokio::runtime::Runtime;

const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";
/// Tasks of the lifecycle fixture: about 22 events each, 100 000 in all.
const TASKS: usize = 4_600;

/// A served control plane and console over a memory log of about 100 000 events.
async fn served() -> (TestServer, u64) {
    let events = Arc::new(MemoryEventStore::new());
    let all = lifecycle("bench", "bench", TASKS);
    for chunk in all.chunks(1000) {
        events
            .append(AppendRequest::new(chunk.to_vec()))
            .await
            .expect("append");
    }
    let head = events.head().await.expect("head").map_or(0, |h| h.seq);
    let ledger = Ledger::open(events, Arc::new(MemoryGraphStore::new()))
        .await
        .expect("ledger");
    ledger.catch_up().await.expect("fold");
    let config = ApiConfig::new(BearerToken::new(TOKEN).expect("token"));
    let state = ApiState::new(
        Arc::new(ledger),
        Arc::new(MemoryArtifactStore::new()),
        config,
    );
    let app = axum::Router::new()
        .nest(
            "/ui",
            console::router(state.clone(), ConsoleConfig::default()),
        )
        .merge(router(state));
    (TestServer::spawn(app).await.expect("server"), head)
}

/// Signs in with the admin token and returns the session cookie.
async fn session(http: &reqwest::Client, url: &str) -> String {
    let response = http
        .post(format!("{url}/ui/sign-in"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("sign in");
    let cookie = response.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .expect("cookie");
    cookie.split(';').next().expect("name=value").to_owned()
}

fn pages(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let (server, head) = rt.block_on(served());
    let url = server.url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cookie = rt.block_on(session(&http, &url));
    let mut group = c.benchmark_group(format!("console_{head}_events"));
    group.sample_size(20);
    group.bench_function("floor: GET /v1/events (100, JSON)", |b| {
        b.to_async(&rt).iter(|| async {
            let r = http
                .get(format!("{url}/v1/events?after={}&limit=100", head - 100))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("page");
            assert!(r.status().is_success());
            r.bytes().await.expect("body")
        });
    });
    let middle = TASKS / 2;
    let paths = [
        "/ui".to_owned(),
        "/ui/events".to_owned(),
        "/ui/events?type=pr.merged".to_owned(),
        format!("/ui/events?seq={}", head / 2),
        format!("/ui/attempts/attempt-{middle:05}-b"),
        "/ui/tasks".to_owned(),
        "/ui/failures".to_owned(),
        "/ui/pulls?state=all".to_owned(),
        "/ui/spend".to_owned(),
        "/ui/chain".to_owned(),
    ];
    for path in paths {
        group.bench_function(format!("GET {path}"), |b| {
            b.to_async(&rt).iter(|| async {
                let r = http
                    .get(format!("{url}{path}"))
                    .header(reqwest::header::COOKIE, &cookie)
                    .send()
                    .await
                    .expect("page");
                assert!(r.status().is_success(), "{path}: {}", r.status());
                r.bytes().await.expect("body")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
