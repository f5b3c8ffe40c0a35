//! Roles and scopes over real HTTP: tokens created, minted, revoked and rotated through the API,
//! then used by the real client against a served router.

mod support;

use std::time::Duration;

use leviathan_api::{
    ErrorCode,
    client::{ClientError, ControlPlaneClient},
    wire::{
        AttemptId, AttemptsQuery, CreateTokenRequest, EventId, IssuedToken, NewEvent, Role,
        Timestamp,
    },
};
use leviathan_core::{
    Sha256Digest,
    auth::{Principal, token::Grant},
    catalogue::{AttemptHeartbeat, TokenRevoked},
    id::TokenId,
};
use support::{Harness, fast_retry, ingest_request as bundle};

const A1: &str = "attempt-a1";
const A2: &str = "attempt-a2";

/// A control plane holding one target with two tasks, each with a running attempt.
async fn running_attempts() -> Harness {
    let h = Harness::start().await;
    support::seed_running_attempts(&h, "roles", A1, A2).await;
    h
}

fn heartbeat(id: &str, attempt: &str) -> NewEvent {
    NewEvent::new(
        EventId::new(id).unwrap(),
        Timestamp::now(),
        Some(format!("worker-{attempt}")),
        &AttemptHeartbeat {
            attempt_id: attempt_id(attempt),
        },
    )
}

fn attempt_id(id: &str) -> AttemptId {
    AttemptId::new(id).unwrap()
}

fn client(h: &Harness, token: &str) -> ControlPlaneClient {
    ControlPlaneClient::new(&h.server.url(), token)
        .unwrap()
        .with_retry(fast_retry())
}

async fn create(h: &Harness, role: Role, name: Option<&str>) -> IssuedToken {
    let request = CreateTokenRequest {
        role,
        ttl_seconds: None,
        name: name.map(str::to_owned),
    };
    h.client().create_token(&request).await.unwrap()
}

async fn mint(scheduler: &ControlPlaneClient, attempt: &str) -> IssuedToken {
    let expires = Timestamp::now().saturating_add(Duration::from_secs(3600));
    scheduler
        .mint_worker_token(&attempt_id(attempt), expires)
        .await
        .unwrap()
}

/// The status and code of a refusal.
fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, ErrorCode, String) {
    let error = result.expect_err("the request should be refused");
    (
        error.status().unwrap_or_default(),
        error.code().unwrap_or(ErrorCode::Unrecognized),
        error.to_string(),
    )
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    let (status, code, message) = refused(result);
    assert_eq!((status, code), (403, ErrorCode::Forbidden), "{message}");
    message
}

#[tokio::test]
async fn a_worker_token_acts_for_its_own_attempt_only() {
    let h = running_attempts().await;
    let scheduler = client(&h, &create(&h, Role::Scheduler, None).await.token);
    let minted = mint(&scheduler, A1).await;
    assert_eq!(minted.info.issued.attempt_id, Some(attempt_id(A1)));
    let worker = client(&h, &minted.token);

    worker
        .ingest(&bundle("own", vec![heartbeat("hb-1", A1)]))
        .await
        .unwrap();
    let stored = h.client().event(&EventId::new("hb-1").unwrap()).await;
    let stored = stored.unwrap().unwrap();
    let expected = Principal::worker(minted.info.issued.token_id.clone(), attempt_id(A1));
    assert_eq!(
        stored.principal,
        Some(expected),
        "the server records the writer"
    );
    assert_eq!(stored.actor_id.as_deref(), Some("worker-attempt-a1"));

    let head = h.head_seq().await;
    let sibling = bundle("sib", vec![heartbeat("hb-2", A1), heartbeat("hb-3", A2)]);
    let message = forbidden(worker.ingest(&sibling).await);
    assert!(
        message.contains("event 1 (`hb-3`, attempt.heartbeat) of attempt `attempt-a2`")
            && message.contains("of attempt `attempt-a1`")
            && message.contains("nothing was appended"),
        "{message}"
    );
    assert_eq!(h.head_seq().await, head, "nothing appended");

    forbidden(worker.invalidate(&attempt_id(A1), "mine").await);
    forbidden(worker.cancel(&attempt_id(A1), "mine").await);
    forbidden(worker.attempt(&attempt_id(A2)).await);
    assert_eq!(
        worker
            .attempt(&attempt_id(A1))
            .await
            .unwrap()
            .attempt
            .attempt_id,
        attempt_id(A1)
    );
    forbidden(worker.attempts(&AttemptsQuery::default()).await);
    forbidden(worker.events_page(0, 10).await);
    forbidden(worker.graph_summary().await);
    let expires = Timestamp::now().saturating_add(Duration::from_secs(60));
    forbidden(worker.mint_worker_token(&attempt_id(A2), expires).await);
    forbidden(worker.list_tokens().await);
    let content = bytes::Bytes::from_static(b"worker log");
    let sha = Sha256Digest::of(&content);
    worker.put_artifact(&sha, content).await.unwrap();
    forbidden(worker.get_artifact(&sha).await);
}

#[tokio::test]
async fn a_reader_reads_and_writes_nothing() {
    let h = running_attempts().await;
    let reader = client(&h, &create(&h, Role::Reader, Some("dashboard")).await.token);
    assert!(reader.graph_summary().await.unwrap().total_nodes > 0);
    reader.attempt(&attempt_id(A2)).await.unwrap();
    assert!(!reader.events_page(0, 100).await.unwrap().events.is_empty());
    let head = h.head_seq().await;
    forbidden(
        reader
            .ingest(&bundle("r", vec![heartbeat("hb-r", A1)]))
            .await,
    );
    forbidden(reader.invalidate(&attempt_id(A1), "no").await);
    forbidden(reader.cancel(&attempt_id(A1), "no").await);
    let content = bytes::Bytes::from_static(b"x");
    forbidden(
        reader
            .put_artifact(&Sha256Digest::of(&content), content)
            .await,
    );
    let expires = Timestamp::now().saturating_add(Duration::from_secs(60));
    forbidden(reader.mint_worker_token(&attempt_id(A1), expires).await);
    let request = CreateTokenRequest {
        role: Role::Admin,
        ttl_seconds: None,
        name: None,
    };
    forbidden(reader.create_token(&request).await);
    forbidden(reader.rotate_key().await);
    assert_eq!(h.head_seq().await, head);
}

#[tokio::test]
async fn an_operator_invalidates_and_the_event_names_it() {
    let h = running_attempts().await;
    let issued = create(&h, Role::Operator, None).await;
    let operator = client(&h, &issued.token);
    let answer = operator.invalidate(&attempt_id(A2), "stuck").await.unwrap();
    let principal = answer.event.principal.expect("a principal");
    assert_eq!(
        (principal.role, principal.token_id),
        (Role::Operator, issued.info.issued.token_id)
    );
    forbidden(
        operator
            .ingest(&bundle("o", vec![heartbeat("hb-o", A1)]))
            .await,
    );
}

/// A cancellation ends the live attempt as failed, kind `cancelled`, permanent (its task is
/// not retried), written by the operator; an ended attempt cannot be cancelled.
#[tokio::test]
async fn an_operator_cancels_a_live_attempt_once() {
    let h = running_attempts().await;
    let operator = client(&h, &create(&h, Role::Operator, None).await.token);
    let answer = operator
        .cancel(&attempt_id(A1), "wrong task")
        .await
        .unwrap();
    assert_eq!(answer.status, "cancelled");
    assert_eq!(answer.event.event_type, "attempt.failed");
    assert_eq!(answer.event.payload["failure_kind"], "cancelled");
    assert_eq!(answer.event.payload["failure_class"], "permanent");
    assert_eq!(answer.event.principal.map(|p| p.role), Some(Role::Operator));
    let attempt = operator.attempt(&attempt_id(A1)).await.unwrap().attempt;
    assert_eq!(attempt.status.as_str(), "failed");
    let head = h.head_seq().await;
    let again = operator.cancel(&attempt_id(A1), "again").await.unwrap_err();
    assert_eq!(
        (again.status(), again.code()),
        (Some(409), Some(ErrorCode::InvalidState))
    );
    assert!(again.to_string().contains("cannot be cancelled"), "{again}");
    let blank = operator.cancel(&attempt_id(A2), " ").await.unwrap_err();
    assert_eq!(blank.status(), Some(422), "{blank}");
    assert_eq!(h.head_seq().await, head, "nothing appended");
}

#[tokio::test]
async fn expired_revoked_and_foreign_tokens_get_401() {
    let h = running_attempts().await;
    let hour_ago = Timestamp::now().unix_micros() - 3_600_000_000;
    let expired = h
        .state
        .authority()
        .sign(Grant {
            token_id: TokenId::new("tok-old").unwrap(),
            role: Role::Reader,
            attempt: None,
            expires: Timestamp::from_unix_micros(hour_ago).unwrap(),
        })
        .unwrap();
    let (status, code, message) = refused(client(&h, expired.token.expose()).graph_summary().await);
    assert_eq!((status, code), (401, ErrorCode::Unauthorized));
    assert!(message.contains("expired"), "{message}");

    let issued = create(&h, Role::Reader, Some("ci")).await;
    let reader = client(&h, &issued.token);
    reader.graph_summary().await.unwrap();
    let revoked = h.client().revoke_token("ci", Some("left")).await.unwrap();
    assert!(!revoked.duplicate);
    assert_eq!(revoked.token_id, issued.info.issued.token_id);
    let (status, _, message) = refused(reader.graph_summary().await);
    assert_eq!(status, 401);
    assert!(
        message.contains("revoked") && !message.contains(&issued.token),
        "{message}"
    );
    let again = h
        .client()
        .revoke_token(issued.info.issued.token_id.as_str(), None)
        .await;
    assert!(again.unwrap().duplicate);
    let (status, code, _) = refused(h.client().revoke_token("nobody", None).await);
    assert_eq!((status, code), (404, ErrorCode::TokenNotFound));

    let foreign = format!("{}x", &issued.token[..issued.token.len() - 1]);
    let (status, _, _) = refused(client(&h, &foreign).graph_summary().await);
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_key_rotation_keeps_a_running_workers_token_valid() {
    let h = running_attempts().await;
    let scheduler = client(&h, &create(&h, Role::Scheduler, None).await.token);
    let minted = mint(&scheduler, A1).await;
    let worker = client(&h, &minted.token);
    worker
        .ingest(&bundle("before", vec![heartbeat("hb-before", A1)]))
        .await
        .unwrap();
    let rotated = h.client().rotate_key().await.unwrap();
    assert_ne!(rotated.key_id, minted.info.issued.key_id);
    worker
        .ingest(&bundle("after", vec![heartbeat("hb-after", A1)]))
        .await
        .unwrap();
    let next = mint(&scheduler, A2).await;
    assert_eq!(next.info.issued.key_id, rotated.key_id);
    client(&h, &next.token)
        .ingest(&bundle("a2", vec![heartbeat("hb-a2", A2)]))
        .await
        .unwrap();
}

#[tokio::test]
async fn admins_create_list_and_revoke_and_the_log_holds_no_secret() {
    let h = running_attempts().await;
    let reader = create(&h, Role::Reader, Some("dash")).await;
    let operator = create(&h, Role::Operator, None).await;
    let (status, code, _) = refused(
        h.client()
            .create_token(&CreateTokenRequest {
                role: Role::Reader,
                ttl_seconds: None,
                name: Some("dash".into()),
            })
            .await,
    );
    assert_eq!(
        (status, code),
        (409, ErrorCode::InvalidState),
        "names are unique"
    );
    let (status, code, _) = refused(
        h.client()
            .create_token(&CreateTokenRequest {
                role: Role::Worker,
                ttl_seconds: None,
                name: None,
            })
            .await,
    );
    assert_eq!((status, code), (422, ErrorCode::InvalidRequest));
    h.client().revoke_token("dash", None).await.unwrap();
    client(&h, &operator.token).graph_summary().await.unwrap();

    let listed = h.client().list_tokens().await.unwrap();
    let ids: Vec<_> = listed.iter().map(|t| &t.issued.token_id).collect();
    assert_eq!(
        ids,
        [&reader.info.issued.token_id, &operator.info.issued.token_id]
    );
    assert!(listed[0].revoked_at.is_some() && listed[1].revoked_at.is_none());
    assert!(listed[1].last_used.is_some(), "last use is tracked");

    let log = serde_json::to_string(&h.client().events_page(0, 1000).await.unwrap()).unwrap();
    let listing = serde_json::to_string(&listed).unwrap();
    for secret in [&reader.token, &operator.token] {
        assert!(!log.contains(secret.as_str()) && !listing.contains(secret.as_str()));
    }
    assert!(log.contains("token.issued") && log.contains("token.revoked"));

    // Nobody, not even an admin, writes the control plane's own records through an ingest.
    let forged = NewEvent::new(
        EventId::new("forged-revoke").unwrap(),
        Timestamp::now(),
        None,
        &TokenRevoked {
            token_id: operator.info.issued.token_id.clone(),
            reason: None,
        },
    );
    forbidden(h.client().ingest(&bundle("forged", vec![forged])).await);
}
