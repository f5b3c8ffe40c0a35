//! The model gateway: the providers' own protocols (Anthropic Messages, OpenAI-compatible chat
//! completions, whole or streamed) for workers holding their attempt's token, forwarded to the
//! configured upstreams with keys only the server holds, held to the budgets before each call
//! and recorded after it.
//!
//! `POST /v1/gateway/anthropic/v1/messages` and `POST /v1/gateway/openai/v1/chat/completions`:
//! a client's base URL is `<control plane>/v1/gateway/anthropic` or
//! `<control plane>/v1/gateway/openai/v1`, its API key the attempt's token. Errors come in the
//! provider's own shape, so clients report them as they report the provider's; a spent budget
//! is `402` with error type `budget_exhausted`.

mod budget;
mod config;
mod meter;
mod provider;

use std::time::Instant;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, StatusCode, header::CONTENT_TYPE},
    response::Response,
    routing::post,
};
use futures::{SinkExt as _, StreamExt as _, channel::mpsc};
use leviathan_core::{
    Expectations, NewEvent, Timestamp,
    auth::{Action, Principal, authorize},
    catalogue::BudgetExhausted,
    id::{AttemptId, TargetId},
    redact::Redactor,
};
use serde_json::Value;

pub use self::config::{Budgets, GatewayConfig, Limit, Price, PriceTable, Upstream};
use self::{
    budget::{Accountant, Ask, Exhausted, GATEWAY_ACTOR, Hold, Refusal, Spend},
    meter::Answered,
    provider::{Call, Provider, Usage},
};
use crate::{
    state::ApiState,
    wire::{GATEWAY_ANTHROPIC_BASE, GATEWAY_OPENAI_BASE},
};

/// The gateway's parts: its configuration, the HTTP client to the upstreams and the books.
#[derive(Debug)]
pub(crate) struct Gateway {
    config: GatewayConfig,
    http: reqwest::Client,
    books: Accountant,
}

impl Gateway {
    /// A gateway; fails only when no HTTP client can be built (no TLS backend).
    pub(crate) fn new(config: GatewayConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.upstream_timeout)
            .build()?;
        Ok(Self {
            config,
            http,
            books: Accountant::default(),
        })
    }

    fn upstream(&self, provider: Provider) -> Option<&Upstream> {
        match provider {
            Provider::Anthropic => self.config.anthropic.as_ref(),
            Provider::OpenAi => self.config.openai.as_ref(),
        }
    }
}

/// The gateway's routes (answering 404 in the provider's shape when no gateway is configured).
pub(crate) fn routes(json_body_bytes: usize) -> Router<ApiState> {
    Router::new()
        .route(
            &format!("{GATEWAY_ANTHROPIC_BASE}/v1/messages"),
            post(anthropic),
        )
        .route(
            &format!("{GATEWAY_OPENAI_BASE}/chat/completions"),
            post(openai),
        )
        .layer(DefaultBodyLimit::max(json_body_bytes))
}

async fn anthropic(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    serve(state, Provider::Anthropic, headers, body).await
}

async fn openai(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    serve(state, Provider::OpenAi, headers, body).await
}

/// A refusal, shown in the provider's error shape.
struct Refused {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// The spent budget's scope, for `budget_exhausted`.
    scope: Option<String>,
}

impl Refused {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            scope: None,
        }
    }

    fn into_response(self, provider: Provider) -> Response {
        let scope = self.scope.as_deref();
        let mut response = provider.error(self.status, self.kind, &self.message, scope);
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

/// Runs the call in a task of its own under the long-request deadline, so that a call cut by
/// the deadline (or by a client going away) still settles its hold and is recorded: the upstream
/// charges for it all the same. A stream's deadline ends with its head; its body is bounded by
/// the upstream's own time limit.
async fn serve(state: ApiState, provider: Provider, headers: HeaderMap, body: Bytes) -> Response {
    let limit = state.config().limits.long_request_timeout;
    let call = tokio::spawn(async move { forward(&state, provider, &headers, body).await });
    let refused = match tokio::time::timeout(limit, call).await {
        Ok(Ok(Ok(response))) => return response,
        Ok(Ok(Err(refused))) => refused,
        Ok(Err(failed)) => {
            tracing::error!(error = %failed, "a model gateway call failed");
            Refused::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal error",
            )
        }
        Err(_) => {
            let message = format!(
                "the upstream did not answer within {} s; the call is still recorded when it ends",
                limit.as_secs_f64()
            );
            let mut refused = Refused::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message);
            refused.retry_after = Some(1);
            refused
        }
    };
    refused.into_response(provider)
}

/// The attempt a call is charged to, as the graph knows it.
struct Charged {
    attempt: AttemptId,
    target: TargetId,
    created: Timestamp,
}

/// Authenticates the caller (its attempt's token, as `x-api-key` or a bearer token) and finds
/// its live attempt.
async fn caller(state: &ApiState, headers: &HeaderMap) -> Result<(Principal, Charged), Refused> {
    let Some(presented) = Provider::credential(headers) else {
        return Err(Refused::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing credential: send the attempt's token as `x-api-key` or `Authorization: Bearer`",
        ));
    };
    let plane = state.control_plane();
    let head = plane.ledger().checkpoint().await.map_or(0, |h| h.seq);
    let principal = state
        .authority()
        .authenticate(presented, plane.events().as_ref(), head, Timestamp::now())
        .await
        .map_err(|why| {
            Refused::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                why.to_string(),
            )
        })?;
    authorize(&principal, Action::CallModel)
        .map_err(|why| Refused::new(StatusCode::FORBIDDEN, "permission_error", why.to_string()))?;
    if let Err(wait) = state.throttle().admit(&principal.token_id) {
        let mut refused = Refused::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "token `{}` is over its request rate; retry later",
                principal.token_id
            ),
        );
        refused.retry_after = Some(wait.as_secs().max(1));
        return Err(refused);
    }
    let Some(attempt) = principal.attempt.clone() else {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "the token names no attempt",
        ));
    };
    let graph = state.control_plane().ledger().graph().await;
    let Some(node) = graph.attempt(&attempt) else {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!("attempt `{attempt}` is not in the log"),
        ));
    };
    if node.ended_at.is_some() {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!(
                "attempt `{attempt}` has ended ({}); it may call no model",
                node.status
            ),
        ));
    }
    let charged = Charged {
        target: node.target_id.clone(),
        created: node.meta.created_at,
        attempt,
    };
    Ok((principal, charged))
}

/// The whole path of one call: who, what, the budgets, upstream, the answer relayed and
/// recorded.
async fn forward(
    state: &ApiState,
    provider: Provider,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    let Some(gateway) = state.gateway() else {
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "this control plane runs no model gateway",
        ));
    };
    let Some(upstream) = gateway.upstream(provider) else {
        let message = format!("the model gateway has no `{}` upstream", provider.name());
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            message,
        ));
    };
    let (_, charged) = caller(state, headers).await?;
    let mut request: Value = serde_json::from_slice(&body).map_err(|e| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the request body is not JSON: {e}"),
        )
    })?;
    let call = provider
        .prepare(&mut request, gateway.config.default_max_tokens)
        .map_err(|why| Refused::new(StatusCode::BAD_REQUEST, "invalid_request_error", why))?;
    let request = Bytes::from(request.to_string());
    let worst = worst_case(gateway, &call, &request);
    let hold = hold(state, gateway, &charged, worst).await?;
    let url = format!("{}{}", upstream.base_url, provider.path());
    let key = upstream.key.as_ref().map(|key| key.expose());
    let started = Instant::now();
    let sent = gateway
        .http
        .post(&url)
        .headers(provider.upstream_headers(headers, key))
        .header(CONTENT_TYPE, "application/json")
        .body(request.clone())
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => {
            gateway
                .books
                .settle(state.control_plane().events().as_ref(), hold)
                .await;
            let message = format!(
                "the `{}` upstream could not be reached: {}",
                provider.name(),
                error.without_url()
            );
            return Err(Refused::new(StatusCode::BAD_GATEWAY, "api_error", message));
        }
    };
    let pending = Pending {
        state: state.clone(),
        provider,
        charged,
        call,
        request,
        hold,
        started,
        presented: Provider::credential(headers).unwrap_or_default().to_owned(),
    };
    Ok(relay(pending, answer).await)
}

/// One call's worst case: its input (no more tokens than bytes) and all of `max_tokens`.
fn worst_case(gateway: &Gateway, call: &Call, request: &Bytes) -> Spend {
    let input = request.len() as u64;
    let price = gateway.config.prices.price(&call.model);
    Spend {
        calls: 1,
        tokens: input + call.max_tokens,
        usd: price.cost(input, call.max_tokens),
    }
}

/// Holds `worst` on every budget the call is charged to, or refuses it (recording a spent
/// budget once).
async fn hold(
    state: &ApiState,
    gateway: &Gateway,
    charged: &Charged,
    worst: Spend,
) -> Result<Hold, Refused> {
    let events = state.control_plane().events();
    let ask = Ask {
        attempt: &charged.attempt,
        target: &charged.target,
        attempt_created: charged.created,
        now: Timestamp::now(),
        worst,
    };
    match gateway
        .books
        .reserve(events.as_ref(), &gateway.config.budgets, &ask)
        .await
    {
        Ok(hold) => Ok(hold),
        Err(Refusal::Exhausted(exhausted)) => {
            announce(state, gateway, charged, &exhausted).await;
            let message = format!(
                "budget exhausted: {} has spent {} of its {} limit of {}; no call is forwarded until it resets",
                exhausted.scope, exhausted.spent, exhausted.resource, exhausted.limit
            );
            let mut refused =
                Refused::new(StatusCode::PAYMENT_REQUIRED, "budget_exhausted", message);
            refused.scope = Some(exhausted.scope);
            Err(refused)
        }
        Err(Refusal::Held { scope }) => {
            let message = format!(
                "what is left of the budget of {scope} is held by calls in flight; retry when they end"
            );
            let mut refused =
                Refused::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message);
            refused.retry_after = Some(1);
            Err(refused)
        }
        Err(Refusal::Unreadable(why)) => Err(Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            format!("the budgets cannot be checked (the log is unreadable: {why}); retry later"),
        )),
    }
}

/// Records `budget.exhausted` the first time a budget is found spent (its event id is derived
/// from the budget, so replicas racing to record it append it once).
async fn announce(state: &ApiState, gateway: &Gateway, charged: &Charged, exhausted: &Exhausted) {
    if !gateway.books.first_announcement(exhausted).await {
        return;
    }
    let id = BudgetExhausted::event_id(&exhausted.scope, exhausted.resource);
    let payload = BudgetExhausted {
        scope: exhausted.scope.clone(),
        resource: exhausted.resource.to_owned(),
        limit: exhausted.limit,
        spent: exhausted.spent,
        attempt_id: charged.attempt.clone(),
        target_id: Some(charged.target.clone()),
    };
    let event = NewEvent::new(
        id,
        Timestamp::now(),
        Some(GATEWAY_ACTOR.to_owned()),
        &payload,
    );
    let plane = state.control_plane();
    match plane
        .ledger()
        .ingest(vec![event], Expectations::Derived)
        .await
    {
        Ok(receipt) => plane.metrics().record_appended(&receipt.appended),
        Err(error) => {
            tracing::error!(%error, scope = %exhausted.scope, "cannot record budget.exhausted")
        }
    }
}

/// A forwarded call waiting for its answer's end.
struct Pending {
    state: ApiState,
    provider: Provider,
    charged: Charged,
    call: Call,
    request: Bytes,
    hold: Hold,
    started: Instant,
    presented: String,
}

impl Pending {
    /// Every secret the gateway knows: the upstreams' keys, the caller's token, the admin token.
    fn redactor(&self) -> Redactor {
        let admin = self.state.config().token.expose();
        let keys = self.state.gateway().map(|gateway| gateway.config.keys());
        Redactor::new(
            keys.into_iter()
                .flatten()
                .chain([self.presented.as_str(), admin]),
        )
    }
}

/// Passes the upstream's answer to the client, redacted of every secret the gateway knows (a
/// model that echoes one gives the worker nothing): an error as it came (nothing is charged), a whole answer once recorded, a
/// stream as it arrives, recorded when it ends (even if the client went away: the upstream
/// charges for it all the same).
async fn relay(pending: Pending, answer: reqwest::Response) -> Response {
    let redactor = pending.redactor();
    let status = answer.status();
    let content_type = answer.headers().get(CONTENT_TYPE).cloned();
    let respond = |body: Body| {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        if let Some(content_type) = content_type.clone() {
            response.headers_mut().insert(CONTENT_TYPE, content_type);
        }
        response
    };
    if !status.is_success() || !pending.call.stream {
        let body = answer.bytes().await.unwrap_or_default();
        let body = Bytes::from(redactor.redact_bytes(&body));
        if status.is_success() {
            let answered: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let usage = pending.provider.usage(&answered);
            finish(pending, body.clone(), usage).await;
        } else {
            let events = pending.state.control_plane().events().clone();
            if let Some(gateway) = pending.state.gateway() {
                gateway.books.settle(events.as_ref(), pending.hold).await;
            }
        }
        return respond(Body::from(body));
    }
    respond(stream(pending, answer, redactor))
}

/// Relays a streamed answer line by line (server-sent events are lines, so no secret and no
/// character is split by a chunk's end), each redacted, and records it when it ends. A secret
/// a model spreads over several events passes to the client (never into the record).
fn stream(pending: Pending, answer: reqwest::Response, redactor: Redactor) -> Body {
    let (mut sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut chunks = answer.bytes_stream();
        let mut whole = Vec::new();
        let mut unsent = Vec::new();
        let mut client_gone = false;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => {
                    whole.extend_from_slice(&chunk);
                    unsent.extend_from_slice(&chunk);
                    let Some(end) = unsent.iter().rposition(|byte| *byte == b'\n') else {
                        continue;
                    };
                    let lines: Vec<u8> = unsent.drain(..=end).collect();
                    let lines = Bytes::from(redactor.redact_bytes(&lines));
                    client_gone = client_gone || sender.send(Ok(lines)).await.is_err();
                }
                Err(error) => {
                    let _ = sender
                        .send(Err(std::io::Error::other(error.without_url())))
                        .await;
                    break;
                }
            }
        }
        if !unsent.is_empty() {
            let _ = sender
                .send(Ok(Bytes::from(redactor.redact_bytes(&unsent))))
                .await;
        }
        drop(sender);
        let usage = pending.provider.stream_usage(&whole);
        finish(pending, Bytes::from(whole), usage).await;
    });
    Body::from_stream(receiver)
}

/// Records an answered call and releases its hold.
async fn finish(pending: Pending, response: Bytes, usage: Option<Usage>) {
    let redactor = pending.redactor();
    let Pending {
        state,
        provider,
        charged,
        call,
        request,
        hold,
        started,
        ..
    } = pending;
    let Some(gateway) = state.gateway() else {
        return;
    };
    // An answer that says no usage is charged its worst case: the budget never fails open.
    let usage = usage.unwrap_or(Usage {
        input: request.len() as u64,
        output: call.max_tokens,
    });
    let prices = &gateway.config.prices;
    let cost_usd = prices.price(&call.model).cost(usage.input, usage.output);
    let model_label = if prices.knows(&call.model) {
        call.model.clone()
    } else {
        "other".to_owned()
    };
    let answered = Answered {
        attempt: charged.attempt.clone(),
        target: charged.target.clone(),
        provider: provider.name(),
        model: call.model,
        request,
        response,
        usage,
        cost_usd,
        prices_as_of: prices.as_of.clone(),
        latency: started.elapsed(),
    };
    let plane = state.control_plane();
    match meter::record(plane, &redactor, answered).await {
        Ok(_) => plane.metrics().record_model_call(
            charged.target.as_str(),
            &model_label,
            usage.input,
            usage.output,
            cost_usd,
        ),
        Err(error) => {
            tracing::error!(%error, attempt_id = %charged.attempt, "cannot record a model call")
        }
    }
    gateway.books.settle(plane.events().as_ref(), hold).await;
}
