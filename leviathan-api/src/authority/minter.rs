//! Worker tokens minted by the process that holds the ledger and the keyring: a scheduler
//! inside `serve`, or one on an embedded store. The token is signed and recorded exactly as
//! `POST /v1/attempts/{id}/token` does, so a control plane with the same keyring accepts it.

use std::sync::Arc;

use async_trait::async_trait;
use leviathan_core::{
    Ledger, Timestamp, WorkerTokens,
    auth::{Principal, Role, token::Keyring},
    id::{AttemptId, TokenId},
    secret::Secret,
    store::BoxError,
};

use super::Authority;
use crate::wire::MintWorkerTokenRequest;

/// The token id that in-process minting records as the principal that asked.
pub const IN_PROCESS_SCHEDULER: &str = "in-process-scheduler";

/// Mints each attempt's worker token with a keyring and records `token.issued` in a ledger.
#[derive(Debug)]
pub struct LedgerMinter {
    authority: Authority,
    ledger: Arc<Ledger>,
}

impl LedgerMinter {
    /// Signs with `keyring` (the control plane's, e.g. the file beside its token) and records
    /// in `ledger`. It accepts no bearer token: it only mints.
    pub fn new(keyring: Keyring, ledger: Arc<Ledger>) -> Self {
        Self {
            authority: Authority::minting_only(keyring),
            ledger,
        }
    }
}

#[async_trait]
impl WorkerTokens for LedgerMinter {
    async fn mint(&self, attempt: &AttemptId, expires: Timestamp) -> Result<Secret, BoxError> {
        mint_in_process(&self.authority, &self.ledger, attempt, expires).await
    }
}

/// Mints `attempt`'s worker token as the in-process scheduler.
pub(crate) async fn mint_in_process(
    authority: &Authority,
    ledger: &Ledger,
    attempt: &AttemptId,
    expires: Timestamp,
) -> Result<Secret, BoxError> {
    let principal = Principal::new(TokenId::new(IN_PROCESS_SCHEDULER)?, Role::Scheduler);
    let request = MintWorkerTokenRequest { expires };
    let issued = authority
        .mint_worker_token(ledger, &principal, attempt, request)
        .await?;
    Ok(Secret::new(issued.token))
}
