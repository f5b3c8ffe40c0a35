//! Signed, expiring bearer tokens and the keyring that signs them.
//!
//! A token is `lvt1.<claims>.<mac>`: the [`Claims`] (key id, token id, role, attempt, expiry) as
//! base64url JSON, then the HMAC-SHA256 of `lvt1.<claims>` under that key of the control plane's
//! [`Keyring`], base64url. Checking one needs no lookup: the keyring says whether it is genuine,
//! the claims whether it expired, the log whether it was revoked. The 256-bit MAC is what cannot
//! be guessed, as a 256-bit random token cannot; the claims are not secret.
//!
//! Rotation adds a signing key and keeps the previous ones for verification until every token
//! they signed has expired, so running workers are never refused.

use std::{fmt, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::principal::{Principal, Role};
use crate::{
    id::{AttemptId, KeyId, TokenId},
    secret::Secret,
    timestamp::Timestamp,
};

/// How every signed token starts (and how it is told from a legacy static token).
pub const PREFIX: &str = "lvt1.";
/// The longest token accepted; longer input is refused before it is decoded.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Bytes of a signing key's secret.
pub const KEY_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// What a genuine token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The key that signed it.
    pub key_id: KeyId,
    /// Its public id.
    pub token_id: TokenId,
    /// Its role.
    pub role: Role,
    /// For a worker token, its attempt.
    pub attempt: Option<AttemptId>,
    /// When it stops being accepted (whole seconds).
    pub expires: Timestamp,
}

impl Claims {
    /// The principal a request with this token acts as.
    pub fn principal(&self) -> Principal {
        Principal {
            token_id: self.token_id.clone(),
            role: self.role,
            attempt: self.attempt.clone(),
        }
    }
}

/// The claims as the token carries them.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireClaims {
    kid: KeyId,
    id: TokenId,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attempt: Option<AttemptId>,
    exp: i64,
}

/// What to sign: a token's id, role, attempt (workers only) and expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's public id.
    pub token_id: TokenId,
    /// Its role.
    pub role: Role,
    /// The attempt, for a worker token (and only for one).
    pub attempt: Option<AttemptId>,
    /// Its expiry; cut to whole seconds.
    pub expires: Timestamp,
}

/// A token just signed: the secret to hand over once, and its claims.
#[derive(Clone, Debug)]
pub struct SignedToken {
    /// The bearer string; printed nowhere.
    pub token: Secret,
    /// What it says.
    pub claims: Claims,
}

/// Why a presented token is not accepted. The message never quotes the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// Not a signed token of this format.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// Signed by a key this keyring does not hold (never held, or pruned after rotation).
    #[error("the token was signed by key `{0}`, which this control plane does not hold")]
    UnknownKey(KeyId),
    /// The signature does not match.
    #[error("the token's signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("the token expired at {0}")]
    Expired(Timestamp),
}

/// Why a grant or a keyring change cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// A worker token needs its attempt, and only a worker token may have one.
    #[error("a {role} token {}", if *.role == Role::Worker { "needs an attempt" } else { "cannot be bound to an attempt" })]
    AttemptScope {
        /// The role asked for.
        role: Role,
    },
    /// Two keys with one id.
    #[error("the keyring already holds a key `{0}`")]
    DuplicateKey(KeyId),
    /// The keyring's serialized form is unusable.
    #[error("the keyring is unreadable: {0}")]
    Unreadable(String),
}

/// One signing key: an id, a 256-bit secret, when it was made and when it stopped signing.
#[derive(Clone)]
pub struct SigningKey {
    id: KeyId,
    secret: [u8; KEY_BYTES],
    created: Timestamp,
    retired: Option<Timestamp>,
}

impl SigningKey {
    /// A key from its id and 32 secret bytes (drawn by the caller from the operating system).
    pub fn new(id: KeyId, secret: [u8; KEY_BYTES], created: Timestamp) -> Self {
        Self {
            id,
            secret,
            created,
            retired: None,
        }
    }

    /// Its id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// When it was made.
    pub fn created(&self) -> Timestamp {
        self.created
    }

    /// When a rotation retired it (it still verifies, it no longer signs).
    pub fn retired(&self) -> Option<Timestamp> {
        self.retired
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        #[allow(clippy::expect_used)]
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts any key length")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

/// The control plane's signing keys: the newest signs, every one verifies.
#[derive(Clone, Debug)]
pub struct Keyring {
    /// In creation order; the last one signs.
    keys: Vec<SigningKey>,
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(first: SigningKey) -> Self {
        Self { keys: vec![first] }
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        // Built with one key and never emptied (pruning keeps the signing key).
        &self.keys[self.keys.len() - 1]
    }

    /// Signs `grant` with the signing key.
    pub fn sign(&self, grant: Grant) -> Result<SignedToken, KeyringError> {
        if (grant.role == Role::Worker) != grant.attempt.is_some() {
            return Err(KeyringError::AttemptScope { role: grant.role });
        }
        let key = self.signing_key();
        let exp = grant.expires.unix_micros().div_euclid(1_000_000);
        let wire = WireClaims {
            kid: key.id.clone(),
            id: grant.token_id,
            role: grant.role,
            attempt: grant.attempt,
            exp,
        };
        // Plain structs of strings and numbers: serialization cannot fail.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        let mut token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
        let tag = key.mac().chain_update(token.as_bytes()).finalize();
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(tag.into_bytes()));
        let claims = claims_of(wire).ok_or(KeyringError::AttemptScope { role: grant.role })?;
        Ok(SignedToken {
            token: Secret::new(token),
            claims,
        })
    }

    /// The claims of `presented` if a key of this keyring signed it and it has not expired at
    /// `now`. Revocation is the caller's to check (it lives in the log).
    pub fn verify(&self, presented: &str, now: Timestamp) -> Result<Claims, Rejected> {
        if presented.len() > MAX_TOKEN_LEN {
            return Err(Rejected::Malformed("too long"));
        }
        let rest = presented
            .strip_prefix(PREFIX)
            .ok_or(Rejected::Malformed("not a signed token"))?;
        let (claims_b64, tag_b64) = rest
            .split_once('.')
            .ok_or(Rejected::Malformed("no signature"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag_b64)
            .map_err(|_| Rejected::Malformed("the signature is not base64url"))?;
        let json = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| Rejected::Malformed("the claims are not base64url"))?;
        let wire: WireClaims = serde_json::from_slice(&json)
            .map_err(|_| Rejected::Malformed("the claims do not decode"))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == wire.kid)
            .ok_or_else(|| Rejected::UnknownKey(wire.kid.clone()))?;
        let signed = &presented[..PREFIX.len() + claims_b64.len()];
        key.mac()
            .chain_update(signed.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| Rejected::BadSignature)?;
        let claims = claims_of(wire).ok_or(Rejected::Malformed("role and attempt disagree"))?;
        if claims.expires <= now {
            return Err(Rejected::Expired(claims.expires));
        }
        Ok(claims)
    }

    /// Makes `next` the signing key: the current one is retired at `now` and keeps verifying;
    /// keys retired more than `keep_retired` before `now` (longer than any token may live) are
    /// dropped. Returns the ids of the keys dropped.
    pub fn rotate(
        &mut self,
        next: SigningKey,
        now: Timestamp,
        keep_retired: Duration,
    ) -> Result<Vec<KeyId>, KeyringError> {
        if self.keys.iter().any(|k| k.id == next.id) {
            return Err(KeyringError::DuplicateKey(next.id));
        }
        let mut dropped = Vec::new();
        self.keys.retain(|k| match k.retired {
            Some(at) if at.saturating_add(keep_retired) < now => {
                dropped.push(k.id.clone());
                false
            }
            _ => true,
        });
        let len = self.keys.len();
        self.keys[len - 1].retired = Some(now);
        self.keys.push(next);
        Ok(dropped)
    }

    /// The keyring as a JSON document (secrets in hex): what the control plane keeps in its
    /// private keyring file.
    pub fn to_json(&self) -> String {
        let file = KeyringFile {
            keys: self
                .keys
                .iter()
                .map(|k| KeyEntry {
                    id: k.id.clone(),
                    secret: hex::encode(k.secret),
                    created: k.created,
                    retired: k.retired,
                })
                .collect(),
        };
        // Plain structs of strings: serialization cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Reads [`Keyring::to_json`]'s document back; errors never quote a secret.
    pub fn from_json(text: &str) -> Result<Self, KeyringError> {
        let file: KeyringFile = serde_json::from_str(text).map_err(|e| {
            KeyringError::Unreadable(format!("line {}: {}", e.line(), json_error_kind(&e)))
        })?;
        let mut keys: Vec<SigningKey> = Vec::with_capacity(file.keys.len());
        for (i, entry) in file.keys.into_iter().enumerate() {
            let mut secret = [0u8; KEY_BYTES];
            hex::decode_to_slice(&entry.secret, &mut secret).map_err(|_| {
                KeyringError::Unreadable(format!(
                    "keys[{i}] (`{}`): the secret is not {KEY_BYTES} bytes of hex",
                    entry.id
                ))
            })?;
            if keys.iter().any(|k| k.id == entry.id) {
                return Err(KeyringError::DuplicateKey(entry.id));
            }
            keys.push(SigningKey {
                id: entry.id,
                secret,
                created: entry.created,
                retired: entry.retired,
            });
        }
        if keys.is_empty() {
            return Err(KeyringError::Unreadable("it holds no key".to_owned()));
        }
        Ok(Self { keys })
    }
}

fn claims_of(wire: WireClaims) -> Option<Claims> {
    if (wire.role == Role::Worker) != wire.attempt.is_some() {
        return None;
    }
    Some(Claims {
        key_id: wire.kid,
        token_id: wire.id,
        role: wire.role,
        attempt: wire.attempt,
        expires: Timestamp::from_unix_micros(wire.exp.checked_mul(1_000_000)?)?,
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: KeyId,
    secret: String,
    created: Timestamp,
    #[serde(default)]
    retired: Option<Timestamp>,
}

/// The kind of a JSON error without serde's message, which may quote the (secret) input.
fn json_error_kind(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not a keyring (expected {\"keys\": [...]})",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn key(id: &str, byte: u8) -> SigningKey {
        SigningKey::new(
            KeyId::new(id).unwrap(),
            [byte; KEY_BYTES],
            at("2026-01-01T00:00:00Z"),
        )
    }

    fn grant(role: Role, attempt: Option<&str>, expires: &str) -> Grant {
        Grant {
            token_id: TokenId::new("tok-1").unwrap(),
            role,
            attempt: attempt.map(|a| AttemptId::new(a).unwrap()),
            expires: at(expires),
        }
    }

    const NOON: &str = "2026-01-01T12:00:00Z";

    #[test]
    fn a_signed_token_verifies_to_its_claims_until_it_expires() {
        let ring = Keyring::new(key("k1", 1));
        let signed = ring
            .sign(grant(Role::Worker, Some("a1"), "2026-01-01T13:00:00.9Z"))
            .unwrap();
        let token = signed.token.expose();
        assert!(token.starts_with(PREFIX) && token.len() < 200, "{token}");
        let claims = ring.verify(token, at(NOON)).unwrap();
        assert_eq!(claims, signed.claims);
        assert_eq!(claims.expires, at("2026-01-01T13:00:00Z"));
        assert_eq!(
            claims.principal(),
            Principal::worker(
                TokenId::new("tok-1").unwrap(),
                AttemptId::new("a1").unwrap()
            )
        );
        assert_eq!(
            ring.verify(token, at("2026-01-01T13:00:00Z")),
            Err(Rejected::Expired(at("2026-01-01T13:00:00Z")))
        );
    }

    /// What an attacker holding one token would try: change its claims, splice another
    /// token's signature, sign with a key of their own, or send garbage.
    #[test]
    fn forged_tokens_are_rejected() {
        let ring = Keyring::new(key("k1", 1));
        let worker = ring
            .sign(grant(Role::Worker, Some("a1"), "2027-01-01T00:00:00Z"))
            .unwrap();
        let reader = ring
            .sign(grant(Role::Reader, None, "2027-01-01T00:00:00Z"))
            .unwrap();
        let (w_claims, w_tag) = worker.token.expose().rsplit_once('.').unwrap();
        let (_, r_tag) = reader.token.expose().rsplit_once('.').unwrap();
        let admin_claims =
            URL_SAFE_NO_PAD.encode(br#"{"kid":"k1","id":"tok-1","role":"admin","exp":1830297600}"#);
        let mallory = Keyring::new(key("k1", 9))
            .sign(grant(Role::Admin, None, "2027-01-01T00:00:00Z"))
            .unwrap();
        for forged in [
            format!("{PREFIX}{admin_claims}.{w_tag}"),
            format!("{w_claims}.{r_tag}"),
            mallory.token.expose().to_owned(),
        ] {
            assert_eq!(ring.verify(&forged, at(NOON)), Err(Rejected::BadSignature));
        }
        for garbage in [
            String::new(),
            "0123456789abcdef0123456789abcdef".to_owned(),
            format!("{PREFIX}{w_claims}"),
            format!("{PREFIX}!!.{w_tag}"),
            format!("{w_claims}.%%"),
            format!("{PREFIX}{}", "A".repeat(MAX_TOKEN_LEN)),
        ] {
            assert!(
                matches!(ring.verify(&garbage, at(NOON)), Err(Rejected::Malformed(_))),
                "{garbage}"
            );
        }
        let other_kid = Keyring::new(key("k2", 1))
            .sign(grant(Role::Admin, None, "2027-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(
            ring.verify(other_kid.token.expose(), at(NOON)),
            Err(Rejected::UnknownKey(KeyId::new("k2").unwrap()))
        );
    }

    #[test]
    fn only_worker_tokens_carry_an_attempt() {
        let ring = Keyring::new(key("k1", 1));
        for (role, attempt) in [(Role::Worker, None), (Role::Reader, Some("a1"))] {
            assert_eq!(
                ring.sign(grant(role, attempt, NOON)).unwrap_err(),
                KeyringError::AttemptScope { role }
            );
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_prunes_keys_no_token_can_need() {
        let mut ring = Keyring::new(key("k1", 1));
        let old = ring
            .sign(grant(Role::Worker, Some("a1"), "2026-01-02T00:00:00Z"))
            .unwrap();
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(ring.rotate(key("k2", 2), at(NOON), week), Ok(vec![]));
        let new = ring
            .sign(grant(Role::Reader, None, "2026-01-02T00:00:00Z"))
            .unwrap();
        assert_eq!(new.claims.key_id, "k2");
        assert_eq!(
            ring.verify(old.token.expose(), at(NOON)).unwrap().key_id,
            "k1"
        );
        assert!(ring.verify(new.token.expose(), at(NOON)).is_ok());
        assert_eq!(
            ring.rotate(key("k2", 3), at(NOON), week),
            Err(KeyringError::DuplicateKey(KeyId::new("k2").unwrap()))
        );
        let later = at("2026-01-09T12:00:01Z");
        assert_eq!(
            ring.rotate(key("k3", 3), later, week),
            Ok(vec![KeyId::new("k1").unwrap()])
        );
        let ids: Vec<&str> = ring.keys().iter().map(|k| k.id().as_str()).collect();
        assert_eq!(ids, ["k2", "k3"]);
        assert_eq!(ring.keys()[0].retired(), Some(later));
    }

    #[test]
    fn the_keyring_file_round_trips_and_never_quotes_a_secret() {
        let mut ring = Keyring::new(key("k1", 0xab));
        ring.rotate(key("k2", 0xcd), at(NOON), Duration::from_secs(60))
            .unwrap();
        let json = ring.to_json();
        let back = Keyring::from_json(&json).unwrap();
        let signed = back
            .sign(grant(Role::Admin, None, "2027-01-01T00:00:00Z"))
            .unwrap();
        assert!(ring.verify(signed.token.expose(), at(NOON)).is_ok());
        assert!(!format!("{ring:?}").contains("abab"), "{ring:?}");
        let secret = "cd".repeat(KEY_BYTES);
        for broken in [
            json.replace(&secret, "cdcd"),
            json.replace("\"keys\"", "\"kes\""),
            json[..json.len() / 2].to_owned(),
            r#"{"keys":[]}"#.to_owned(),
        ] {
            let err = Keyring::from_json(&broken).unwrap_err().to_string();
            assert!(!err.contains("cdcd"), "{err}");
        }
    }
}
