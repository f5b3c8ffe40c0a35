//! Who a request is: the bearer token turned into a [`Principal`]. A signed `lvt1.` token is
//! checked by the keyring (genuine, unexpired) and the registry of the log's `token.revoked`
//! events; the static token of the token file or `LEVIATHAN_CONTROL_PLANE_TOKEN` is the legacy
//! admin. Issuing and revoking tokens lives in [`issue`].

pub mod issue;
pub mod minter;
mod registry;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, RwLock},
};

use leviathan_core::{
    EventStore, EventStoreError, Timestamp,
    auth::{
        Principal, Role,
        token::{Grant, Keyring, KeyringError, PREFIX, Rejected, SignedToken},
    },
    id::{KeyId, TokenId},
};

use self::registry::Registry;

use crate::{
    config::BearerToken,
    keyring_file::{self, KEEP_RETIRED, KeyringFileError},
};

/// The token id events record for writes made with the static admin token.
pub const STATIC_ADMIN_TOKEN_ID: &str = "static-admin";

/// Why a bearer token is not accepted (401). Never quotes the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unauthenticated {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token (send `Authorization: Bearer <token>`)")]
    Missing,
    /// Neither the static admin token nor a genuine signed token.
    #[error("invalid bearer token")]
    Invalid,
    /// A signed token the keyring refuses (expired, unknown key, bad signature).
    #[error("{0}")]
    Rejected(Rejected),
    /// A genuine token that an admin revoked.
    #[error("the token `{0}` was revoked")]
    Revoked(TokenId),
    /// The log, which says whether the token was revoked, cannot be read now.
    #[error("cannot check the token's revocation: {0}")]
    Unverifiable(EventStoreError),
}

/// Why the keyring could not be changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringChangeError {
    /// Generating or saving the key failed.
    #[error(transparent)]
    File(#[from] KeyringFileError),
    /// The keyring refused the change.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// The control plane's credentials: the static admin token, the signing keyring and the
/// registry of issued and revoked tokens.
pub struct Authority {
    /// `None` for an authority that only mints (it accepts no static token).
    admin: Option<BearerToken>,
    keyring: RwLock<Keyring>,
    keyring_file: Option<PathBuf>,
    registry: tokio::sync::RwLock<Registry>,
    /// When each token was last accepted by this process (kept in memory only).
    last_used: Mutex<HashMap<TokenId, Timestamp>>,
}

impl Authority {
    /// An authority accepting `admin` as the static admin token and the tokens `keyring` signed;
    /// rotations are saved to `keyring_file` when there is one.
    pub fn new(admin: BearerToken, keyring: Keyring, keyring_file: Option<PathBuf>) -> Self {
        Self {
            admin: Some(admin),
            keyring: RwLock::new(keyring),
            keyring_file,
            registry: tokio::sync::RwLock::default(),
            last_used: Mutex::default(),
        }
    }

    /// An authority that signs with `keyring` and accepts no static token: for a process that
    /// mints tokens but serves no requests.
    fn minting_only(keyring: Keyring) -> Self {
        Self {
            admin: None,
            keyring: RwLock::new(keyring),
            keyring_file: None,
            registry: tokio::sync::RwLock::default(),
            last_used: Mutex::default(),
        }
    }

    /// The principal `presented` authenticates, as of `now`. A signed token's revocation is
    /// checked against the log's `token.revoked` events as read up to `head` (the last `seq` the
    /// caller folded), reading `events` again only when that is behind or older than a second.
    pub async fn authenticate(
        &self,
        presented: &str,
        events: &dyn EventStore,
        head: u64,
        now: Timestamp,
    ) -> Result<Principal, Unauthenticated> {
        if !presented.starts_with(PREFIX) {
            let admin = self.admin.as_ref();
            return match admin.is_some_and(|a| a.matches(presented.as_bytes())) {
                true => Ok(static_admin()),
                false => Err(Unauthenticated::Invalid),
            };
        }
        let claims = self
            .read_keyring()
            .verify(presented, now)
            .map_err(Unauthenticated::Rejected)?;
        if self.is_revoked(&claims.token_id, events, head).await? {
            return Err(Unauthenticated::Revoked(claims.token_id));
        }
        let mut last_used = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        last_used.insert(claims.token_id.clone(), now);
        Ok(claims.principal())
    }

    /// Whether `token` was revoked: from what was read when that is current (a shared lock, so
    /// requests do not queue behind each other), else after reading the log past it.
    async fn is_revoked(
        &self,
        token: &TokenId,
        events: &dyn EventStore,
        head: u64,
    ) -> Result<bool, Unauthenticated> {
        {
            let registry = self.registry.read().await;
            if registry.is_current(head) {
                return Ok(registry.is_revoked(token));
            }
        }
        let mut registry = self.registry.write().await;
        registry
            .catch_up(events)
            .await
            .map_err(Unauthenticated::Unverifiable)?;
        Ok(registry.is_revoked(token))
    }

    /// Signs `grant` with the current signing key.
    pub fn sign(&self, grant: Grant) -> Result<SignedToken, KeyringError> {
        self.read_keyring().sign(grant)
    }

    /// Makes a new key the signing key; the previous ones keep verifying until every token they
    /// signed has expired. Saved to the keyring file first, so a restart keeps it.
    pub fn rotate_key(&self) -> Result<KeyId, KeyringChangeError> {
        let now = Timestamp::now();
        let next = keyring_file::generate_key(now)?;
        let id = next.id().clone();
        let mut keyring = self.keyring.write().unwrap_or_else(|p| p.into_inner());
        let mut rotated = keyring.clone();
        rotated.rotate(next, now, KEEP_RETIRED)?;
        if let Some(file) = &self.keyring_file {
            keyring_file::write_keyring(file, &rotated)?;
        }
        *keyring = rotated;
        Ok(id)
    }

    fn read_keyring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        // A panic while holding the lock leaves a whole keyring behind (rotation swaps it in
        // one assignment), so a poisoned lock is still good to read.
        self.keyring.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("keyring_file", &self.keyring_file)
            .finish_non_exhaustive()
    }
}

/// The principal of the static admin token.
pub fn static_admin() -> Principal {
    // A constant that satisfies the id rules.
    #[allow(clippy::expect_used)]
    let id = TokenId::new(STATIC_ADMIN_TOKEN_ID).expect("a valid token id");
    Principal::new(id, Role::Admin)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use leviathan_core::{
        AppendRequest, NewEvent, catalogue::TokenRevoked, id::EventId, memory::MemoryEventStore,
    };

    use super::{registry::FRESHNESS, *};

    fn authority() -> Authority {
        let key = keyring_file::generate_key(Timestamp::now()).unwrap();
        Authority::new(
            BearerToken::new("static-admin-token-0123").unwrap(),
            Keyring::new(key),
            None,
        )
    }

    #[tokio::test]
    async fn the_static_token_is_admin_and_signed_tokens_carry_their_claims() {
        let authority = authority();
        let log = MemoryEventStore::new();
        let now = Timestamp::now();
        let admin = authority
            .authenticate("static-admin-token-0123", &log, 0, now)
            .await
            .unwrap();
        assert_eq!(admin, static_admin());
        let signed = authority
            .sign(Grant {
                token_id: TokenId::new("tok-r").unwrap(),
                role: Role::Reader,
                attempt: None,
                expires: now.saturating_add(Duration::from_secs(60)),
            })
            .unwrap();
        authority.rotate_key().unwrap();
        let reader = authority
            .authenticate(signed.token.expose(), &log, 0, now)
            .await
            .unwrap();
        assert_eq!(reader.role, Role::Reader);
        assert!(matches!(
            authority
                .authenticate("static-admin-token-0124", &log, 0, now)
                .await,
            Err(Unauthenticated::Invalid)
        ));
        let later = now.saturating_add(Duration::from_secs(61));
        assert!(matches!(
            authority
                .authenticate(signed.token.expose(), &log, 0, later)
                .await,
            Err(Unauthenticated::Rejected(Rejected::Expired(_)))
        ));
    }

    /// An authority that accepted a reader token (reading the log then) before another replica
    /// recorded its revocation; the token, as presented.
    async fn accepted_then_revoked_elsewhere(
        authority: &Authority,
        log: &MemoryEventStore,
        now: Timestamp,
    ) -> String {
        let token_id = TokenId::new("tok-reader").unwrap();
        let grant = Grant {
            token_id: token_id.clone(),
            role: Role::Reader,
            attempt: None,
            expires: now.saturating_add(Duration::from_secs(3600)),
        };
        let token = authority.sign(grant).unwrap().token.expose().to_owned();
        authority.authenticate(&token, log, 0, now).await.unwrap();
        let payload = TokenRevoked {
            token_id,
            reason: None,
        };
        let id = EventId::new("token-revoked-elsewhere").unwrap();
        let event = NewEvent::new(id, now, Some("control-plane".into()), &payload);
        log.append(AppendRequest::new(vec![event])).await.unwrap();
        token
    }

    #[tokio::test(start_paused = true)]
    async fn another_replicas_revocation_applies_within_a_second_without_a_read_per_request() {
        let (authority, log, now) = (authority(), MemoryEventStore::new(), Timestamp::now());
        let token = accepted_then_revoked_elsewhere(&authority, &log, now).await;
        assert!(
            authority.authenticate(&token, &log, 0, now).await.is_ok(),
            "what was read a moment ago is used, not read again"
        );
        tokio::time::advance(FRESHNESS).await;
        assert!(matches!(
            authority.authenticate(&token, &log, 0, now).await,
            Err(Unauthenticated::Revoked(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_this_process_folded_applies_at_once() {
        let (authority, log, now) = (authority(), MemoryEventStore::new(), Timestamp::now());
        let token = accepted_then_revoked_elsewhere(&authority, &log, now).await;
        assert!(matches!(
            authority.authenticate(&token, &log, 1, now).await,
            Err(Unauthenticated::Revoked(_))
        ));
    }
}
