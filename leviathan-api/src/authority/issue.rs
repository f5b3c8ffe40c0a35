//! Issuing, listing and revoking tokens: each issuance and revocation is an event of the log
//! (`token.issued`, `token.revoked`, written by the control plane with the principal that asked),
//! so the log is the only record and holds no secret.

use std::time::Duration;

use leviathan_core::{
    Expectations, Ledger, NewEvent, Timestamp,
    auth::{Principal, Role, token::Grant},
    catalogue::{TokenIssued, TokenRevoked},
    id::{AttemptId, EventId, TokenId},
};
use rand::TryRngCore;

use super::Authority;
use crate::{
    service::ControlPlaneError,
    wire::{
        CreateTokenRequest, IssuedToken, MintWorkerTokenRequest, RevokeTokenRequest, RevokedToken,
        TokenInfo,
    },
};

/// The actor of the events the control plane records about tokens.
pub const TOKEN_ACTOR: &str = "control-plane";
/// Lifetime of a created token when the request does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 86_400);
/// The longest lifetime a created token may have.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);
/// How far ahead a worker token may expire.
pub const MAX_WORKER_TTL: Duration = Duration::from_secs(7 * 86_400);
/// The longest token name.
const MAX_NAME: usize = 64;

impl Authority {
    /// Signs a token of `request.role` for `by` and records `token.issued`; the secret is in the
    /// answer only.
    pub async fn create(
        &self,
        ledger: &Ledger,
        by: &Principal,
        request: CreateTokenRequest,
    ) -> Result<IssuedToken, ControlPlaneError> {
        if request.role == Role::Worker {
            return Err(invalid(
                "role",
                "worker tokens are minted for an attempt (POST /v1/attempts/{id}/token)",
            ));
        }
        let ttl = match request.ttl_seconds {
            None => DEFAULT_TTL,
            Some(0) => return Err(invalid("ttl_seconds", "must be positive")),
            Some(s) if Duration::from_secs(s) > MAX_TTL => {
                return Err(invalid(
                    "ttl_seconds",
                    format!("at most {} (365 days)", MAX_TTL.as_secs()),
                ));
            }
            Some(s) => Duration::from_secs(s),
        };
        let now = Timestamp::now();
        if let Some(name) = &request.name {
            check_name(name)?;
            let mut registry = self.registry.write().await;
            registry.catch_up(ledger.events().as_ref()).await?;
            if registry.name_taken(name, now) {
                return Err(ControlPlaneError::TokenNameTaken(name.clone()));
            }
        }
        let grant = Grant {
            token_id: new_token_id()?,
            role: request.role,
            attempt: None,
            expires: now.saturating_add(ttl),
        };
        self.issue(ledger, by, grant, request.name).await
    }

    /// Signs the worker token of `attempt` (which must be live) for `by`, expiring at
    /// `request.expires`, and records `token.issued`.
    pub async fn mint_worker_token(
        &self,
        ledger: &Ledger,
        by: &Principal,
        attempt: &AttemptId,
        request: MintWorkerTokenRequest,
    ) -> Result<IssuedToken, ControlPlaneError> {
        let now = Timestamp::now();
        if request.expires <= now || request.expires > now.saturating_add(MAX_WORKER_TTL) {
            return Err(invalid(
                "expires",
                "must be in the future and at most 7 days ahead",
            ));
        }
        ledger.catch_up().await?;
        let status = ledger.graph().await.attempt(attempt).map(|a| a.status);
        match status {
            None => return Err(ControlPlaneError::AttemptNotFound(attempt.clone())),
            Some(status) if !status.is_live() => {
                return Err(ControlPlaneError::AttemptEnded {
                    attempt_id: attempt.clone(),
                    status: format!("{status:?}").to_lowercase(),
                });
            }
            Some(_) => {}
        }
        let grant = Grant {
            token_id: new_token_id()?,
            role: Role::Worker,
            attempt: Some(attempt.clone()),
            expires: request.expires,
        };
        self.issue(ledger, by, grant, None).await
    }

    async fn issue(
        &self,
        ledger: &Ledger,
        by: &Principal,
        grant: Grant,
        name: Option<String>,
    ) -> Result<IssuedToken, ControlPlaneError> {
        let signed = self
            .sign(grant)
            .map_err(|e| internal("signing a token", e))?;
        let claims = signed.claims;
        let issued = TokenIssued {
            token_id: claims.token_id.clone(),
            role: claims.role,
            name,
            attempt_id: claims.attempt,
            key_id: claims.key_id,
            expires: claims.expires,
        };
        let now = Timestamp::now();
        let id = event_id(&format!("token-issued-{}", claims.token_id))?;
        record(ledger, by, NewEvent::new(id, now, actor(), &issued)).await?;
        Ok(IssuedToken {
            token: signed.token.expose().to_owned(),
            info: TokenInfo {
                issued,
                issued_at: now,
                revoked_at: None,
                last_used: None,
            },
        })
    }

    /// Every token issued, oldest first (never a secret).
    pub async fn list(&self, ledger: &Ledger) -> Result<Vec<TokenInfo>, ControlPlaneError> {
        let mut registry = self.registry.write().await;
        registry.catch_up(ledger.events().as_ref()).await?;
        let last_used = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        Ok(registry.list(&last_used))
    }

    /// Revokes the token `id_or_name` (its id, or the name of a live token) by recording
    /// `token.revoked`; a token revoked already is answered as a duplicate.
    pub async fn revoke(
        &self,
        ledger: &Ledger,
        by: &Principal,
        id_or_name: &str,
        request: RevokeTokenRequest,
    ) -> Result<RevokedToken, ControlPlaneError> {
        let mut registry = self.registry.write().await;
        registry.catch_up(ledger.events().as_ref()).await?;
        let Some(found) = registry.find(id_or_name) else {
            return Err(ControlPlaneError::TokenNotFound(id_or_name.to_owned()));
        };
        let token_id = found.issued.token_id.clone();
        if let Some(revoked_at) = found.revoked_at {
            return Ok(RevokedToken {
                token_id,
                revoked_at,
                duplicate: true,
            });
        }
        let payload = TokenRevoked {
            token_id: token_id.clone(),
            reason: request.reason.filter(|r| !r.trim().is_empty()),
        };
        let now = Timestamp::now();
        let suffix = uuid::Uuid::new_v4().simple();
        let id = event_id(&format!("token-revoked-{token_id}-{suffix}"))?;
        record(ledger, by, NewEvent::new(id, now, actor(), &payload)).await?;
        registry.catch_up(ledger.events().as_ref()).await?;
        Ok(RevokedToken {
            token_id,
            revoked_at: now,
            duplicate: false,
        })
    }
}

/// Appends one event the control plane records itself, written by `by`.
async fn record(
    ledger: &Ledger,
    by: &Principal,
    mut event: NewEvent,
) -> Result<(), ControlPlaneError> {
    event.principal = Some(by.clone());
    ledger.ingest(vec![event], Expectations::Derived).await?;
    Ok(())
}

fn actor() -> Option<String> {
    Some(TOKEN_ACTOR.to_owned())
}

fn check_name(name: &str) -> Result<(), ControlPlaneError> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME
        || name.chars().any(char::is_control)
    {
        return Err(invalid(
            "name",
            format!("must be 1 to {MAX_NAME} characters without control characters"),
        ));
    }
    Ok(())
}

/// A fresh token id, `tok-<16 hex>`.
fn new_token_id() -> Result<TokenId, ControlPlaneError> {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| internal("drawing a token id", e))?;
    TokenId::new(format!("tok-{}", hex::encode(bytes))).map_err(|e| internal("a token id", e))
}

fn event_id(raw: &str) -> Result<EventId, ControlPlaneError> {
    EventId::new(raw).map_err(|e| internal("a token event id", e))
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ControlPlaneError {
    ControlPlaneError::InvalidRequest {
        field,
        problem: problem.into(),
    }
}

fn internal(
    context: &'static str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> ControlPlaneError {
    ControlPlaneError::Internal {
        context,
        source: Box::new(error),
    }
}
