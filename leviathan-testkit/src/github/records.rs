//! What tests and handlers share about the fake: where its REST API lives, the user every token
//! belongs to, and the records of pull requests and requests that tests read.

/// Path prefix of the REST API, as on GitHub Enterprise Server.
pub(super) const API_PREFIX: &str = "/api/v3";

/// Login of the user every accepted token belongs to; it authors pull requests.
pub(super) const USER_LOGIN: &str = "leviathan-bot";

/// State of a pull request, as GitHub reports it (a merged pull request is `Closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrState {
    /// Open for review.
    Open,
    /// Closed, merged or not.
    Closed,
}

/// What a test needs to know about a pull request, without going through the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSummary {
    /// Number within its repository, starting at 1.
    pub number: u64,
    /// Head branch name (no `owner:` prefix).
    pub head: String,
    /// Base branch name.
    pub base: String,
    /// Title.
    pub title: String,
    /// Body, `None` when created without one.
    pub body: Option<String>,
    /// Open or closed.
    pub state: PrState,
    /// Whether it was opened as a draft.
    pub draft: bool,
    /// Its labels.
    pub labels: Vec<String>,
    /// Whether it was merged.
    pub merged: bool,
    /// `html_url` as the REST API reports it.
    pub html_url: String,
}

/// One HTTP request the server received, kept so tests can check how clients behaved.
///
/// The `Authorization` header is recorded only as present or absent, never its value, so a test can
/// assert that a token was sent in a header and never appeared in `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path and query string exactly as requested.
    pub path: String,
    /// Whether an `Authorization` header was present.
    pub authorization: bool,
    /// Status code of the response.
    pub status: u16,
}
