//! GitHub (and GitHub Enterprise, through the API base URL) with octocrab.

use std::time::Duration;

use async_trait::async_trait;
use leviathan_core::{
    forge::{Forge, ForgeError, OpenPullRequest, PullRequest, PullRequestSpec},
    model::PrState,
    secret::Secret,
};
use octocrab::{Octocrab, models::IssueState, params, service::middleware::retry::RetryConfig};

/// Pull requests of one GitHub repository.
pub struct GitHubForge {
    client: Octocrab,
    owner: String,
    repo: String,
}

impl std::fmt::Debug for GitHubForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubForge")
            .field("owner", &self.owner)
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

impl GitHubForge {
    /// A forge for the repository `repo_url` names, through the REST API at `api_url`.
    pub fn new(api_url: &str, token: &Secret, repo_url: &str) -> Result<Self, ForgeError> {
        let (owner, repo) = repository_of(repo_url).ok_or_else(|| {
            ForgeError::Invalid(format!(
                "cannot tell the owner and repository from `{repo_url}`"
            ))
        })?;
        let client = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| ForgeError::Invalid(format!("GitHub API URL `{api_url}`: {e}")))?
            .personal_token(token.expose().to_owned())
            // Server errors and 429 are retried at once, twice; longer waits (primary rate limits)
            // become a transient failure for the scheduler's backoff instead.
            .add_retry_config(RetryConfig::Simple(2))
            .set_connect_timeout(Some(Duration::from_secs(30)))
            .set_read_timeout(Some(Duration::from_secs(60)))
            .build()
            .map_err(|e| ForgeError::Unavailable(format!("cannot build the GitHub client: {e}")))?;
        Ok(Self {
            client,
            owner,
            repo,
        })
    }
}

#[async_trait]
impl Forge for GitHubForge {
    async fn find_open(&self, head: &str) -> Result<Option<PullRequest>, ForgeError> {
        let page = self
            .client
            .pulls(&self.owner, &self.repo)
            .list()
            .state(params::State::Open)
            .head(format!("{}:{head}", self.owner))
            .per_page(100u8)
            .send()
            .await
            .map_err(classify)?;
        Ok(page
            .items
            .into_iter()
            .find(|pr| pr.head.ref_field == head)
            .and_then(|pr| {
                let url = pr.html_url?.to_string();
                Some(PullRequest {
                    number: pr.number,
                    url,
                    reused: true,
                    body: pr.body.unwrap_or_default(),
                })
            }))
    }

    async fn create(&self, spec: &PullRequestSpec) -> Result<PullRequest, ForgeError> {
        let pr = self
            .client
            .pulls(&self.owner, &self.repo)
            .create(&spec.title, &spec.head, &spec.base)
            .body(spec.body.as_str())
            .draft(spec.draft)
            .send()
            .await
            .map_err(classify)?;
        let url = pr.html_url.map(|u| u.to_string()).ok_or_else(|| {
            ForgeError::Unavailable("created pull request has no html_url".into())
        })?;
        Ok(PullRequest {
            number: pr.number,
            url,
            reused: false,
            body: pr.body.unwrap_or_default(),
        })
    }

    async fn list_open(&self, head_prefix: &str) -> Result<Vec<OpenPullRequest>, ForgeError> {
        let first = self
            .client
            .pulls(&self.owner, &self.repo)
            .list()
            .state(params::State::Open)
            .per_page(100u8)
            .send()
            .await
            .map_err(classify)?;
        let all = self.client.all_pages(first).await.map_err(classify)?;
        Ok(all
            .into_iter()
            .filter(|pr| pr.head.ref_field.starts_with(head_prefix))
            .filter(|pr| self.is_own_head(pr))
            .map(|pr| OpenPullRequest {
                number: pr.number,
                url: pr.html_url.map(|u| u.to_string()).unwrap_or_default(),
                head: pr.head.ref_field,
            })
            .collect())
    }

    async fn state(&self, number: u64) -> Result<PrState, ForgeError> {
        let pr = self
            .client
            .pulls(&self.owner, &self.repo)
            .get(number)
            .await
            .map_err(classify)?;
        Ok(if pr.merged == Some(true) || pr.merged_at.is_some() {
            PrState::Merged
        } else if matches!(pr.state, Some(IssueState::Closed)) {
            PrState::Closed
        } else {
            PrState::Open
        })
    }

    async fn update_body(&self, number: u64, body: &str) -> Result<(), ForgeError> {
        self.client
            .pulls(&self.owner, &self.repo)
            .update(number)
            .body(body)
            .send()
            .await
            .map(drop)
            .map_err(classify)
    }

    async fn add_labels(&self, number: u64, labels: &[String]) -> Result<(), ForgeError> {
        self.client
            .issues(&self.owner, &self.repo)
            .add_labels(number, labels)
            .await
            .map(drop)
            .map_err(classify)
    }
}

impl GitHubForge {
    /// True unless the head branch lives in another repository (a fork): only branches pushed to
    /// this repository are the agent's.
    fn is_own_head(&self, pr: &octocrab::models::pulls::PullRequest) -> bool {
        pr.head.repo.as_ref().is_none_or(|repo| {
            repo.name.eq_ignore_ascii_case(&self.repo)
                && repo
                    .owner
                    .as_ref()
                    .is_none_or(|owner| owner.login.eq_ignore_ascii_case(&self.owner))
        })
    }
}

/// Maps octocrab's errors onto [`ForgeError`] by status and GitHub's message.
fn classify(error: octocrab::Error) -> ForgeError {
    match error {
        octocrab::Error::GitHub { source, .. } => {
            let status = source.status_code.as_u16();
            let details: Vec<String> = source
                .errors
                .iter()
                .flatten()
                .filter_map(|e| e.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .collect();
            let message = if details.is_empty() {
                source.message.clone()
            } else {
                format!("{}: {}", source.message, details.join("; "))
            };
            let rate_limited = status == 429
                || (status == 403
                    && (source.message.to_ascii_lowercase().contains("rate limit")
                        || source.headers.as_ref().is_some_and(|h| {
                            h.get("x-ratelimit-remaining")
                                .is_some_and(|v| v.as_bytes() == b"0")
                                || h.contains_key("retry-after")
                        })));
            match status {
                _ if rate_limited => ForgeError::RateLimited(message),
                401 | 403 | 404 => ForgeError::Refused { status, message },
                422 if message.to_ascii_lowercase().contains("already exists") => {
                    ForgeError::AlreadyExists(message)
                }
                400..=499 => ForgeError::Invalid(format!("HTTP {status}: {message}")),
                _ => ForgeError::Unavailable(format!("HTTP {status}: {message}")),
            }
        }
        other => ForgeError::Unavailable(other.to_string()),
    }
}

/// `(owner, repo)` from the last two path segments of a clone URL (`.git` dropped; dots inside
/// names are kept).
fn repository_of(repo_url: &str) -> Option<(String, String)> {
    let path = match url::Url::parse(repo_url) {
        Ok(url) => url.path().to_owned(),
        Err(_) => repo_url.to_owned(),
    };
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let repo = segments.next()?;
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    let owner = segments.next()?;
    (!owner.is_empty() && !repo.is_empty()).then(|| (owner.to_owned(), repo.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_coordinates() {
        for (url, want) in [
            (
                "https://github.com/acme/widgets.git",
                Some(("acme", "widgets")),
            ),
            ("https://github.com/acme/my.site", Some(("acme", "my.site"))),
            ("http://127.0.0.1:9/acme/w.git/", Some(("acme", "w"))),
            ("/srv/git/acme/w.git", Some(("acme", "w"))),
            ("https://github.com/", None),
        ] {
            let got = repository_of(url);
            assert_eq!(
                got.as_ref().map(|(o, r)| (o.as_str(), r.as_str())),
                want,
                "{url}"
            );
        }
    }
}
