//! The model gateway over real HTTP: workers holding their attempt's token call the providers'
//! own protocols on the control plane, which forwards to the testkit's scripted LLM with a key
//! only it holds, holds the calls to their budgets and records each one.

mod support;

use std::{sync::Arc, time::Duration};

use leviathan_api::{
    ApiConfig, Limits,
    gateway::{Budgets, GatewayConfig, Limit, Upstream},
};
use leviathan_core::{
    EventStore, Sha256Digest, Timestamp, WorkerTokens,
    catalogue::{BudgetExhausted, ModelCallCompleted, Payload},
    id::AttemptId,
    secret::Secret,
    store::ArtifactStore,
    testkit::Scenario,
};
use leviathan_testkit::llm::{LlmReply, ScriptedLlm};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Harness, TOKEN, ingest_request as bundle};

const A1: &str = "attempt-a1";
const A2: &str = "attempt-a2";
const MODEL: &str = "claude-sonnet-4-5";

/// A control plane with a gateway to `llm` (both protocols) and these budgets, holding one
/// target with two running attempts.
async fn gateway(llm: &ScriptedLlm, budgets: Budgets) -> Harness {
    gateway_with_limits(llm, budgets, |_| {}).await
}

/// [`gateway`] with the control plane's limits adjusted.
async fn gateway_with_limits(
    llm: &ScriptedLlm,
    budgets: Budgets,
    adjust: impl FnOnce(&mut Limits),
) -> Harness {
    let key = || Some(Secret::new(llm.api_key()));
    let config = GatewayConfig::new(
        Some(Upstream::new(llm.url(), key())),
        Some(Upstream::new(format!("{}/v1", llm.url()), key())),
    )
    .with_budgets(budgets);
    let h = Harness::start_with(|c: &mut ApiConfig| {
        c.gateway = Some(config);
        adjust(&mut c.limits);
    })
    .await;
    support::seed_running_attempts(&h, "gw", A1, A2).await;
    h
}

async fn worker_token(h: &Harness, attempt: &str) -> String {
    let expires = Timestamp::now().saturating_add(Duration::from_secs(3600));
    let token = h
        .state
        .mint(&AttemptId::new(attempt).unwrap(), expires)
        .await
        .unwrap();
    token.expose().to_owned()
}

fn messages(max_tokens: u64, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{ "role": "user", "content": "write the file" }],
    })
}

/// An Anthropic Messages call through the gateway, the key as Anthropic's clients send it.
async fn anthropic(h: &Harness, key: &str, body: &Value) -> (StatusCode, String) {
    let response = h
        .http
        .post(h.url("/v1/gateway/anthropic/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// A chat completions call through the gateway, the key as OpenAI's clients send it.
async fn openai(h: &Harness, key: &str, body: &Value) -> (StatusCode, String) {
    let response = h
        .http
        .post(h.url("/v1/gateway/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn recorded_calls(h: &Harness) -> Vec<(leviathan_core::Event, ModelCallCompleted)> {
    let events = h.events.read(0, 10_000).await.unwrap();
    events
        .into_iter()
        .filter(|e| e.event_type == ModelCallCompleted::EVENT_TYPE)
        .map(|e| {
            let call = ModelCallCompleted::from_payload(&e.payload).unwrap();
            (e, call)
        })
        .collect()
}

/// The recorded calls once there are `count` of them (a call is recorded after its client has
/// the answer's last byte).
async fn recorded_eventually(
    h: &Harness,
    count: usize,
) -> Vec<(leviathan_core::Event, ModelCallCompleted)> {
    let mut calls = recorded_calls(h).await;
    for _ in 0..500 {
        if calls.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        calls = recorded_calls(h).await;
    }
    assert_eq!(calls.len(), count);
    calls
}

async fn exhausted_events(h: &Harness) -> Vec<BudgetExhausted> {
    let events = h.events.read(0, 10_000).await.unwrap();
    events
        .iter()
        .filter(|e| e.event_type == BudgetExhausted::EVENT_TYPE)
        .map(|e| BudgetExhausted::from_payload(&e.payload).unwrap())
        .collect()
}

#[tokio::test]
async fn a_whole_anthropic_call_is_forwarded_with_the_servers_key_and_recorded() {
    let llm = ScriptedLlm::start().await.unwrap();
    let h = gateway(&llm, Budgets::default()).await;
    let token = worker_token(&h, A1).await;
    llm.push_text("the answer");

    let (status, body) = anthropic(&h, &token, &messages(100, false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["content"][0]["text"], "the answer");

    let seen = llm.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].authenticated, "the upstream got the server's key");
    assert!(!seen[0].body.to_string().contains(&token));

    let calls = recorded_calls(&h).await;
    assert_eq!(calls.len(), 1);
    let (event, call) = &calls[0];
    assert_eq!(event.actor_id.as_deref(), Some("gateway"));
    assert!(
        event.principal.is_none(),
        "recorded by the control plane itself"
    );
    // The upstream's own usage, not the worker's word.
    assert_eq!(
        call.tokens_in,
        answer["usage"]["input_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        call.tokens_out,
        answer["usage"]["output_tokens"].as_u64().unwrap()
    );
    let expected = (call.tokens_in as f64 * 3.0 + call.tokens_out as f64 * 15.0) / 1e6;
    assert!((call.cost_usd.unwrap() - expected).abs() < 1e-12);
    assert_eq!(call.prices_as_of.as_deref(), Some("2025-10-15"));
    assert_eq!(call.target_id.as_ref().map(|t| t.as_str()), Some("demo"));
    let response = h.artifacts.get(&call.response_sha256).await.unwrap();
    assert_eq!(response.as_ref(), body.as_bytes());
    assert_eq!(Sha256Digest::of(&response), call.response_sha256);
    let request: Value =
        serde_json::from_slice(&h.artifacts.get(&call.prompt_sha256).await.unwrap()).unwrap();
    assert_eq!(request["messages"][0]["content"], "write the file");

    let (_, detail) = h.get(&format!("/v1/attempts/{A1}")).await;
    assert_eq!(detail["attempt"]["model_calls"], 1);
    assert_eq!(detail["attempt"]["tokens_out"], call.tokens_out);
    assert!(detail["attempt"]["cost_usd"].as_f64().unwrap() > 0.0);
    let metrics = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "leviathan_model_calls_total{{target=\"demo\",model=\"{MODEL}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("leviathan_model_cost_usd_total{target=\"demo\""));
}

#[tokio::test]
async fn streamed_calls_reach_the_client_as_they_come_and_are_metered_from_the_stream() {
    let llm = ScriptedLlm::start().await.unwrap();
    let h = gateway(&llm, Budgets::default()).await;
    let token = worker_token(&h, A1).await;
    llm.push_text("streamed anthropic answer");
    llm.push_text("streamed openai answer");

    let (status, stream) = anthropic(&h, &token, &messages(100, true)).await;
    assert_eq!(status, StatusCode::OK, "{stream}");
    assert!(stream.contains("event: message_start"), "{stream}");
    assert!(stream.contains("message_stop"));

    let body = json!({
        "model": "gpt-5-mini",
        "stream": true,
        "messages": [{ "role": "user", "content": "stream it" }],
    });
    let (status, stream) = openai(&h, &token, &body).await;
    assert_eq!(status, StatusCode::OK, "{stream}");
    assert!(stream.contains("streamed openai answer"));
    assert!(stream.trim_end().ends_with("data: [DONE]"), "{stream}");
    // The gateway bounded the call and asked for usage in the stream.
    let sent = &llm.requests()[1].body;
    assert_eq!(sent["max_tokens"], 8192);
    assert_eq!(sent["stream_options"]["include_usage"], true);

    // A stream is recorded when it ends, after the client has its last byte.
    let calls = recorded_eventually(&h, 2).await;
    let anthropic_call = &calls
        .iter()
        .find(|(_, c)| c.provider.as_deref() == Some("anthropic"))
        .unwrap()
        .1;
    // The scripted server's usage: a quarter of the bytes, rounded up.
    assert_eq!(
        anthropic_call.tokens_out,
        "streamed anthropic answer".len().div_ceil(4) as u64
    );
    assert_eq!(
        anthropic_call.tokens_in,
        "write the file".len().div_ceil(4) as u64
    );
    let openai_call = &calls
        .iter()
        .find(|(_, c)| c.provider.as_deref() == Some("openai"))
        .unwrap()
        .1;
    assert_eq!(
        openai_call.tokens_out,
        "streamed openai answer".len().div_ceil(4) as u64
    );
    let recorded = h.artifacts.get(&openai_call.response_sha256).await.unwrap();
    assert_eq!(recorded.as_ref(), stream.as_bytes());
}

#[tokio::test]
async fn only_a_live_attempts_own_token_may_call_and_the_upstream_refuses_it() {
    let llm = ScriptedLlm::start().await.unwrap();
    let h = gateway(&llm, Budgets::default()).await;
    let token = worker_token(&h, A1).await;
    let body = messages(10, false);

    let refusal = |status: StatusCode, body: &str, kind: &str| {
        let error: Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["type"], "error", "{body}");
        assert_eq!(error["error"]["type"], kind, "{status} {body}");
    };
    let (status, body_text) = anthropic(&h, "", &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    refusal(status, &body_text, "authentication_error");
    let (status, body_text) = anthropic(&h, "lvt1.forged.token", &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    refusal(status, &body_text, "authentication_error");
    // The admin token is not an attempt's: no budget to charge, so no call.
    let (status, body_text) = anthropic(&h, TOKEN, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    refusal(status, &body_text, "permission_error");

    // The worker's token is no key of the upstream's: calling it directly fails.
    let direct = h
        .http
        .post(format!("{}/v1/messages", llm.url()))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::UNAUTHORIZED);

    // Once the attempt has ended, its token calls nothing.
    let mut s = Scenario::new("end", "demo");
    s.fail_attempt("t1", A1, 1);
    let ended: Vec<_> = s
        .build()
        .into_iter()
        .filter(|e| e.event_type == "attempt.failed")
        .collect();
    h.client().ingest(&bundle("end", ended)).await.unwrap();
    let (status, body_text) = anthropic(&h, &token, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body_text}");
    assert!(body_text.contains("has ended"), "{body_text}");
    assert!(
        llm.requests().iter().all(|r| !r.authenticated),
        "nothing reached the upstream with a key"
    );
}

#[tokio::test]
async fn a_spent_attempt_budget_stops_the_next_call_and_is_recorded_once() {
    let llm = ScriptedLlm::start().await.unwrap();
    let mut budgets = Budgets::default();
    budgets.attempt = Limit {
        calls: Some(2),
        ..Limit::default()
    };
    let h = gateway(&llm, budgets).await;
    llm.set_fallback(|_| LlmReply::Text("ok".into()));
    let token = worker_token(&h, A1).await;
    for _ in 0..2 {
        let (status, body) = anthropic(&h, &token, &messages(10, false)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for _ in 0..2 {
        let (status, body) = openai(
            &h,
            &token,
            &json!({ "model": "gpt-5", "messages": [{ "role": "user", "content": "x" }] }),
        )
        .await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["type"], "budget_exhausted", "{body}");
        assert_eq!(error["error"]["scope"], format!("attempt:{A1}"), "{body}");
    }
    assert_eq!(
        llm.requests().len(),
        2,
        "refused calls never reach the upstream"
    );
    let exhausted = exhausted_events(&h).await;
    assert_eq!(exhausted.len(), 1, "recorded once: {exhausted:?}");
    assert_eq!(
        (
            exhausted[0].scope.as_str(),
            exhausted[0].resource.as_str(),
            exhausted[0].limit,
            exhausted[0].spent
        ),
        (format!("attempt:{A1}").as_str(), "calls", 2.0, 2.0)
    );
    // The other attempt has its own budget.
    let other = worker_token(&h, A2).await;
    assert_eq!(
        anthropic(&h, &other, &messages(10, false)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_target_day_budget_and_the_global_one_are_shared_by_attempts() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.set_fallback(|_| LlmReply::Text("a".repeat(400)));
    let mut budgets = Budgets::default();
    // Each call costs 4 input + 100 output tokens upstream.
    budgets.target_day = Limit {
        tokens: Some(150),
        ..Limit::default()
    };
    let h = gateway(&llm, budgets).await;
    let (one, two) = (worker_token(&h, A1).await, worker_token(&h, A2).await);
    assert_eq!(
        anthropic(&h, &one, &messages(200, false)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        anthropic(&h, &two, &messages(200, false)).await.0,
        StatusCode::OK
    );
    let (status, body) = anthropic(&h, &one, &messages(200, false)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert!(body.contains("target:demo:"), "{body}");
    let (status, _) = anthropic(&h, &two, &messages(200, false)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let exhausted = exhausted_events(&h).await;
    assert_eq!(exhausted.len(), 1, "{exhausted:?}");
    assert_eq!(
        (exhausted[0].resource.as_str(), exhausted[0].spent),
        ("tokens", 208.0)
    );

    let llm = ScriptedLlm::start().await.unwrap();
    llm.set_fallback(|_| LlmReply::Text("a".repeat(400)));
    let mut budgets = Budgets::default();
    budgets.global_day = Limit {
        usd: Some(0.001),
        ..Limit::default()
    };
    let h = gateway(&llm, budgets).await;
    let token = worker_token(&h, A1).await;
    // 100 output tokens at $15 per million: $0.0015, past the day's $0.001 after one call.
    assert_eq!(
        anthropic(&h, &token, &messages(200, false)).await.0,
        StatusCode::OK
    );
    let (status, body) = anthropic(&h, &worker_token(&h, A2).await, &messages(200, false)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert!(body.contains("global:"), "{body}");
}

#[tokio::test]
async fn concurrent_attempts_sharing_a_day_budget_overshoot_it_by_at_most_one_call() {
    let llm = ScriptedLlm::start().await.unwrap();
    llm.set_fallback(|_| LlmReply::Text("a".repeat(200)));
    let mut budgets = Budgets::default();
    budgets.target_day = Limit {
        tokens: Some(500),
        ..Limit::default()
    };
    let h = Arc::new(gateway(&llm, budgets).await);
    let tokens = [worker_token(&h, A1).await, worker_token(&h, A2).await];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let h = Arc::clone(&h);
        let token = tokens[i % 2].clone();
        tasks.spawn(async move {
            // Call until the budget is spent, retrying calls refused while others hold it.
            let mut statuses = Vec::new();
            while statuses.last() != Some(&StatusCode::PAYMENT_REQUIRED) && statuses.len() < 500 {
                statuses.push(anthropic(&h, &token, &messages(60, false)).await.0);
                tokio::task::yield_now().await;
            }
            statuses
        });
    }
    let statuses: Vec<StatusCode> = tasks.join_all().await.into_iter().flatten().collect();
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    assert!(
        count(StatusCode::TOO_MANY_REQUESTS) > 0,
        "the calls raced for the budget: {statuses:?}"
    );
    assert_eq!(
        count(StatusCode::PAYMENT_REQUIRED),
        16,
        "every caller ends refused: {statuses:?}"
    );
    let spent: u64 = recorded_calls(&h)
        .await
        .iter()
        .map(|(_, c)| c.tokens_in + c.tokens_out)
        .sum();
    // A call holds its worst case (its body's bytes plus max_tokens) while in flight.
    let worst_call = serde_json::to_vec(&messages(60, false)).unwrap().len() as u64 + 60;
    assert!(spent <= 500 + worst_call, "spent {spent}");
    assert_eq!(count(StatusCode::OK), recorded_calls(&h).await.len());
}

#[tokio::test]
async fn calls_count_against_the_limit_on_requests_in_progress() {
    let llm = ScriptedLlm::start().await.unwrap();
    let h = Arc::new(
        gateway_with_limits(&llm, Budgets::default(), |l| l.concurrent_requests = 1).await,
    );
    let token = worker_token(&h, A1).await;
    llm.set_pace(Duration::from_millis(1500));
    llm.push_text("slow answer");
    let first = tokio::spawn({
        let (h, token) = (Arc::clone(&h), token.clone());
        async move { anthropic(&h, &token, &messages(100, false)).await }
    });
    while llm.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let response = h
        .http
        .post(h.url("/v1/gateway/anthropic/v1/messages"))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .json(&messages(100, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        llm.requests().len(),
        1,
        "the refused call was not forwarded"
    );
    let (status, body) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_call_past_the_deadline_is_refused_in_the_providers_shape_and_still_recorded() {
    let llm = ScriptedLlm::start().await.unwrap();
    let mut budgets = Budgets::default();
    budgets.attempt = Limit {
        calls: Some(2),
        ..Limit::default()
    };
    let h = gateway_with_limits(&llm, budgets, |l| {
        l.long_request_timeout = Duration::from_millis(300);
    })
    .await;
    let token = worker_token(&h, A1).await;
    llm.set_pace(Duration::from_millis(1500));
    llm.push_text("too late");

    let (status, body) = anthropic(&h, &token, &messages(100, false)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "timeout_error");
    // The upstream answered after the deadline: the call is charged, and its hold released.
    let calls = recorded_eventually(&h, 1).await;
    assert_eq!(calls[0].1.attempt_id.as_str(), A1);
    llm.set_pace(Duration::ZERO);
    llm.push_text("second");
    let (status, body) = anthropic(&h, &token, &messages(100, false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = anthropic(&h, &token, &messages(100, false)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
}

#[tokio::test]
async fn a_stream_outlasting_the_deadline_is_not_cut() {
    let llm = ScriptedLlm::start().await.unwrap();
    let h = gateway_with_limits(&llm, Budgets::default(), |l| {
        l.long_request_timeout = Duration::from_millis(600);
    })
    .await;
    let token = worker_token(&h, A1).await;
    // About 200 ms to the head, then seven events 200 ms apart: well past the deadline.
    llm.set_pace(Duration::from_millis(200));
    llm.push_text("a slow stream");

    let (status, stream) = anthropic(&h, &token, &messages(100, true)).await;
    assert_eq!(status, StatusCode::OK, "{stream}");
    assert!(stream.contains("a slow"), "{stream}");
    assert!(stream.contains("event: message_stop"), "{stream}");
    recorded_eventually(&h, 1).await;
}

#[tokio::test]
async fn an_answer_echoing_a_secret_reaches_the_client_redacted() {
    let llm = ScriptedLlm::start().await.unwrap();
    let h = gateway(&llm, Budgets::default()).await;
    let token = worker_token(&h, A1).await;
    let echo = format!("key {} admin {TOKEN} é", llm.api_key());
    llm.push_text(echo.clone());
    llm.push_text(echo);

    for stream in [false, true] {
        let (status, body) = anthropic(&h, &token, &messages(100, stream)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // A stream carries the text in two events; each is redacted whole.
        assert!(
            stream || body.contains("key [REDACTED] admin [REDACTED] é"),
            "{body}"
        );
        assert!(body.contains("[REDACTED]"), "{body}");
        assert!(
            !body.contains(llm.api_key()) && !body.contains(TOKEN),
            "{body}"
        );
    }
}
