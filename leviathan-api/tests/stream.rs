//! The SSE event stream: order, resumption with `Last-Event-ID`, keep-alives, and the typed
//! client's reconnection through a proxy whose connections are cut.

mod support;

use std::time::Duration;

use futures::StreamExt;
use leviathan_api::client::{ClientEventStream, ControlPlaneClient};
use reqwest::StatusCode;
use support::{Harness, Proxy, bundle, note};

/// Reads raw SSE text until `count` events arrived; returns (ids, whole text).
async fn read_events(response: reqwest::Response, count: usize) -> (Vec<u64>, String) {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut ids = Vec::new();
    while ids.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("the stream keeps delivering")
            .expect("the stream stays open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        ids = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
            .map(|id| id.trim().parse().unwrap())
            .collect();
    }
    (ids, text)
}

#[tokio::test]
async fn sse_delivers_in_order_then_follows_and_resumes_from_last_event_id() {
    let h = Harness::start().await;
    let first: Vec<_> = (1..=5).map(|i| note(&format!("s{i}"), i)).collect();
    h.ingest(&bundle("first", &first)).await;

    let response = h
        .http
        .get(h.url("/v1/events/stream"))
        .bearer_auth(support::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let writer = {
        let http = h.http.clone();
        let url = h.url("/v1/events/ingest");
        tokio::spawn(async move {
            for i in 6..=20u64 {
                let response = http
                    .post(&url)
                    .bearer_auth(support::TOKEN)
                    .json(&bundle(&format!("live-{i}"), &[note(&format!("s{i}"), i)]))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        })
    };
    let (ids, text) = read_events(response, 20).await;
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    let data: serde_json::Value =
        serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(data["seq"], 1);
    assert_eq!(data["event_id"], "s1");
    assert!(data["hash"].as_str().is_some());
    writer.await.unwrap();

    // A reconnecting client sends the last id it saw and gets only what followed.
    let resumed = h
        .http
        .get(h.url("/v1/events/stream"))
        .bearer_auth(support::TOKEN)
        .header("last-event-id", "17")
        .send()
        .await
        .unwrap();
    let (ids, _) = read_events(resumed, 3).await;
    assert_eq!(ids, [18, 19, 20]);

    // `after` works for a first connection; Last-Event-ID wins over it.
    let after = h
        .http
        .get(h.url("/v1/events/stream?after=19"))
        .bearer_auth(support::TOKEN)
        .send()
        .await
        .unwrap();
    let (ids, _) = read_events(after, 1).await;
    assert_eq!(ids, [20]);

    let bad = h
        .http
        .get(h.url("/v1/events/stream"))
        .bearer_auth(support::TOKEN)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn idle_streams_carry_keep_alives() {
    let h = Harness::start_with(|c| c.limits.stream_keep_alive = Duration::from_millis(20)).await;
    let response = h
        .http
        .get(h.url("/v1/events/stream"))
        .bearer_auth(support::TOKEN)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .expect("a keep-alive arrives")
        .unwrap()
        .unwrap();
    assert!(chunk.starts_with(b":"), "{chunk:?}");
}

#[tokio::test]
async fn closing_streams_ends_them_so_shutdown_can_complete() {
    let h = Harness::start().await;
    let response = h
        .http
        .get(h.url("/v1/events/stream"))
        .bearer_auth(support::TOKEN)
        .send()
        .await
        .unwrap();
    h.state.close_streams();
    let text = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the stream ends");
    assert!(text.is_ok());
}

async fn next(stream: &mut ClientEventStream) -> leviathan_core::Event {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("an event arrives")
        .expect("the stream is open")
        .expect("no error")
}

#[tokio::test]
async fn the_typed_client_reconnects_and_resumes_without_gaps() {
    let h = Harness::start().await;
    let proxy = Proxy::start(h.server.addr()).await;
    let client = ControlPlaneClient::new(&proxy.url, support::TOKEN)
        .unwrap()
        .with_retry(support::fast_retry());
    let first: Vec<_> = (1..=3).map(|i| note(&format!("r{i}"), i)).collect();
    h.ingest(&bundle("first", &first)).await;

    let mut stream = client.stream_events(1).await.unwrap();
    assert_eq!(next(&mut stream).await.seq, 2);
    assert_eq!(next(&mut stream).await.seq, 3);

    // The connection drops; events land meanwhile; the client resumes after seq 3.
    proxy.cut().await;
    let more: Vec<_> = (4..=8).map(|i| note(&format!("r{i}"), i)).collect();
    h.ingest(&bundle("more", &more)).await;
    for expected in 4..=8 {
        let event = next(&mut stream).await;
        assert_eq!(event.seq, expected);
        assert_eq!(event.event_id.as_str(), format!("r{expected}"));
    }
    proxy.cut().await;
    h.ingest(&bundle("last", &[note("r9", 9)])).await;
    assert_eq!(next(&mut stream).await.seq, 9);
}

#[tokio::test]
async fn a_stream_with_a_wrong_token_fails_at_once() {
    let h = Harness::start().await;
    let client = ControlPlaneClient::new(&h.server.url(), "wrong-token-0123456789")
        .unwrap()
        .with_retry(support::fast_retry());
    let err = client.stream_events(0).await.err().unwrap();
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_transient());
}
