//! Forges host the pull requests. [`Forge`] is the port: the primitives a forge offers (find the
//! open pull request of a head branch, open one, list the open ones, tell a pull request's
//! state). [`open_pull_request`] holds the delivery policy on top of them (reuse an open pull
//! request for the branch, create one otherwise, and treat "already exists" as a race to resolve
//! by looking again). The scheduler reads the forge too: [`Forge::list_open`] and
//! [`Forge::state`] reconcile the open-PR latch with what the forge says.
//!
//! The binary wires a real forge in (GitHub through octocrab);
//! [`MemoryForge`](crate::memory::MemoryForge) is the in-memory one for tests.

use std::fmt;

use async_trait::async_trait;

use crate::model::PrState;

/// A pull request to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestSpec {
    /// Head branch (in the same repository).
    pub head: String,
    /// Base branch.
    pub base: String,
    /// Title.
    pub title: String,
    /// Body (markdown).
    pub body: String,
    /// Open as a draft.
    pub draft: bool,
}

/// A pull request the forge returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// Its number, as the forge assigned it.
    pub number: u64,
    /// Its web URL, as the forge reported it.
    pub url: String,
    /// True when an already open pull request for the branch was reused.
    pub reused: bool,
    /// Its body as the forge holds it (a later delivery adds a line for its attempt).
    pub body: String,
}

/// An open pull request as a listing reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenPullRequest {
    /// Its number.
    pub number: u64,
    /// Its web URL (empty when the forge reported none).
    pub url: String,
    /// Its head branch (without an `owner:` prefix).
    pub head: String,
}

/// What went wrong talking to the forge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForgeError {
    /// Bad credentials, missing permissions or an unknown repository (401, 403, 404).
    #[error("forge refused the request (HTTP {status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The forge's message.
        message: String,
    },
    /// A primary or secondary rate limit.
    #[error("forge rate limit: {0}")]
    RateLimited(String),
    /// A pull request for this head already exists (422).
    #[error("a pull request already exists: {0}")]
    AlreadyExists(String),
    /// Other validation failures (422), e.g. no commits between base and head.
    #[error("forge rejected the pull request: {0}")]
    Invalid(String),
    /// Server errors and transport failures.
    #[error("forge unavailable: {0}")]
    Unavailable(String),
}

impl ForgeError {
    /// True when a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited(_) | Self::Unavailable(_))
    }
}

/// Where pull requests are opened, for one repository. Implementations must be safe to call
/// concurrently.
#[async_trait]
pub trait Forge: Send + Sync + fmt::Debug {
    /// The open pull request whose head is `head` (a branch of the same repository), if any.
    async fn find_open(&self, head: &str) -> Result<Option<PullRequest>, ForgeError>;

    /// Opens a pull request.
    async fn create(&self, spec: &PullRequestSpec) -> Result<PullRequest, ForgeError>;

    /// Every open pull request whose head branch starts with `head_prefix` (all pages).
    async fn list_open(&self, head_prefix: &str) -> Result<Vec<OpenPullRequest>, ForgeError>;

    /// Whether pull request `number` is open, merged or closed without merging.
    async fn state(&self, number: u64) -> Result<PrState, ForgeError>;

    /// Replaces the body of pull request `number`.
    async fn update_body(&self, number: u64, body: &str) -> Result<(), ForgeError>;

    /// Adds `labels` to pull request `number`; labels it has already are kept once.
    async fn add_labels(&self, number: u64, labels: &[String]) -> Result<(), ForgeError>;
}

/// Reuses the open pull request for `spec.head`, or creates one; a concurrent creation
/// ("already exists") is resolved by looking the pull request up again.
pub async fn open_pull_request(
    forge: &dyn Forge,
    spec: &PullRequestSpec,
) -> Result<PullRequest, ForgeError> {
    if let Some(existing) = forge.find_open(&spec.head).await? {
        return Ok(existing);
    }
    match forge.create(spec).await {
        Err(ForgeError::AlreadyExists(message)) => match forge.find_open(&spec.head).await? {
            Some(existing) => Ok(existing),
            None => Err(ForgeError::Invalid(format!(
                "{message} (but no open pull request has head `{}`)",
                spec.head
            ))),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A forge whose listings and creations answer from a script, to drive the race between
    /// two creators (which no real forge interleaves on demand).
    #[derive(Debug, Default)]
    struct Scripted {
        listings: Mutex<Vec<Option<PullRequest>>>,
        creations: Mutex<Vec<Result<PullRequest, ForgeError>>>,
    }

    #[async_trait]
    impl Forge for Scripted {
        async fn find_open(&self, _head: &str) -> Result<Option<PullRequest>, ForgeError> {
            Ok(self.listings.lock().unwrap().remove(0))
        }
        async fn create(&self, _spec: &PullRequestSpec) -> Result<PullRequest, ForgeError> {
            self.creations.lock().unwrap().remove(0)
        }
        async fn list_open(&self, _prefix: &str) -> Result<Vec<OpenPullRequest>, ForgeError> {
            Err(ForgeError::Unavailable("not scripted".into()))
        }
        async fn state(&self, _number: u64) -> Result<PrState, ForgeError> {
            Err(ForgeError::Unavailable("not scripted".into()))
        }
        async fn update_body(&self, _number: u64, _body: &str) -> Result<(), ForgeError> {
            Err(ForgeError::Unavailable("not scripted".into()))
        }
        async fn add_labels(&self, _number: u64, _labels: &[String]) -> Result<(), ForgeError> {
            Err(ForgeError::Unavailable("not scripted".into()))
        }
    }

    fn spec() -> PullRequestSpec {
        PullRequestSpec {
            head: "agent/t-a".into(),
            base: "main".into(),
            title: "t".into(),
            body: "b".into(),
            draft: false,
        }
    }

    fn pr(number: u64, reused: bool) -> PullRequest {
        PullRequest {
            number,
            url: format!("https://github.com/o/r/pull/{number}"),
            reused,
            body: String::new(),
        }
    }

    #[tokio::test]
    async fn already_exists_is_resolved_by_looking_again() {
        let forge = Scripted {
            listings: Mutex::new(vec![None, Some(pr(4, true))]),
            creations: Mutex::new(vec![Err(ForgeError::AlreadyExists(
                "A pull request already exists for o:agent/t-a.".into(),
            ))]),
        };
        assert_eq!(
            open_pull_request(&forge, &spec()).await.unwrap(),
            pr(4, true)
        );

        let forge = Scripted {
            listings: Mutex::new(vec![None, None]),
            creations: Mutex::new(vec![Err(ForgeError::AlreadyExists("exists".into()))]),
        };
        let e = open_pull_request(&forge, &spec()).await.unwrap_err();
        assert!(matches!(e, ForgeError::Invalid(_)), "{e}");
        assert!(!e.is_transient());
    }

    #[tokio::test]
    async fn an_open_pull_request_is_reused_before_creating() {
        let forge = Scripted {
            listings: Mutex::new(vec![Some(pr(2, true))]),
            creations: Mutex::new(vec![]),
        };
        assert_eq!(
            open_pull_request(&forge, &spec()).await.unwrap(),
            pr(2, true)
        );
        let forge = Scripted {
            listings: Mutex::new(vec![None]),
            creations: Mutex::new(vec![Ok(pr(3, false))]),
        };
        assert_eq!(
            open_pull_request(&forge, &spec()).await.unwrap(),
            pr(3, false)
        );
    }
}
