//! The tokens the control plane issued and revoked, folded from the log's `token.issued` and
//! `token.revoked` events (the log is the only record, so every replica agrees once it has read
//! up to the same `seq`).

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use leviathan_core::{
    EventStore, EventStoreError, Timestamp,
    catalogue::{Payload, TokenIssued, TokenRevoked},
    id::TokenId,
};

use crate::wire::TokenInfo;

/// Events read per step while catching up.
const PAGE: usize = 1000;
/// How long what was read counts as current when this process appended nothing since: the
/// longest a revocation recorded by another replica takes to apply here.
pub(crate) const FRESHNESS: Duration = Duration::from_secs(1);

/// The issued and revoked tokens as of `seq` `scanned` of the log.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    scanned: u64,
    tokens: BTreeMap<TokenId, TokenInfo>,
    /// Revocations of tokens whose issuance the log does not hold (signed elsewhere).
    revoked_unknown: BTreeMap<TokenId, Timestamp>,
    caught_up_at: Option<tokio::time::Instant>,
}

impl Registry {
    /// Reads the log past what was read before.
    pub(crate) async fn catch_up(
        &mut self,
        events: &dyn EventStore,
    ) -> Result<(), EventStoreError> {
        loop {
            let page = events.read(self.scanned, PAGE).await?;
            for event in &page {
                match event.event_type.as_str() {
                    TokenIssued::EVENT_TYPE => {
                        if let Ok(issued) = TokenIssued::from_payload(&event.payload) {
                            self.issue(issued, event.timestamp);
                        }
                    }
                    TokenRevoked::EVENT_TYPE => {
                        if let Ok(revoked) = TokenRevoked::from_payload(&event.payload) {
                            self.revoke(&revoked.token_id, event.timestamp);
                        }
                    }
                    _ => {}
                }
                self.scanned = event.seq;
            }
            if page.len() < PAGE {
                self.caught_up_at = Some(tokio::time::Instant::now());
                return Ok(());
            }
        }
    }

    fn issue(&mut self, issued: TokenIssued, at: Timestamp) {
        let revoked_at = self.revoked_unknown.remove(&issued.token_id);
        self.tokens.insert(
            issued.token_id.clone(),
            TokenInfo {
                issued,
                issued_at: at,
                revoked_at,
                last_used: None,
            },
        );
    }

    fn revoke(&mut self, id: &TokenId, at: Timestamp) {
        match self.tokens.get_mut(id) {
            Some(record) => {
                record.revoked_at.get_or_insert(at);
            }
            None => {
                self.revoked_unknown.entry(id.clone()).or_insert(at);
            }
        }
    }

    /// True when `id` was revoked.
    pub(crate) fn is_revoked(&self, id: &TokenId) -> bool {
        self.revoked_unknown.contains_key(id)
            || self.tokens.get(id).is_some_and(|t| t.revoked_at.is_some())
    }

    /// True when what was read is as current as a revocation check needs: it covers `head` (the
    /// last `seq` this process folded) and was read within [`FRESHNESS`].
    pub(crate) fn is_current(&self, head: u64) -> bool {
        self.scanned >= head && self.caught_up_at.is_some_and(|at| at.elapsed() < FRESHNESS)
    }

    /// The token `id_or_name` names: by id first, else the one live token of that name (the
    /// newest, when several of that name were issued).
    pub(crate) fn find(&self, id_or_name: &str) -> Option<&TokenInfo> {
        let by_id = TokenId::new(id_or_name)
            .ok()
            .and_then(|id| self.tokens.get(&id));
        by_id.or_else(|| {
            self.tokens
                .values()
                .filter(|t| t.issued.name.as_deref() == Some(id_or_name))
                .max_by_key(|t| (t.revoked_at.is_none(), t.issued_at))
        })
    }

    /// True when a token that is neither revoked nor expired at `now` is named `name`.
    pub(crate) fn name_taken(&self, name: &str, now: Timestamp) -> bool {
        self.tokens.values().any(|t| {
            t.issued.name.as_deref() == Some(name)
                && t.revoked_at.is_none()
                && t.issued.expires > now
        })
    }

    /// Every issued token, oldest first, with its last use as `last_used` has it.
    pub(crate) fn list(&self, last_used: &HashMap<TokenId, Timestamp>) -> Vec<TokenInfo> {
        let mut tokens: Vec<TokenInfo> = self
            .tokens
            .values()
            .map(|t| TokenInfo {
                last_used: last_used.get(&t.issued.token_id).copied(),
                ..t.clone()
            })
            .collect();
        tokens.sort_by_key(|t| t.issued_at);
        tokens
    }
}
