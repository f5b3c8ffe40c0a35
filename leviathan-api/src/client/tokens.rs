//! The token routes: create, list, revoke, rotate the signing key (admin), mint a worker token
//! (scheduler, admin).

use async_trait::async_trait;
use leviathan_core::{WorkerTokens, secret::Secret, store::BoxError};
use reqwest::Method;

use super::{ClientError, ControlPlaneClient};
use crate::wire::{
    AttemptId, CreateTokenRequest, IssuedToken, MintWorkerTokenRequest, RevokeTokenRequest,
    RevokedToken, RotatedKey, Timestamp, TokenInfo, TokenList,
};

impl ControlPlaneClient {
    /// `POST /v1/tokens`: a new token; its secret is in the answer only.
    pub async fn create_token(
        &self,
        request: &CreateTokenRequest,
    ) -> Result<IssuedToken, ClientError> {
        let mut call = self.call(Method::POST, "v1/tokens", &[]);
        Self::json_body(&mut call, request)?;
        self.json(&call).await
    }

    /// `GET /v1/tokens`: every token issued (never a secret).
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let list: TokenList = self.json(&self.call(Method::GET, "v1/tokens", &[])).await?;
        Ok(list.tokens)
    }

    /// `POST /v1/tokens/{id_or_name}/revoke`.
    pub async fn revoke_token(
        &self,
        id_or_name: &str,
        reason: Option<&str>,
    ) -> Result<RevokedToken, ClientError> {
        let mut call = self.call(Method::POST, "v1/tokens", &[id_or_name, "revoke"]);
        let request = RevokeTokenRequest {
            reason: reason.map(str::to_owned),
        };
        Self::json_body(&mut call, &request)?;
        self.json(&call).await
    }

    /// `POST /v1/tokens/rotate-key`: a new signing key; tokens of the previous keys stay valid
    /// until they expire.
    pub async fn rotate_key(&self) -> Result<RotatedKey, ClientError> {
        self.json(&self.call(Method::POST, "v1/tokens/rotate-key", &[]))
            .await
    }

    /// `POST /v1/attempts/{id}/token`: the worker token of a live attempt, expiring at
    /// `expires`.
    pub async fn mint_worker_token(
        &self,
        attempt: &AttemptId,
        expires: Timestamp,
    ) -> Result<IssuedToken, ClientError> {
        let mut call = self.call(Method::POST, "v1/attempts", &[attempt.as_str(), "token"]);
        Self::json_body(&mut call, &MintWorkerTokenRequest { expires })?;
        self.json(&call).await
    }
}

/// A scheduler that reports over HTTP mints its workers' tokens through the API (its token must
/// be a scheduler's or an admin's).
#[async_trait]
impl WorkerTokens for ControlPlaneClient {
    async fn mint(&self, attempt: &AttemptId, expires: Timestamp) -> Result<Secret, BoxError> {
        let issued = self.mint_worker_token(attempt, expires).await?;
        Ok(Secret::new(issued.token))
    }
}
