//! What a control plane is configured with: its bearer token and its limits.

use std::{fmt, path::PathBuf, time::Duration};

use leviathan_core::{Sha256Digest, auth::token::Keyring};
use rand::TryRngCore;
use subtle::ConstantTimeEq;

/// Why a string cannot be a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Too short to resist guessing.
    #[error("the token has {length} characters; at least {min} are required")]
    TooShort {
        /// Its length.
        length: usize,
        /// The minimum.
        min: usize,
    },
    /// Too long for an HTTP header.
    #[error("the token has {length} characters; at most {max} are allowed")]
    TooLong {
        /// Its length.
        length: usize,
        /// The maximum.
        max: usize,
    },
    /// Contains characters an `Authorization` header cannot carry verbatim.
    #[error(
        "the token may contain only visible ASCII characters (no spaces or control characters)"
    )]
    BadCharacter,
    /// The operating system's random number generator failed.
    #[error("cannot draw random bytes from the operating system: {0}")]
    Random(String),
}

/// The shared secret clients present as `Authorization: Bearer <token>`.
///
/// It never appears in `Debug` or `Display` output; [`BearerToken::expose`] is the one, explicit
/// way to read it. Comparison is constant-time over SHA-256 digests, so neither the content nor
/// the length of the token leaks through timing.
#[derive(Clone)]
pub struct BearerToken {
    secret: String,
    digest: Sha256Digest,
}

impl BearerToken {
    /// The fewest characters a token may have.
    pub const MIN_LEN: usize = 16;
    /// The most characters a token may have.
    pub const MAX_LEN: usize = 1024;
    /// Random bytes in a generated token (256 bits, written as 64 hex characters).
    pub const GENERATED_BYTES: usize = 32;

    /// Wraps a token after checking that it can travel in an HTTP header and is not trivially
    /// short.
    pub fn new(secret: impl Into<String>) -> Result<Self, TokenError> {
        let secret = secret.into();
        let length = secret.chars().count();
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadCharacter);
        }
        if length < Self::MIN_LEN {
            return Err(TokenError::TooShort {
                length,
                min: Self::MIN_LEN,
            });
        }
        if length > Self::MAX_LEN {
            return Err(TokenError::TooLong {
                length,
                max: Self::MAX_LEN,
            });
        }
        let digest = Sha256Digest::of(secret.as_bytes());
        Ok(Self { secret, digest })
    }

    /// A fresh token: 256 bits from the operating system's random number generator, in hex.
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0u8; Self::GENERATED_BYTES];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| TokenError::Random(e.to_string()))?;
        Self::new(hex::encode(bytes))
    }

    /// The secret itself, for the one place that must send or store it.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// True when `presented` is this token, compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented = Sha256Digest::of(presented);
        presented.as_bytes().ct_eq(self.digest.as_bytes()).into()
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// The bounds a control plane puts on requests, each answered with a JSON 4xx when exceeded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest JSON request body, in bytes.
    pub json_body_bytes: usize,
    /// Largest artifact upload, in bytes (uploads are hashed and spooled to a temporary file as
    /// they arrive).
    pub artifact_bytes: u64,
    /// Verified uploads written into the artifact store at once: each holds its content in
    /// memory while it is written (the stores take a value whole), so this, not the number of
    /// uploads, bounds their memory (about this many times [`Limits::artifact_bytes`]).
    pub artifact_writes: usize,
    /// Most events in one ingest bundle (and ids in one lookup).
    pub events_per_bundle: usize,
    /// Most items in one page of events or attempts.
    pub page_size: usize,
    /// Deadline of an ordinary request.
    pub request_timeout: Duration,
    /// Deadline of artifact transfers and chain verification.
    pub long_request_timeout: Duration,
    /// Interval of keep-alive comments on event streams.
    pub stream_keep_alive: Duration,
    /// Most protected requests handled at once; more are answered 429 at once. With
    /// [`Limits::json_body_bytes`] it bounds the memory that JSON bodies take.
    pub concurrent_requests: usize,
    /// Requests a second one worker, reader or operator token may make on average (admin and
    /// scheduler tokens are not paced); 0 turns the rate limit off. More are answered 429 with
    /// `Retry-After`.
    pub requests_per_second_per_principal: u32,
    /// Requests one principal may make in a burst above its rate.
    pub request_burst_per_principal: u32,
    /// Event streams one principal may hold open at once; more are answered 429.
    pub streams_per_principal: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_body_bytes: 8 * 1024 * 1024,
            artifact_bytes: 256 * 1024 * 1024,
            artifact_writes: 2,
            events_per_bundle: 10_000,
            page_size: 5_000,
            request_timeout: Duration::from_secs(30),
            long_request_timeout: Duration::from_secs(600),
            stream_keep_alive: Duration::from_secs(15),
            concurrent_requests: 64,
            requests_per_second_per_principal: 100,
            request_burst_per_principal: 200,
            streams_per_principal: 8,
        }
    }
}

/// Everything [`crate::router`] needs besides the stores.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiConfig {
    /// The static token: an admin token (the token file or `LEVIATHAN_CONTROL_PLANE_TOKEN`).
    pub token: BearerToken,
    /// The keys that sign and verify `lvt1.` tokens; without one, the server makes a keyring
    /// of its own that lives as long as it does.
    pub keyring: Option<Keyring>,
    /// Where key rotations are saved (the keyring file), if anywhere.
    pub keyring_file: Option<PathBuf>,
    /// Request limits.
    pub limits: Limits,
    /// Put `GET /metrics` behind the token too (it is open by default, like `/healthz`).
    pub metrics_require_auth: bool,
    /// The model gateway, if this control plane runs one.
    #[cfg(feature = "server")]
    pub gateway: Option<crate::gateway::GatewayConfig>,
}

impl ApiConfig {
    /// Default limits, open metrics.
    pub fn new(token: BearerToken) -> Self {
        Self {
            token,
            keyring: None,
            keyring_file: None,
            limits: Limits::default(),
            metrics_require_auth: false,
            #[cfg(feature = "server")]
            gateway: None,
        }
    }

    /// Verifies and signs tokens with `keyring`, saving rotations to `file` when given.
    pub fn with_keyring(mut self, keyring: Keyring, file: Option<PathBuf>) -> Self {
        self.keyring = Some(keyring);
        self.keyring_file = file;
        self
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs the model gateway with `gateway`.
    #[cfg(feature = "server")]
    pub fn with_gateway(mut self, gateway: crate::gateway::GatewayConfig) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Puts `/metrics` behind the token.
    pub fn with_metrics_auth(mut self, required: bool) -> Self {
        self.metrics_require_auth = required;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_hex_and_distinct() {
        let a = BearerToken::generate().unwrap();
        let b = BearerToken::generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = BearerToken::new("s3cr3t-token-value-0123").unwrap();
        let shown = format!("{token:?} {:?}", ApiConfig::new(token.clone()));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn matching_is_exact() {
        let token = BearerToken::new("0123456789abcdef").unwrap();
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn bad_tokens_are_refused() {
        assert!(matches!(
            BearerToken::new("short"),
            Err(TokenError::TooShort { length: 5, .. })
        ));
        assert_eq!(
            BearerToken::new("with space 0123456789").unwrap_err(),
            TokenError::BadCharacter
        );
        assert!(matches!(
            BearerToken::new("x".repeat(2000)),
            Err(TokenError::TooLong { .. })
        ));
    }
}
