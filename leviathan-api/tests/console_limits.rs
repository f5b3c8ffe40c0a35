//! The console is held to the same limits as the API: a signed-in token's pages count against
//! its request rate, and "Verify now" is work any reader could otherwise repeat at will.

mod support;

use axum::{Router, http::StatusCode};
use leviathan_api::{
    console::{self, ConsoleConfig},
    wire::CreateTokenRequest,
};
use leviathan_core::auth::Role;
use leviathan_testkit::TestServer;
use support::{Harness, console_sign_in as sign_in};

#[tokio::test]
async fn console_pages_count_against_the_tokens_request_rate() {
    let h = Harness::start_with(|c| {
        c.limits.requests_per_second_per_principal = 1;
        c.limits.request_burst_per_principal = 3;
    })
    .await;
    let ui = Router::new().nest(
        "/ui",
        console::router(h.state.clone(), ConsoleConfig::default()),
    );
    let server = TestServer::spawn(ui).await.unwrap();
    let request = CreateTokenRequest {
        role: Role::Reader,
        ttl_seconds: None,
        name: Some("browser".into()),
    };
    let reader = h.client().create_token(&request).await.unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = sign_in(&http, &server.url(), &reader.token).await;
    // A burst of three refilled at one a second: a run of page loads soon finds it empty.
    let mut admitted = 0;
    let refused = loop {
        let response = http
            .get(format!("{}/ui/tasks", server.url()))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break response;
        }
        assert_eq!(response.status(), StatusCode::OK);
        admitted += 1;
        assert!(admitted < 100, "the rate limit never refused a page");
    };
    assert!(admitted >= 3, "the burst is admitted ({admitted})");
    assert_eq!(refused.headers()["retry-after"], "1");
    let page = refused.text().await.unwrap();
    assert!(page.contains("over its request rate"), "{page}");
    let api = h
        .http
        .get(h.url("/v1/graph/summary"))
        .bearer_auth(&reader.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        api.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the console and the API draw on one budget per token"
    );
}
