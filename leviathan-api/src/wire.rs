//! The JSON shapes of the API, shared by the server and the client.
//!
//! The ingest shapes are the predecessor's (`{target, bundle_id, events, artifacts}` in,
//! `{status, bundle_id, ingested, ...}` out), extended with optional stream expectations.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::code::ErrorCode;

pub use leviathan_core::{
    Event, ExpectedVersion, GraphSummary, Head, NewEvent, Sha256Digest, StreamId, Timestamp,
    auth::Role,
    catalogue::TokenIssued,
    chain::{ChainBreak, ChainReport},
    graph::{ArtifactNode, AttemptNode, PullRequestNode},
    id::{AttemptId, EventId, KeyId, TargetId, TokenId},
    model::AttemptStatus,
};

/// The model gateway's Anthropic Messages API below the control plane's URL: a client's base
/// URL (the client appends `/v1/messages`).
pub const GATEWAY_ANTHROPIC_BASE: &str = "/v1/gateway/anthropic";
/// The model gateway's OpenAI-compatible API below the control plane's URL: a client's base URL
/// (the client appends `/chat/completions`).
pub const GATEWAY_OPENAI_BASE: &str = "/v1/gateway/openai/v1";

/// The SSE header that resumes `GET /v1/events/stream` after the last event a client saw.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// `POST /v1/events/ingest`: a bundle of events, appended atomically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestRequest {
    /// The target the bundle is about (informational: logs and metrics).
    pub target: String,
    /// The producer's bundle id (`bundle-<attempt_id>` for workers).
    pub bundle_id: String,
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// Artifacts the bundle references; each must already be stored (`PUT /v1/artifacts/..`).
    #[serde(default)]
    pub artifacts: Vec<BundleArtifact>,
    /// Stream expectations; when given, the bundle lands only if every one holds (else 409).
    /// When absent, expectations are derived from the graph the bundle was validated against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expectations: Vec<WireExpectation>,
}

/// An artifact reference of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleArtifact {
    /// Content address.
    pub sha256: Sha256Digest,
    /// `log`, `diff`, …
    pub kind: String,
    /// Where it can be fetched.
    pub uri: String,
    /// Size in bytes.
    pub size: u64,
    /// Human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An expectation on a stream's version: `"any"`, `"no_stream"` or a number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireExpectation {
    /// The stream (e.g. `task:demo/docs-guide`).
    pub stream: StreamId,
    /// What the caller expects.
    pub version: ExpectedVersion,
}

/// The answer to an accepted bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// `"ok"`, or `"duplicate"` when every event was already in the log.
    pub status: String,
    /// The bundle id, echoed.
    pub bundle_id: String,
    /// Events appended.
    pub ingested: u64,
    /// Events that were already in the log (nothing appended for them).
    pub duplicates: u64,
    /// The log's head after the bundle.
    pub head: Option<Head>,
}

impl IngestResponse {
    /// `status` of a bundle that appended something (or was empty).
    pub const OK: &'static str = "ok";
    /// `status` of a bundle whose events were all already in the log.
    pub const DUPLICATE: &'static str = "duplicate";
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error: stable code, message, optional details.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong, for humans.
    pub message: String,
    /// Structured details (e.g. one entry per refused event).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"` (healthz) or `"ready"` (readyz).
    pub status: String,
    /// The log's head (readyz only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
}

/// `GET /v1/events?after=&limit=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsQuery {
    /// Events with `seq > after` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Page size (default 100, capped by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A page of events in `seq` order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    /// The events.
    pub events: Vec<Event>,
    /// The `after` of the next page when this one was full (more may follow).
    pub next_after: Option<u64>,
}

/// `POST /v1/events/find`: events by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindEventsRequest {
    /// The ids.
    pub ids: Vec<EventId>,
}

/// The events among the requested ids that exist, in `seq` order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoundEvents {
    /// The events.
    pub events: Vec<Event>,
}

/// `GET /v1/events/head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadResponse {
    /// The last event's position; `null` for an empty log.
    pub head: Option<Head>,
}

/// `GET /v1/streams/{stream}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamVersion {
    /// The stream.
    pub stream: StreamId,
    /// Its number of events.
    pub version: u64,
}

/// `GET /v1/attempts?target=&status=&limit=&cursor=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptsQuery {
    /// Only this target's attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetId>,
    /// Only attempts in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AttemptStatus>,
    /// Page size (default 50, capped by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
}

/// A page of attempts, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptsPage {
    /// The attempts.
    pub attempts: Vec<AttemptNode>,
    /// Number of attempts in this page.
    pub count: usize,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<u64>,
}

/// `GET /v1/attempts/{id}`: an attempt and everything about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptDetail {
    /// The attempt.
    pub attempt: AttemptNode,
    /// Its events in `seq` order (the most recent ones when there are more than a page).
    pub events: Vec<Event>,
    /// How many events the attempt has in all.
    pub events_total: usize,
    /// Artifacts it produced.
    pub artifacts: Vec<ArtifactNode>,
    /// Its pull request.
    pub pull_request: Option<PullRequestNode>,
}

/// `GET /v1/failures?target=&limit=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailuresQuery {
    /// Only this target's failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetId>,
    /// At most this many (default 50, capped by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Continue after this cursor (`next_cursor` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
}

/// Failed and timed-out attempts, most recently ended first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailuresPage {
    /// The attempts.
    pub failures: Vec<AttemptNode>,
    /// Number returned.
    pub count: usize,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[serde(default)]
    pub next_cursor: Option<u64>,
}

/// `POST /v1/attempts/{id}/invalidate` (and `/cancel`, as [`CancelRequest`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidateRequest {
    /// Why the attempt is void (or cancelled).
    pub reason: String,
    /// The id of the event recording it; a client that sends the same id again (a retry) gets
    /// the first answer instead of a second invalidation (or cancellation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
}

/// The answer to an invalidation (or a cancellation, as [`CancelResponse`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvalidateResponse {
    /// `"invalidated"` (or `"cancelled"`).
    pub status: String,
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The event in the log: `attempt.invalidated` (or `attempt.failed` of kind `cancelled`).
    pub event: Event,
    /// True when this repeats an earlier request with the same event id.
    pub duplicate: bool,
}

/// `POST /v1/attempts/{id}/cancel`: the same fields as an invalidation.
pub type CancelRequest = InvalidateRequest;

/// The answer to a cancellation: status `"cancelled"`, the event `attempt.failed` of kind
/// `cancelled`.
pub type CancelResponse = InvalidateResponse;

/// `PUT /v1/artifacts/{sha256}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifactResponse {
    /// Content address.
    pub sha256: Sha256Digest,
    /// Size in bytes.
    pub size: u64,
    /// False when identical content was already stored.
    pub created: bool,
}

/// `GET /v1/chain/verify`: `{"ok": true, events, bytes, head}` or
/// `{"ok": false, seq, fault, ...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainVerification {
    /// The whole chain verifies.
    Verified(ChainReport),
    /// The first bad position.
    Broken(ChainBreak),
}

impl ChainVerification {
    /// True when the chain verifies.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Verified(_))
    }
}

impl From<Result<ChainReport, ChainBreak>> for ChainVerification {
    fn from(result: Result<ChainReport, ChainBreak>) -> Self {
        match result {
            Ok(report) => Self::Verified(report),
            Err(broken) => Self::Broken(broken),
        }
    }
}

impl From<ChainVerification> for Result<ChainReport, ChainBreak> {
    fn from(v: ChainVerification) -> Self {
        match v {
            ChainVerification::Verified(report) => Ok(report),
            ChainVerification::Broken(broken) => Err(broken),
        }
    }
}

impl Serialize for ChainVerification {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (ok, body) = match self {
            Self::Verified(report) => (true, serde_json::to_value(report)),
            Self::Broken(broken) => (false, serde_json::to_value(broken)),
        };
        let mut body = body.map_err(serde::ser::Error::custom)?;
        if let Value::Object(map) = &mut body {
            map.insert("ok".into(), Value::Bool(ok));
        }
        body.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ChainVerification {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut body = Value::deserialize(deserializer)?;
        let ok = body
            .as_object_mut()
            .and_then(|m| m.remove("ok"))
            .and_then(|v| v.as_bool())
            .ok_or_else(|| serde::de::Error::missing_field("ok"))?;
        if ok {
            serde_json::from_value(body)
                .map(Self::Verified)
                .map_err(serde::de::Error::custom)
        } else {
            serde_json::from_value(body)
                .map(Self::Broken)
                .map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leviathan_core::chain::ChainFault;

    #[test]
    fn chain_verification_wire_shapes() {
        let ok = ChainVerification::Verified(ChainReport {
            events: 3,
            bytes: 900,
            head: None,
        });
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"ok": true, "events": 3, "bytes": 900, "head": null})
        );
        assert_eq!(
            serde_json::from_value::<ChainVerification>(json).unwrap(),
            ok
        );

        let broken = ChainVerification::Broken(ChainBreak {
            seq: 7,
            fault: ChainFault::SeqGap {
                expected: 7,
                found: 9,
            },
        });
        let json = serde_json::to_value(&broken).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["seq"], 7);
        assert_eq!(json["fault"], "seq_gap");
        assert_eq!(
            serde_json::from_value::<ChainVerification>(json).unwrap(),
            broken
        );
    }

    #[test]
    fn ingest_request_accepts_the_predecessor_shape() {
        let body = r#"{"target":"radix","bundle_id":"bundle-attempt-1","events":[
            {"event_id":"e1","event_type":"attempt.started","timestamp":"2026-01-28T12:00:00.123456",
             "actor_id":"worker-attempt-1","payload":{"attempt_id":"attempt-1"}}],
            "artifacts":[{"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
             "kind":"log","uri":"file:///tmp/x","size":0}]}"#;
        let request: IngestRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.events.len(), 1);
        assert_eq!(request.artifacts[0].name, None);
        assert!(request.expectations.is_empty());
        let back = serde_json::to_value(&request).unwrap();
        assert!(back.get("expectations").is_none());
    }
}

/// `POST /v1/tokens` (admin): a token for a person or a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// `reader`, `operator`, `scheduler` or `admin` (worker tokens are minted per attempt).
    pub role: Role,
    /// Lifetime in seconds (default 30 days, at most 365).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// A name to list and revoke it by; unique among live tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/attempts/{id}/token` (scheduler, admin): the worker token of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintWorkerTokenRequest {
    /// When it expires: the attempt's deadline plus a grace period (at most 7 days ahead).
    pub expires: Timestamp,
}

/// A token as listed: what `token.issued` said, when, and its state. Never its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The issuance.
    #[serde(flatten)]
    pub issued: TokenIssued,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
    /// When this control plane last accepted it (since it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Timestamp>,
}

/// A token just issued: its secret, shown this once, and what it is.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The bearer string. Store it now: the control plane keeps only its id.
    pub token: String,
    /// What it is.
    #[serde(flatten)]
    pub info: TokenInfo,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &leviathan_core::secret::REDACTED)
            .field("info", &self.info)
            .finish()
    }
}

/// `GET /v1/tokens` (admin).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenList {
    /// Every token issued, oldest first.
    pub tokens: Vec<TokenInfo>,
}

/// `POST /v1/tokens/{id_or_name}/revoke` (admin).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to a revocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevokedToken {
    /// The token.
    pub token_id: TokenId,
    /// When it was revoked.
    pub revoked_at: Timestamp,
    /// True when it was revoked already (nothing appended).
    pub duplicate: bool,
}

/// `POST /v1/tokens/rotate-key` (admin): the new signing key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatedKey {
    /// The key that signs from now on; the previous keys keep verifying.
    pub key_id: KeyId,
}
