//! The typed client against a real control plane (every route), and its retry policy against a
//! server that fails on purpose.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use bytes::Bytes;
use leviathan_api::{
    ErrorCode,
    client::{ClientError, ControlPlaneClient, RetryPolicy},
    wire::{AttemptsQuery, BundleArtifact, ChainVerification, FailuresQuery, IngestRequest},
};
use leviathan_core::{
    Sha256Digest, StreamId,
    id::{AttemptId, EventId, TargetId},
    model::AttemptStatus,
    testkit::lifecycle,
};
use leviathan_testkit::TestServer;
use serde_json::json;
use support::{Harness, note};

fn request(bundle_id: &str, events: Vec<leviathan_core::NewEvent>) -> IngestRequest {
    IngestRequest {
        target: "demo".into(),
        bundle_id: bundle_id.into(),
        events,
        artifacts: Vec::new(),
        expectations: Vec::new(),
    }
}

#[tokio::test]
async fn every_route_through_the_typed_client() {
    let h = Harness::start().await;
    let client = h.client();

    assert_eq!(client.health().await.unwrap().status, "ok");
    assert_eq!(client.ready().await.unwrap().head, None);

    let log = b"tests passed\n".to_vec();
    let sha = Sha256Digest::of(&log);
    client
        .put_artifact(&sha, Bytes::from(log.clone()))
        .await
        .unwrap();
    client
        .put_artifact(&sha, Bytes::from(log.clone()))
        .await
        .unwrap();
    assert_eq!(client.get_artifact(&sha).await.unwrap(), log);
    let err = client
        .put_artifact(&Sha256Digest::of(b"other"), Bytes::from(log.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(422), Some(ErrorCode::DigestMismatch))
    );
    let missing = client
        .get_artifact(&Sha256Digest::of(b"nope"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::ArtifactNotFound));

    let events = lifecycle("cl", "demo", 2);
    let mut bundle = request("bundle-cl", events.clone());
    bundle.artifacts.push(BundleArtifact {
        sha256: sha,
        kind: "test_output".into(),
        uri: format!("/v1/artifacts/{sha}"),
        size: log.len() as u64,
        name: Some("tests.txt".into()),
    });
    let answer = client.ingest(&bundle).await.unwrap();
    assert_eq!(
        (answer.status.as_str(), answer.ingested),
        ("ok", events.len() as u64)
    );
    let again = client.ingest(&bundle).await.unwrap();
    assert_eq!(
        (again.status.as_str(), again.duplicates),
        ("duplicate", events.len() as u64)
    );

    let summary = client.graph_summary().await.unwrap();
    assert_eq!(summary.attempts_by_status["succeeded"], 2);

    let page = client
        .attempts(&AttemptsQuery {
            target: Some(TargetId::new("demo").unwrap()),
            status: Some(AttemptStatus::Succeeded),
            limit: Some(1),
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(page.attempts[0].attempt_id.as_str(), "attempt-00001-b");
    let rest = client
        .attempts(&AttemptsQuery {
            status: Some(AttemptStatus::Succeeded),
            cursor: page.next_cursor,
            ..AttemptsQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.attempts[0].attempt_id.as_str(), "attempt-00000-b");
    assert_eq!(rest.next_cursor, None);

    let id = AttemptId::new("attempt-00000-b").unwrap();
    let detail = client.attempt(&id).await.unwrap();
    assert_eq!(detail.attempt.attempt_id, id);
    assert_eq!(detail.pull_request.unwrap().number, 1);
    let unknown = client
        .attempt(&AttemptId::new("attempt-zz").unwrap())
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(404));

    let failures = client.failures(&FailuresQuery::default()).await.unwrap();
    assert_eq!((failures.count, failures.next_cursor), (2, None));
    let first = client
        .failures(&FailuresQuery {
            limit: Some(1),
            ..FailuresQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(first.failures[0].attempt_id.as_str(), "attempt-00001-a");
    assert!(first.next_cursor.is_some(), "a full page has a cursor");
    let second = client
        .failures(&FailuresQuery {
            limit: Some(1),
            cursor: first.next_cursor,
            ..FailuresQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(second.failures[0].attempt_id.as_str(), "attempt-00000-a");
    assert_eq!(second.next_cursor, None);

    let invalidated = client.invalidate(&id, "reverted by hand").await.unwrap();
    assert_eq!(invalidated.event.actor_id.as_deref(), Some("operator"));
    assert!(!invalidated.duplicate);
    let twice = client.invalidate(&id, "again").await.unwrap_err();
    assert_eq!(
        (twice.status(), twice.code()),
        (Some(409), Some(ErrorCode::InvalidState))
    );

    let head = client.head().await.unwrap().unwrap();
    assert_eq!(head.seq, events.len() as u64 + 1);
    let page = client.events_page(head.seq - 3, 2).await.unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.next_after, Some(head.seq - 1));
    let first = client.event(&events[0].event_id).await.unwrap().unwrap();
    assert_eq!(first.seq, 1);
    assert!(
        client
            .event(&EventId::new("absent").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let found = client
        .find_events(&[events[3].event_id.clone(), events[1].event_id.clone()])
        .await
        .unwrap();
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 4]);
    let version = client
        .stream_version(&StreamId::from_raw("task:demo/task-00000"))
        .await
        .unwrap();
    assert!(version >= 3, "{version}");

    match client.verify_chain().await.unwrap() {
        ChainVerification::Verified(report) => assert_eq!(report.head, Some(head)),
        ChainVerification::Broken(b) => panic!("{b}"),
    }
    let metrics = client.metrics().await.unwrap();
    assert!(metrics.contains("leviathan_attempts{status=\"invalidated\"} 1"));
}

#[tokio::test]
async fn a_retried_invalidation_is_answered_once() {
    let h = Harness::start().await;
    let client = h.client();
    client
        .ingest(&request("b", lifecycle("ri", "demo", 1)))
        .await
        .unwrap();
    // The same request twice (as a retry after a lost answer would send it).
    let body = json!({"reason": "flaky", "event_id": "invalidate-once"});
    let (status, first) = h
        .post("/v1/attempts/attempt-00000-b/invalidate", &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, second) = h
        .post("/v1/attempts/attempt-00000-b/invalidate", &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["event"], first["event"]);
    let (status, other) = h
        .post("/v1/attempts/attempt-00000-a/invalidate", &body)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(other["error"]["code"], "event_conflict");
}

#[tokio::test]
async fn refusals_carry_code_message_and_details() {
    let h = Harness::start().await;
    let client = h.client();
    let mut bad = note("bad", 1);
    bad.event_type = "attempt.succeeded".into();
    bad.payload = json!({"attempt_id": "a1", "branch": "agent/x", "commit_sha": "abc", "pr_number": 1, "pr_url": "https://x"});
    let err = client
        .ingest(&request("bad", vec![note("ok", 0), bad]))
        .await
        .unwrap_err();
    match &err {
        ClientError::Status {
            status,
            code,
            details,
            ..
        } => {
            assert_eq!((*status, *code), (422, Some(ErrorCode::ValidationFailed)));
            assert_eq!(details[0]["index"], 1);
            assert_eq!(details[0]["field"], "commit_sha");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());
    assert!(!err.to_string().contains(support::TOKEN));
}

/// A server that answers `failures` times with `status` before answering like an ingest.
async fn flaky(status: StatusCode, failures: u32) -> (TestServer, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/v1/events/ingest",
        post(move |headers: HeaderMap| {
            let counter = counter.clone();
            async move {
                assert_eq!(
                    headers["authorization"],
                    format!("Bearer {}", support::TOKEN)
                );
                let n = counter.fetch_add(1, Ordering::SeqCst);
                if n < failures {
                    let mut response = (
                        status,
                        axum::Json(json!({"error": {"code": "store_unavailable", "message": "busy"}})),
                    )
                        .into_response();
                    response.headers_mut().insert("retry-after", "0".parse().unwrap());
                    return response;
                }
                axum::Json(json!({"status": "ok", "bundle_id": "b", "ingested": 1, "duplicates": 0, "head": null}))
                    .into_response()
            }
        }),
    );
    (TestServer::spawn(router).await.unwrap(), calls)
}

#[tokio::test]
async fn transient_answers_are_retried_until_they_succeed() {
    for status in [
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::BAD_GATEWAY,
    ] {
        let (server, calls) = flaky(status, 2).await;
        let client = ControlPlaneClient::new(&server.url(), support::TOKEN)
            .unwrap()
            .with_retry(support::fast_retry());
        let answer = client
            .ingest(&request("b", vec![note("n", 1)]))
            .await
            .unwrap();
        assert_eq!(answer.ingested, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "{status}");
    }
}

/// A real server asks for 30 s with `Retry-After`; the policy's own sleeps are at most 50 ms, so
/// the second try coming 30 s (of tokio's paused clock) after the first is the header's doing.
#[tokio::test(start_paused = true)]
async fn retry_after_from_a_real_server_is_honoured() {
    let tries = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = tries.clone();
    let router = Router::new().route(
        "/v1/events/ingest",
        post(move || {
            let seen = seen.clone();
            async move {
                let mut tries = seen.lock().unwrap();
                tries.push(tokio::time::Instant::now());
                if tries.len() == 1 {
                    let busy = json!({"error": {"code": "store_unavailable", "message": "busy"}});
                    let mut response =
                        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(busy)).into_response();
                    response.headers_mut().insert("retry-after", "30".parse().unwrap());
                    return response;
                }
                axum::Json(json!({"status": "ok", "bundle_id": "b", "ingested": 1, "duplicates": 0, "head": null}))
                    .into_response()
            }
        }),
    );
    let server = TestServer::spawn(router).await.unwrap();
    let client = ControlPlaneClient::new(&server.url(), support::TOKEN)
        .unwrap()
        .with_retry(support::fast_retry());
    let answer = client.ingest(&request("b", vec![note("n", 1)])).await;
    assert_eq!(answer.unwrap().ingested, 1);
    let tries = tries.lock().unwrap().clone();
    assert_eq!(tries.len(), 2);
    let waited = tries[1] - tries[0];
    assert!(waited >= Duration::from_secs(30), "waited {waited:?}");
    assert!(waited < Duration::from_secs(31), "waited {waited:?}");
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_permanent_errors_are_not_retried() {
    let (server, calls) = flaky(StatusCode::SERVICE_UNAVAILABLE, 100).await;
    let client = ControlPlaneClient::new(&server.url(), support::TOKEN)
        .unwrap()
        .with_retry(RetryPolicy {
            max_attempts: 3,
            ..support::fast_retry()
        });
    let err = client
        .ingest(&request("b", vec![note("n", 1)]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::ZERO));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let (server, calls) = flaky(StatusCode::UNPROCESSABLE_ENTITY, 100).await;
    let client = ControlPlaneClient::new(&server.url(), support::TOKEN)
        .unwrap()
        .with_retry(support::fast_retry());
    let err = client
        .ingest(&request("b", vec![note("n", 1)]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_failures_are_transient_and_name_the_endpoint() {
    // Bind then drop a listener: nothing listens on that port afterwards.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = ControlPlaneClient::new(&format!("http://{addr}"), support::TOKEN)
        .unwrap()
        .with_retry(RetryPolicy {
            max_attempts: 2,
            ..support::fast_retry()
        });
    let err = client.head().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("GET /v1/events/head"), "{err}");
    assert!(!format!("{err:?}").contains(support::TOKEN));
}

#[tokio::test]
async fn non_api_error_bodies_are_reported_with_an_excerpt() {
    let router = Router::new().route(
        "/v1/events/head",
        get(|| async { (StatusCode::FORBIDDEN, "<html>denied by proxy</html>") }),
    );
    let server = TestServer::spawn(router).await.unwrap();
    let client = ControlPlaneClient::new(&server.url(), support::TOKEN).unwrap();
    let err = client.head().await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), None));
    assert!(err.to_string().contains("HTTP 403 http_403"), "{err}");
    assert!(err.to_string().contains("denied by proxy"), "{err}");
}

#[tokio::test]
async fn downloaded_artifacts_are_checked_against_their_digest() {
    let sha = Sha256Digest::of(b"expected");
    let router = Router::new().route(
        &format!("/v1/artifacts/{sha}"),
        get(|| async { "tampered in transit" }),
    );
    let server = TestServer::spawn(router).await.unwrap();
    let client = ControlPlaneClient::new(&server.url(), support::TOKEN).unwrap();
    let err = client.get_artifact(&sha).await.unwrap_err();
    assert!(matches!(err, ClientError::DigestMismatch { .. }), "{err:?}");
}
