//! Every route over real HTTP on 127.0.0.1, with raw requests, so that statuses, headers and
//! bodies are checked exactly as a client sees them.

mod support;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use leviathan_api::wire::{CreateTokenRequest, Role};
use leviathan_core::{
    AppendReceipt, AppendRequest, Event, EventStore, EventStoreError, Head, Sha256Digest, StreamId,
    id::EventId,
    memory::MemoryEventStore,
    model::Priority,
    store::EventStream,
    testkit::{Scenario, lifecycle},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Auth, Harness, attempts_of_target, bundle, error_code, note};

#[tokio::test]
async fn healthz_and_readyz_are_open() {
    let h = Harness::start().await;
    let (status, _, body) = h.raw(Method::GET, "/healthz", None, Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"status": "ok"})
    );
    let (status, _, body) = h.raw(Method::GET, "/readyz", None, Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["status"],
        "ready"
    );
}

#[tokio::test]
async fn every_protected_route_requires_the_token_and_says_nothing_else() {
    let h = Harness::start().await;
    let sha = Sha256Digest::of(b"x");
    let routes: Vec<(Method, String)> = vec![
        (Method::POST, "/v1/events/ingest".into()),
        (Method::GET, "/v1/events".into()),
        (Method::GET, "/v1/events/stream".into()),
        (Method::GET, "/v1/events/head".into()),
        (Method::GET, "/v1/events/by-id/e1".into()),
        (Method::POST, "/v1/events/find".into()),
        (Method::GET, "/v1/streams/task:demo%2Fx".into()),
        (Method::GET, "/v1/graph/summary".into()),
        (Method::GET, "/v1/attempts".into()),
        (Method::GET, "/v1/attempts/attempt-1".into()),
        (Method::POST, "/v1/attempts/attempt-1/invalidate".into()),
        (Method::POST, "/v1/attempts/attempt-1/cancel".into()),
        (Method::GET, "/v1/failures".into()),
        (Method::PUT, format!("/v1/artifacts/{sha}")),
        (Method::GET, format!("/v1/artifacts/{sha}")),
        (Method::GET, "/v1/chain/verify".into()),
        (Method::GET, "/v1/no-such-route".into()),
        (Method::GET, "/no-such-route".into()),
        (Method::DELETE, "/v1/graph/summary".into()),
    ];
    let mut bodies = BTreeSet::new();
    for (method, path) in routes {
        for auth in [Auth::None, Auth::Wrong] {
            let (status, headers, body) = h
                .raw(method.clone(), &path, Some(b"{}".to_vec()), auth)
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
            assert_eq!(headers["www-authenticate"], "Bearer");
            assert_eq!(headers["content-type"], "application/json");
            bodies.insert(body);
        }
    }
    assert_eq!(bodies.len(), 1, "every 401 is the same answer");
    let body: Value = serde_json::from_slice(bodies.first().unwrap()).unwrap();
    assert_eq!(error_code(&body), "unauthorized");

    // Other schemes and a token with a different case are refused too.
    for value in [
        format!("Basic {}", support::TOKEN),
        format!("Bearer {}", support::TOKEN.to_uppercase()),
        "Bearer".to_owned(),
    ] {
        let response = h
            .http
            .get(h.url("/v1/graph/summary"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(h.head_seq().await, 0);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let h = Harness::start().await;
    let (status, body) = h.get("/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, headers, body) = h
        .raw(Method::DELETE, "/v1/graph/summary", None, Auth::Token)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers.get("allow").is_some(), "{headers:?}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error_code(&body), "method_not_allowed");
    let (status, _, body) = h.raw(Method::POST, "/healthz", None, Auth::None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        error_code(&serde_json::from_slice(&body).unwrap()),
        "method_not_allowed"
    );
}

#[tokio::test]
async fn ingest_appends_a_realistic_bundle_and_reports_the_head() {
    let h = Harness::start().await;
    let events = lifecycle("ing", "demo", 2);
    let (status, body) = h.ingest(&bundle("bundle-1", &events)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["bundle_id"], "bundle-1");
    assert_eq!(body["ingested"], events.len());
    assert_eq!(body["duplicates"], 0);
    let head = h.events.head().await.unwrap().unwrap();
    assert_eq!(body["head"]["seq"], head.seq);
    assert_eq!(body["head"]["hash"], head.hash.to_hex());
    assert_eq!(head.seq, events.len() as u64);

    let (status, summary) = h.get("/v1/graph/summary").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["attempts_by_status"]["succeeded"], 2);
    assert_eq!(summary["attempts_by_status"]["failed"], 2);
    assert_eq!(summary["checkpoint"]["seq"], head.seq);
}

#[tokio::test]
async fn a_repeated_bundle_is_a_duplicate_and_appends_nothing() {
    let h = Harness::start().await;
    let events = lifecycle("dup", "demo", 1);
    let (status, first) = h.ingest(&bundle("bundle-dup", &events)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = h.ingest(&bundle("bundle-dup", &events)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["ingested"], 0);
    assert_eq!(again["duplicates"], events.len());
    assert_eq!(again["head"], first["head"]);
    // Half old, half new: the new half is appended, the old half reported.
    let mut more = Scenario::new("dup-more", "other");
    more.register_target()
        .create_task("t1", &[], Priority::High);
    let mut mixed = events[..3].to_vec();
    mixed.extend(more.build());
    let (status, body) = h.ingest(&bundle("bundle-mixed", &mixed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["ingested"].as_u64(), body["duplicates"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(h.head_seq().await, events.len() as u64 + 2);
}

#[tokio::test]
async fn a_bundle_id_names_one_content() {
    let h = Harness::start().await;
    let first = [note("b1-a", 1), note("b1-b", 2)];
    let (status, body) = h.ingest(&bundle("bundle-one", &first)).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ok")));
    let (status, again) = h.ingest(&bundle("bundle-one", &first)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "duplicate");

    // Other events, other target, the same events in another order: other content.
    let others = [
        bundle("bundle-one", &[note("b1-a", 1), note("b1-c", 3)]),
        json!({"target": "elsewhere", "bundle_id": "bundle-one", "events": first}),
        bundle("bundle-one", &[note("b1-b", 2), note("b1-a", 1)]),
    ];
    for other in &others {
        let (status, answer) = h.ingest(other).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(error_code(&answer), "bundle_conflict");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("`bundle-one`"), "{message}");
    }
    assert_eq!(h.head_seq().await, 2, "nothing appended");
    assert!(
        h.events
            .get(&note("b1-c", 3).event_id)
            .await
            .unwrap()
            .is_none()
    );

    // A refused bundle binds nothing: its id carries other content next.
    let stray = json!({
        "event_id": "stray", "event_type": "attempt.started", "timestamp": "2026-01-28T12:00:00Z",
        "payload": {"attempt_id": "attempt-unknown"}
    });
    let refused = json!({"target": "demo", "bundle_id": "bundle-two", "events": [stray]});
    let (status, _) = h.ingest(&refused).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = h.ingest(&bundle("bundle-two", &[note("b2", 4)])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.head_seq().await, 3);
}

#[tokio::test]
async fn malformed_json_is_a_400_that_says_where() {
    let h = Harness::start().await;
    let (status, _, body) = h
        .raw(
            Method::POST,
            "/v1/events/ingest",
            Some(b"{\"target\": \"demo\",\n \"bundle_id\": \"b\",\n \"events\": [}".to_vec()),
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error_code(&body), "malformed_json");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 3, column 13"), "{message}");

    let (status, body) = h
        .post("/v1/events/ingest", &json!({"target": "demo"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bundle_id"),
        "{body}"
    );
    assert_eq!(h.head_seq().await, 0);
}

#[tokio::test]
async fn integers_that_cannot_be_stored_exactly_are_refused() {
    let h = Harness::start().await;
    let raw = br#"{"target":"demo","bundle_id":"b","events":[{"event_id":"big","event_type":"note.added","timestamp":"2026-01-28T12:00:00Z","payload":{"n":123456789012345678901234567890}}]}"#;
    let (status, _, body) = h
        .raw(
            Method::POST,
            "/v1/events/ingest",
            Some(raw.to_vec()),
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error_code(&body), "inexact_number");
    assert_eq!(h.head_seq().await, 0);
}

#[tokio::test]
async fn unknown_event_types_are_kept() {
    let h = Harness::start().await;
    let (status, body) = h
        .ingest(&bundle("b", &[note("n1", 1), note("n2", 2)]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ingested"], 2);
    let (_, page) = h.get("/v1/events?after=0&limit=10").await;
    assert_eq!(page["events"][1]["event_type"], "note.added");
    assert_eq!(page["events"][1]["payload"], json!({"n": 2}));
}

#[tokio::test]
async fn a_bundle_with_invalid_events_is_refused_whole_with_one_reason_each() {
    let h = Harness::start().await;
    let mut events = vec![serde_json::to_value(note("fine", 1)).unwrap()];
    events.push(json!({
        "event_id": "bad-pr", "event_type": "pr.created", "timestamp": "2026-01-28T12:00:00Z",
        "payload": {"attempt_id": "attempt-1", "pr_number": 0, "pr_url": "https://x/pull/0"}
    }));
    events.push(json!({
        "event_id": "bad-ts", "event_type": "note.added", "timestamp": "yesterday", "payload": {}
    }));
    events.push(
        json!({"event_type": "note.added", "timestamp": "2026-01-28T12:00:00Z", "payload": {}}),
    );
    let body = json!({"target": "demo", "bundle_id": "b", "events": events});
    let (status, answer) = h.ingest(&body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(error_code(&answer), "validation_failed");
    let details = answer["error"]["details"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str)> = details
        .iter()
        .map(|d| {
            (
                d["index"].as_u64().unwrap(),
                d["event_id"].as_str().unwrap_or("-"),
                d["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "bad-pr", "pr_number"),
            (2, "bad-ts", "timestamp"),
            (3, "-", "event_id")
        ]
    );
    assert!(
        details
            .iter()
            .all(|d| !d["reason"].as_str().unwrap().is_empty())
    );
    assert_eq!(
        h.head_seq().await,
        0,
        "nothing appended, not even the valid event"
    );
}

#[tokio::test]
async fn events_the_graph_cannot_accept_are_refused() {
    let h = Harness::start().await;
    let stray = json!({
        "event_id": "stray", "event_type": "attempt.started", "timestamp": "2026-01-28T12:00:00Z",
        "payload": {"attempt_id": "attempt-unknown"}
    });
    let body = json!({"target": "demo", "bundle_id": "b", "events": [note("ok", 1), stray]});
    let (status, answer) = h.ingest(&body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let detail = &answer["error"]["details"][0];
    assert_eq!(
        (detail["index"].as_u64(), detail["field"].as_str()),
        (Some(1), Some("attempt_id"))
    );
    assert_eq!(h.head_seq().await, 0);
}

#[tokio::test]
async fn oversized_bodies_are_413_whether_declared_or_streamed() {
    let h = Harness::start_with(|c| c.limits.json_body_bytes = 2048).await;
    let events: Vec<_> = (0..40).map(|i| note(&format!("big-{i}"), i)).collect();
    let body = serde_json::to_vec(&bundle("big", &events)).unwrap();
    assert!(body.len() > 2048);
    let (status, _, answer) = h
        .raw(
            Method::POST,
            "/v1/events/ingest",
            Some(body.clone()),
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_code(&serde_json::from_slice(&answer).unwrap()),
        "body_too_large"
    );

    // Without Content-Length (chunked), the limit applies as the bytes arrive.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(512).map(|c| Ok(c.to_vec())).collect();
    let response = h
        .http
        .post(h.url("/v1/events/ingest"))
        .bearer_auth(support::TOKEN)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(error_code(&answer), "body_too_large");
    assert_eq!(h.head_seq().await, 0);
}

#[tokio::test]
async fn too_many_events_is_413() {
    let h = Harness::start_with(|c| c.limits.events_per_bundle = 5).await;
    let events: Vec<_> = (0..6).map(|i| note(&format!("n-{i}"), i)).collect();
    let (status, answer) = h.ingest(&bundle("many", &events)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&answer), "too_many_events");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 5")
    );
    let (status, _) = h.ingest(&bundle("few", &events[..5])).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn referenced_artifacts_must_be_stored_first() {
    let h = Harness::start().await;
    let content = b"worker log\nline 2\n".to_vec();
    let sha = Sha256Digest::of(&content);
    let mut body = bundle("with-artifact", &[note("a1", 1)]);
    body["artifacts"] = json!([{"sha256": sha, "kind": "log", "uri": format!("/v1/artifacts/{sha}"), "size": content.len(), "name": "worker.log"}]);
    let (status, answer) = h.ingest(&body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(error_code(&answer), "artifacts_missing");
    assert_eq!(answer["error"]["details"][0]["sha256"], sha.to_hex());
    assert_eq!(
        answer["error"]["details"][0]["referenced_by"],
        "artifacts[0]"
    );
    assert_eq!(h.head_seq().await, 0);

    let (status, _, _) = h
        .raw(
            Method::PUT,
            &format!("/v1/artifacts/{sha}"),
            Some(content),
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = h.ingest(&body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ingested"], 1);
}

#[tokio::test]
async fn fifty_concurrent_bundles_form_one_linear_chain() {
    let h = Harness::start().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let events = attempts_of_target(i);
        let http = h.http.clone();
        let url = h.url("/v1/events/ingest");
        tasks.push(tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(support::TOKEN)
                .json(&bundle(&format!("bundle-{i}"), &events))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["ingested"], events.len());
            events
        }));
    }
    let mut total = 0;
    let mut bundles = Vec::new();
    for task in tasks {
        let events = task.await.unwrap();
        total += events.len() as u64;
        bundles.push(events);
    }
    let (status, verified) = h.get("/v1/chain/verify").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["events"], total);
    // Each bundle landed whole: its events hold consecutive positions, in its order.
    let log = h.events.read(0, usize::MAX).await.unwrap();
    assert_eq!(log.len() as u64, total);
    for events in bundles {
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| log.iter().find(|l| l.event_id == e.event_id).unwrap().seq)
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }
    let (_, summary) = h.get("/v1/graph/summary").await;
    assert_eq!(summary["attempts_by_status"]["succeeded"], 50);
}

#[tokio::test]
async fn explicit_expectations_guard_the_append() {
    let h = Harness::start().await;
    let mut s = Scenario::new("exp", "demo");
    s.register_target().create_task("t1", &[], Priority::High);
    let (status, _) = h.ingest(&bundle("setup", &s.build())).await;
    assert_eq!(status, StatusCode::OK);
    let mut next = Scenario::new("exp2", "demo");
    next.start_attempt("t1", "attempt-x", 1);
    let attempt_events = next.build();
    let mut body = bundle("guarded", &attempt_events);
    body["expectations"] = json!([{"stream": "task:demo/t1", "version": 7}]);
    let (status, answer) = h.ingest(&body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(error_code(&answer), "wrong_expected_version");
    assert_eq!(answer["error"]["details"][0]["actual"], 1);
    assert_eq!(answer["error"]["details"][0]["expected"], 7);
    assert_eq!(h.head_seq().await, 2);
    body["expectations"] = json!([{"stream": "task:demo/t1", "version": 1}]);
    let (status, answer) = h.ingest(&body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, version) = h.get("/v1/streams/task:demo%2Ft1").await;
    assert_eq!(version, json!({"stream": "task:demo/t1", "version": 2}));
    body["expectations"] = json!([{"stream": "task:demo/t1", "version": "sometimes"}]);
    let (status, answer) = h.ingest(&body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expectations[0].version"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_reused_event_id_with_other_content_is_a_conflict() {
    let h = Harness::start().await;
    h.ingest(&bundle("one", &[note("same-id", 1)])).await;
    let (status, answer) = h
        .ingest(&bundle("two", &[note("new", 2), note("same-id", 99)]))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(error_code(&answer), "event_conflict");
    assert_eq!(answer["error"]["details"][0]["index"], 1);
    assert_eq!(h.head_seq().await, 1);
}

#[tokio::test]
async fn a_streamed_upload_past_the_limit_is_413_and_keeps_nothing() {
    let h = Harness::start_with(|c| c.limits.artifact_bytes = 4096).await;
    let content = vec![b'x'; 10_000];
    let sha = Sha256Digest::of(&content);
    // Chunked, without Content-Length: refused as the bytes pass the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        content.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let response = h
        .http
        .put(h.url(&format!("/v1/artifacts/{sha}")))
        .bearer_auth(support::TOKEN)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(error_code(&answer), "body_too_large");
    assert!(
        !h.state
            .control_plane()
            .artifacts()
            .exists(&sha)
            .await
            .unwrap()
    );
    // Declared too large: refused before a byte is read.
    let (status, _, _) = h
        .raw(
            Method::PUT,
            &format!("/v1/artifacts/{sha}"),
            Some(content),
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        !h.state
            .control_plane()
            .artifacts()
            .exists(&sha)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn requests_past_the_concurrency_limit_are_429_with_retry_after() {
    let h = Harness::start_with(|c| c.limits.concurrent_requests = 1).await;
    let content = b"held open".to_vec();
    let sha = Sha256Digest::of(&content);
    // An upload whose body arrives only when told: it holds the one permit until then.
    let (send, wait) = tokio::sync::oneshot::channel::<()>();
    let body = futures::stream::once(async move {
        let _ = wait.await;
        Ok::<_, std::io::Error>(content)
    });
    let held = h
        .http
        .put(h.url(&format!("/v1/artifacts/{sha}")))
        .bearer_auth(support::TOKEN)
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let held = tokio::spawn(held);
    let refused = loop {
        let (status, headers, body) = h
            .raw(Method::GET, "/v1/graph/summary", None, Auth::Token)
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break (headers, body);
        }
        assert_eq!(status, StatusCode::OK, "before the upload holds the permit");
        tokio::task::yield_now().await;
    };
    assert_eq!(refused.0["retry-after"], "1");
    let answer: Value = serde_json::from_slice(&refused.1).unwrap();
    assert_eq!(error_code(&answer), "too_many_requests");
    send.send(()).unwrap();
    assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::CREATED);
    let (status, _) = h.get("/v1/graph/summary").await;
    assert_eq!(status, StatusCode::OK, "the permit is back");
}

#[tokio::test]
async fn artifacts_round_trip_and_a_wrong_digest_keeps_nothing() {
    let h = Harness::start_with(|c| c.limits.artifact_bytes = 1024).await;
    let content = b"diff --git a/docs/GUIDE.md b/docs/GUIDE.md\n".to_vec();
    let sha = Sha256Digest::of(&content);
    let wrong = Sha256Digest::of(b"something else");

    let (status, _, body) = h
        .raw(
            Method::PUT,
            &format!("/v1/artifacts/{wrong}"),
            Some(content.clone()),
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error_code(&body), "digest_mismatch");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&sha.to_hex())
    );
    for digest in [wrong, sha] {
        let (status, body) = h.get(&format!("/v1/artifacts/{digest}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&body), "artifact_not_found");
    }

    let (status, _, body) = h
        .raw(
            Method::PUT,
            &format!("/v1/artifacts/{sha}"),
            Some(content.clone()),
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({"sha256": sha, "size": content.len(), "created": true})
    );
    let (status, _, body) = h
        .raw(
            Method::PUT,
            &format!("/v1/artifacts/{sha}"),
            Some(content.clone()),
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["created"],
        false
    );

    let (status, headers, body) = h
        .raw(
            Method::GET,
            &format!("/v1/artifacts/{sha}"),
            None,
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, content);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["etag"], format!("\"{sha}\""));

    let (status, _, body) = h
        .raw(Method::GET, "/v1/artifacts/NOT-A-DIGEST", None, Auth::Token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_code(&serde_json::from_slice(&body).unwrap()),
        "bad_request"
    );

    let big = vec![7u8; 2000];
    let (status, _, body) = h
        .raw(
            Method::PUT,
            &format!("/v1/artifacts/{}", Sha256Digest::of(&big)),
            Some(big),
            Auth::Token,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_code(&serde_json::from_slice(&body).unwrap()),
        "body_too_large"
    );
}

/// Two tasks with a failed then a successful attempt each, plus a third target's failure.
async fn populated() -> Harness {
    let h = Harness::start().await;
    let (status, body) = h
        .ingest(&bundle("populate", &lifecycle("pop", "demo", 3)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut other = Scenario::new("oth", "other");
    other
        .register_target()
        .create_task("t9", &[], Priority::Low)
        .start_attempt("t9", "attempt-other", 1)
        .fail_attempt("t9", "attempt-other", 2);
    let (status, body) = h.ingest(&bundle("other", &other.build())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h
}

#[tokio::test]
async fn attempts_are_paged_newest_first_and_filtered() {
    let h = populated().await;
    let mut seen = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("/v1/attempts?limit=2&cursor={c}"),
            None => "/v1/attempts?limit=2".to_owned(),
        };
        let (status, page) = h.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let attempts = page["attempts"].as_array().unwrap();
        assert!(attempts.len() <= 2);
        assert_eq!(page["count"], attempts.len());
        seen.extend(
            attempts
                .iter()
                .map(|a| a["attempt_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen[0], "attempt-other", "newest first");
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        7,
        "no attempt twice"
    );

    let (_, failed) = h.get("/v1/attempts?status=failed&target=demo").await;
    let ids: Vec<&str> = failed["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["attempt-00002-a", "attempt-00001-a", "attempt-00000-a"]
    );

    let (status, body) = h.get("/v1/attempts?status=exploded").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("status"),
        "{body}"
    );
    let (status, _) = h.get("/v1/attempts?limit=lots").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn one_attempt_with_its_events_artifacts_and_pull_request() {
    let h = populated().await;
    let (status, detail) = h.get("/v1/attempts/attempt-00001-b").await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["attempt"]["status"], "succeeded");
    let events = detail["events"].as_array().unwrap();
    assert_eq!(detail["events_total"], events.len());
    assert!(events.len() > 5);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(
        events
            .iter()
            .any(|e| e["event_type"] == "attempt.succeeded")
    );
    assert!(events.iter().all(|e| e["hash"].as_str().is_some()));
    assert_eq!(detail["artifacts"].as_array().unwrap().len(), 4);
    assert!(
        detail["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["kind"].as_str().unwrap().starts_with("model_"))
    );
    assert_eq!(detail["pull_request"]["number"], 2);

    let (status, body) = h.get("/v1/attempts/attempt-nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "attempt_not_found");
    let (status, _) = h.get("/v1/attempts/bad..id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn failures_most_recent_first() {
    let h = populated().await;
    let (status, body) = h.get("/v1/failures?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = body["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["attempt-other", "attempt-00002-a"]);
    assert_eq!(body["failures"][0]["failure"]["kind"], "tests_failed");
    let (_, body) = h.get("/v1/failures?target=other").await;
    assert_eq!(body["count"], 1);
}

#[tokio::test]
async fn invalidation_emits_an_operator_event() {
    let h = populated().await;
    let before = h.head_seq().await;
    let (status, body) = h
        .post(
            "/v1/attempts/attempt-ghost/invalidate",
            &json!({"reason": "bad model"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "attempt_not_found");
    let (status, body) = h
        .post(
            "/v1/attempts/attempt-00002-b/invalidate",
            &json!({"reason": "  "}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "invalid_request");
    let (status, body) = h
        .post("/v1/attempts/attempt-00002-b/invalidate", &json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    assert_eq!(h.head_seq().await, before);

    let (status, body) = h
        .post(
            "/v1/attempts/attempt-00002-b/invalidate",
            &json!({"reason": "the PR was generated from a poisoned prompt"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "invalidated");
    assert_eq!(body["duplicate"], false);
    assert_eq!(body["event"]["event_type"], "attempt.invalidated");
    assert_eq!(body["event"]["actor_id"], "operator");
    assert_eq!(body["event"]["seq"], before + 1);
    let (_, detail) = h.get("/v1/attempts/attempt-00002-b").await;
    assert_eq!(detail["attempt"]["status"], "invalidated");

    let (status, body) = h
        .post(
            "/v1/attempts/attempt-00002-b/invalidate",
            &json!({"reason": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "invalid_state");
    assert_eq!(h.head_seq().await, before + 1);
}

#[tokio::test]
async fn events_are_paged_by_seq_and_found_by_id() {
    let h = Harness::start().await;
    let notes: Vec<_> = (1..=25).map(|i| note(&format!("p{i}"), i)).collect();
    h.ingest(&bundle("pages", &notes)).await;
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let (status, page) = h.get(&format!("/v1/events?after={after}&limit=10")).await;
        assert_eq!(status, StatusCode::OK);
        let events = page["events"].as_array().unwrap();
        seen.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());

    let (status, event) = h.get("/v1/events/by-id/p7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["seq"], 7);
    let (status, body) = h.get("/v1/events/by-id/p99").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "event_not_found");
    let (status, found) = h
        .post("/v1/events/find", &json!({"ids": ["p9", "nope", "p2"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<u64> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 9]);
    let (_, head) = h.get("/v1/events/head").await;
    assert_eq!(head["head"]["seq"], 25);
    let (status, _) = h.get("/v1/events?after=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn chain_verification_reports_the_first_bad_seq() {
    let h = Harness::start().await;
    let notes: Vec<_> = (1..=6).map(|i| note(&format!("v{i}"), i)).collect();
    h.ingest(&bundle("verify", &notes)).await;
    let (_, ok) = h.get("/v1/chain/verify").await;
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["events"], 6);
    assert_eq!(ok["head"]["seq"], 6);
    h.events.tamper(4, |e| e.payload = json!({"n": 400}));
    let (status, broken) = h.get("/v1/chain/verify").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(broken["ok"], false);
    assert_eq!(broken["seq"], 4);
    assert_eq!(broken["fault"], "hash_mismatch");
}

#[tokio::test]
async fn metrics_count_ingests_and_show_the_graph() {
    let h = Harness::start().await;
    h.ingest(&bundle("m", &lifecycle("met", "demo", 1))).await;
    h.ingest(&bundle("m", &lifecycle("met", "demo", 1))).await;
    h.ingest(&json!({"target": "demo"})).await;
    let (status, headers, body) = h.raw(Method::GET, "/metrics", None, Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let text = String::from_utf8(body).unwrap();
    for line in [
        "leviathan_events_ingested_total{event_type=\"attempt.created\"} 2\n",
        "leviathan_events_ingested_total{event_type=\"other\"} 0\n",
        "leviathan_ingest_requests_total{outcome=\"ok\"} 1\n",
        "leviathan_ingest_requests_total{outcome=\"duplicate\"} 1\n",
        "leviathan_ingest_requests_total{outcome=\"rejected\"} 1\n",
        "leviathan_ingest_duration_seconds_count 3\n",
        "leviathan_attempts{status=\"succeeded\"} 1\n",
        "leviathan_attempts{status=\"failed\"} 1\n",
        "leviathan_event_store_up 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let head = h.head_seq().await;
    assert!(text.contains(&format!("leviathan_event_log_head_seq {head}\n")));
    assert!(text.contains("# TYPE leviathan_ingest_duration_seconds histogram"));
}

#[tokio::test]
async fn metrics_can_require_the_token() {
    let h = Harness::start_with(|c| c.metrics_require_auth = true).await;
    let (status, _, _) = h.raw(Method::GET, "/metrics", None, Auth::None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = h.raw(Method::GET, "/metrics", None, Auth::Token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("leviathan_event_store_up 1")
    );
    let (status, _, _) = h.raw(Method::GET, "/healthz", None, Auth::None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A log that can be made slow or unreachable.
#[derive(Debug)]
struct Faulty {
    inner: MemoryEventStore,
    mode: Fault,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Reads hang for a long time.
    SlowReads,
    /// `head` fails as if the database were down.
    Down,
}

#[async_trait]
impl EventStore for Faulty {
    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, EventStoreError> {
        self.inner.append(request).await
    }
    async fn read(&self, after: u64, limit: usize) -> Result<Vec<Event>, EventStoreError> {
        if matches!(self.mode, Fault::SlowReads) && after > 0 {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        self.inner.read(after, limit).await
    }
    async fn get(&self, event_id: &EventId) -> Result<Option<Event>, EventStoreError> {
        self.inner.get(event_id).await
    }
    async fn head(&self) -> Result<Option<Head>, EventStoreError> {
        match self.mode {
            Fault::Down => Err(EventStoreError::unavailable(
                "connection refused by 10.1.2.3:5432 (password=hunter2)",
                std::io::Error::other("down"),
            )),
            Fault::SlowReads => self.inner.head().await,
        }
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<u64, EventStoreError> {
        self.inner.stream_version(stream).await
    }
    async fn subscribe(&self, after: u64) -> Result<EventStream, EventStoreError> {
        self.inner.subscribe(after).await
    }
}

#[tokio::test]
async fn a_slow_store_is_a_retryable_timeout() {
    let events = MemoryEventStore::new();
    let log = Arc::new(Faulty {
        inner: events.clone(),
        mode: Fault::SlowReads,
    });
    let h = Harness::start_on(events, log, |c| {
        c.limits.request_timeout = Duration::from_millis(100);
    })
    .await;
    let (status, headers, body) = h
        .raw(Method::GET, "/v1/events?after=5", None, Auth::Token)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        error_code(&serde_json::from_slice(&body).unwrap()),
        "timeout"
    );
}

#[tokio::test]
async fn an_unreachable_store_is_not_ready_and_leaks_nothing() {
    let events = MemoryEventStore::new();
    let log = Arc::new(Faulty {
        inner: events.clone(),
        mode: Fault::Down,
    });
    let h = Harness::start_on(events, log, |_| {}).await;
    let (status, _, body) = h.raw(Method::GET, "/readyz", None, Auth::None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(
        error_code(&serde_json::from_str(&text).unwrap()),
        "not_ready"
    );
    assert!(
        !text.contains("10.1.2.3") && !text.contains("hunter2"),
        "{text}"
    );
    let (status, body) = h.get("/v1/events/head").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "store_unavailable");
    assert!(!body.to_string().contains("hunter2"), "{body}");
    let (status, _, body) = h.raw(Method::GET, "/metrics", None, Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("leviathan_event_store_up 0\n")
    );
}

/// A GET of the summary with `token`: its status, `Retry-After` and error code, if any.
async fn summary_as(h: &Harness, token: &str) -> (StatusCode, Option<String>, Option<String>) {
    let response = h
        .http
        .get(h.url("/v1/graph/summary"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    let code = body["error"]["code"].as_str().map(str::to_owned);
    (status, retry_after, code)
}

async fn reader(h: &Harness, name: &str) -> leviathan_api::wire::IssuedToken {
    let request = CreateTokenRequest {
        role: Role::Reader,
        ttl_seconds: None,
        name: Some(name.into()),
    };
    h.client().create_token(&request).await.unwrap()
}

#[tokio::test]
async fn each_token_is_held_to_its_own_request_rate() {
    let h = Harness::start_with(|c| {
        c.limits.requests_per_second_per_principal = 1;
        c.limits.request_burst_per_principal = 3;
    })
    .await;
    let (first, second) = (reader(&h, "r1").await, reader(&h, "r2").await);
    // A burst of three refilled at one a second: a run of requests soon finds it empty.
    let mut admitted = 0;
    let refusal = loop {
        let (status, retry_after, code) = summary_as(&h, &first.token).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break (retry_after, code);
        }
        assert_eq!(status, StatusCode::OK);
        admitted += 1;
        assert!(admitted < 100, "the rate limit never refused a request");
    };
    assert!(admitted >= 3, "the burst is admitted ({admitted})");
    assert_eq!(refusal.0.as_deref(), Some("1"));
    assert_eq!(refusal.1.as_deref(), Some("too_many_requests"));
    let (status, _, _) = summary_as(&h, &second.token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another token has a budget of its own"
    );
    for _ in 0..10 {
        let (status, _, _) = summary_as(&h, support::TOKEN).await;
        assert_eq!(status, StatusCode::OK, "the admin token is not paced");
    }
}

#[tokio::test]
async fn each_token_may_hold_only_so_many_event_streams() {
    let h = Harness::start_with(|c| {
        c.limits.streams_per_principal = 1;
        c.limits.stream_keep_alive = Duration::from_millis(20);
    })
    .await;
    let open = |token: &str| {
        h.http
            .get(h.url("/v1/events/stream"))
            .bearer_auth(token)
            .send()
    };
    let first = open(support::TOKEN).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = open(support::TOKEN).await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = second.json().await.unwrap();
    assert_eq!(error_code(&body), "too_many_requests");
    // Gone, the first stream frees its slot once the server notices (at its next keep-alive).
    drop(first);
    let mut tries = 0;
    let reopened = loop {
        let response = open(support::TOKEN).await.unwrap();
        if response.status() == StatusCode::OK {
            break response;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        tries += 1;
        assert!(tries < 500, "the closed stream never gave its slot back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    drop(reopened);
}
