//! The REST endpoints, mounted under [`API_PREFIX`](super::API_PREFIX): repositories and pull
//! requests with GitHub's validation rules, status codes and `Link` pagination.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, RawQuery, Request, State},
    http::{
        HeaderValue, StatusCode,
        header::{LINK, LOCATION},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    failure::DOCS,
    json::{self as shapes, PullDetail},
    records::{API_PREFIX, PrState, USER_LOGIN},
    repo::{self, Refs},
    state::{Caller, MergeMethod, Pull, PullError, RepoMeta, Shared},
};

const GET_REPO_DOCS: &str = "https://docs.github.com/rest/repos/repos#get-a-repository";
const LIST_DOCS: &str = "https://docs.github.com/rest/pulls/pulls#list-pull-requests";
const CREATE_DOCS: &str = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";
const GET_DOCS: &str = "https://docs.github.com/rest/pulls/pulls#get-a-pull-request";
const UPDATE_DOCS: &str = "https://docs.github.com/rest/pulls/pulls#update-a-pull-request";
const MERGE_DOCS: &str = "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request";

/// GitHub's default and maximum `per_page`.
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;

pub(super) fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/repos/{owner}/{repo}", get(get_repo))
        .route(
            "/repos/{owner}/{repo}/pulls",
            get(list_pulls).post(create_pull),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}",
            get(get_pull).patch(update_pull),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/merge",
            put(merge_pull),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/labels",
            axum::routing::post(add_labels),
        )
        .fallback(|| async { ApiError::not_found(DOCS) })
        .layer(middleware::from_fn_with_state(shared, gate))
}

/// Injected failures first (they stand for the server), then authentication.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let injected = shared.lock().rest_failures.pop_front();
    if let Some(failure) = injected {
        return failure.into_response();
    }
    let (method, path) = (
        request.method().to_string(),
        request.uri().path().to_owned(),
    );
    match shared.authenticate(request.headers()) {
        Caller::User(_) => {
            let response = next.run(request).await;
            let mut state = shared.lock();
            let lost = state
                .lost_responses
                .iter()
                .position(|(m, suffix, _)| *m == method && path.ends_with(suffix.as_str()));
            match lost.and_then(|i| state.lost_responses.remove(i)) {
                Some((_, _, failure)) => failure.into_response(),
                None => response,
            }
        }
        Caller::Anonymous | Caller::Invalid => {
            shapes::error(StatusCode::UNAUTHORIZED, "Bad credentials", DOCS, None)
        }
    }
}

/// A GitHub-shaped error response (boxed: responses are large), so handlers can use `?`.
struct ApiError(Box<Response>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        PullError::Internal(error).into()
    }
}

impl From<PullError> for ApiError {
    fn from(error: PullError) -> Self {
        let status = match &error {
            PullError::NotFound => StatusCode::NOT_FOUND,
            PullError::NotMergeable | PullError::RebaseNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PullError::HeadModified => StatusCode::CONFLICT,
            PullError::Internal(error) => {
                tracing::warn!(error = %format!("{error:#}"), "FakeGitHub REST handler failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::from_response(shapes::error(status, &error.message(), MERGE_DOCS, None))
    }
}

impl ApiError {
    fn from_response(response: Response) -> Self {
        Self(Box::new(response))
    }

    fn not_found(docs: &str) -> Self {
        Self::from_response(shapes::error(
            StatusCode::NOT_FOUND,
            "Not Found",
            docs,
            None,
        ))
    }

    /// 422 `Validation Failed` with GitHub's `errors` array.
    fn validation(docs: &str, errors: Value) -> Self {
        Self::from_response(shapes::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed",
            docs,
            Some(errors),
        ))
    }

    fn invalid_field(docs: &str, field: &str) -> Self {
        Self::validation(
            docs,
            json!([{ "resource": "PullRequest", "field": field, "code": "invalid" }]),
        )
    }

    fn custom(docs: &str, message: &str) -> Self {
        Self::validation(
            docs,
            json!([{ "resource": "PullRequest", "code": "custom", "message": message }]),
        )
    }
}

type ApiResult = Result<Response, ApiError>;

/// The JSON body, or GitHub's 400 for unparsable JSON; an empty body reads as `{}`.
fn parse_body<T: DeserializeOwned>(body: &[u8], docs: &str) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|_| {
        ApiError::from_response(shapes::error(
            StatusCode::BAD_REQUEST,
            "Problems parsing JSON",
            docs,
            None,
        ))
    })
}

fn repo_meta(shared: &Shared, owner: &str, name: &str, docs: &str) -> Result<RepoMeta, ApiError> {
    shared
        .repo_meta(owner, name)
        .ok_or_else(|| ApiError::not_found(docs))
}

async fn refs(shared: &Shared, repo: &RepoMeta) -> Result<Refs, ApiError> {
    let dir = shared.existing_repo_dir(&repo.owner, &repo.name)?;
    Ok(repo::heads(shared.home(), &dir).await?)
}

/// The `pull-request` shape of one pull request: diff statistics and mergeability are computed for
/// open pull requests and frozen for closed ones, as on GitHub.
async fn render_detail(shared: &Shared, repo: &RepoMeta, pull: &Pull) -> Result<Value, ApiError> {
    let refs = refs(shared, repo).await?;
    let detail = match pull.closed_stats {
        Some(stats) => PullDetail {
            stats,
            mergeable: None,
        },
        None => {
            let dir = shared.existing_repo_dir(&repo.owner, &repo.name)?;
            let (head, base) = pull.tips(&refs);
            PullDetail {
                stats: repo::diff_stats(shared.home(), &dir, &base, &head).await?,
                mergeable: Some(repo::mergeable(shared.home(), &dir, &base, &head).await?),
            }
        }
    };
    // Re-read the repository so counts such as `open_issues_count` include this change.
    let repo = shared
        .repo_meta(&repo.owner, &repo.name)
        .unwrap_or_else(|| repo.clone());
    Ok(shapes::pull(
        shared.web(),
        &repo,
        pull,
        &refs,
        Some(&detail),
    ))
}

fn find_pull(
    shared: &Shared,
    owner: &str,
    name: &str,
    number: &str,
    docs: &str,
) -> Result<(RepoMeta, Pull), ApiError> {
    let state = shared.lock();
    let repo = state
        .repo(owner, name)
        .ok_or_else(|| ApiError::not_found(docs))?;
    let pull = number
        .parse()
        .ok()
        .and_then(|number| repo.pull(number))
        .ok_or_else(|| ApiError::not_found(docs))?;
    Ok((repo.meta(), pull.clone()))
}

async fn get_repo(
    State(shared): State<Arc<Shared>>,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult {
    let repo = repo_meta(&shared, &owner, &name, GET_REPO_DOCS)?;
    Ok(Json(shapes::repository(shared.web(), &repo)).into_response())
}

async fn list_pulls(
    State(shared): State<Arc<Shared>>,
    Path((owner, name)): Path<(String, String)>,
    Query(params): Query<BTreeMap<String, String>>,
    RawQuery(raw_query): RawQuery,
) -> ApiResult {
    let listing_failure = shared.lock().listing_failure.clone();
    if let Some(failure) = listing_failure {
        return Ok(failure.into_response());
    }
    let repo = repo_meta(&shared, &owner, &name, LIST_DOCS)?;
    let state_filter = match params.get("state").map_or("open", String::as_str) {
        "open" => Some(PrState::Open),
        "closed" => Some(PrState::Closed),
        "all" => None,
        _ => return Err(ApiError::invalid_field(LIST_DOCS, "state")),
    };
    // Like GitHub, a `head` without the `owner:` prefix filters nothing.
    let head_filter = params.get("head").and_then(|head| head.split_once(':'));
    let base_filter = params.get("base");
    let sort_by_updated = params.get("sort").is_some_and(|sort| sort == "updated");
    let descending = match params.get("direction").map(String::as_str) {
        Some("asc") => false,
        Some("desc") => true,
        _ => !sort_by_updated,
    };
    let per_page = params
        .get("per_page")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map_or(DEFAULT_PER_PAGE, |n| n.min(MAX_PER_PAGE));
    let page = params
        .get("page")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);

    let refs = refs(&shared, &repo).await?;
    let mut pulls: Vec<Pull> = {
        let state = shared.lock();
        let Some(repository) = state.repo(&owner, &name) else {
            return Err(ApiError::not_found(LIST_DOCS));
        };
        repository
            .pulls
            .iter()
            .filter(|pull| state_filter.is_none_or(|state| pull.state == state))
            .filter(|pull| {
                head_filter.is_none_or(|(head_owner, head)| {
                    head_owner.eq_ignore_ascii_case(&owner) && pull.head == head
                })
            })
            .filter(|pull| base_filter.is_none_or(|base| &pull.base == base))
            .cloned()
            .collect()
    };
    pulls.sort_by_key(|pull| {
        (
            if sort_by_updated {
                pull.updated_at
            } else {
                pull.created_at
            },
            pull.number,
        )
    });
    if descending {
        pulls.reverse();
    }
    let last_page = pulls.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = pulls
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|pull| shapes::pull(shared.web(), &repo, pull, &refs, None))
        .collect();

    let mut response = Json(items).into_response();
    if last_page > 1 {
        let link = link_header(
            &shared,
            &repo,
            raw_query.as_deref().unwrap_or(""),
            page,
            last_page,
        );
        if let Ok(value) = HeaderValue::try_from(link) {
            response.headers_mut().insert(LINK, value);
        }
    }
    Ok(response)
}

/// GitHub's `Link` header: absolute URLs that repeat the request's query with another `page`.
fn link_header(
    shared: &Shared,
    repo: &RepoMeta,
    raw_query: &str,
    page: usize,
    last_page: usize,
) -> String {
    let kept: Vec<&str> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("page="))
        .collect();
    let base = format!(
        "{}{API_PREFIX}/repos/{}/{}/pulls",
        shared.web(),
        repo.owner,
        repo.name
    );
    let url = |page: usize| {
        let mut query = kept.clone();
        let page = format!("page={page}");
        query.push(&page);
        format!("<{base}?{}>", query.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    if page < last_page {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last_page)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
    }
    links.join(", ")
}

#[derive(Deserialize)]
struct CreatePull {
    title: Option<String>,
    body: Option<String>,
    head: Option<String>,
    base: Option<String>,
    #[serde(default)]
    draft: bool,
}

async fn create_pull(
    State(shared): State<Arc<Shared>>,
    Path((owner, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let request: CreatePull = parse_body(&body, CREATE_DOCS)?;
    let repo = repo_meta(&shared, &owner, &name, CREATE_DOCS)?;
    let missing = |field: &str| {
        ApiError::validation(
            CREATE_DOCS,
            json!([{ "resource": "PullRequest", "code": "missing_field", "field": field }]),
        )
    };
    let title = request.title.ok_or_else(|| missing("title"))?;
    let head_spec = request.head.ok_or_else(|| missing("head"))?;
    let base = request.base.ok_or_else(|| missing("base"))?;
    // `head` is `branch` or `owner:branch`; forks are not modelled, so another owner is invalid.
    let head = match head_spec.split_once(':') {
        Some((head_owner, branch)) if head_owner.eq_ignore_ascii_case(&owner) => branch.to_owned(),
        Some(_) => return Err(ApiError::invalid_field(CREATE_DOCS, "head")),
        None => head_spec,
    };

    let refs = refs(&shared, &repo).await?;
    let head_sha = refs
        .get(&head)
        .ok_or_else(|| ApiError::invalid_field(CREATE_DOCS, "head"))?;
    let base_sha = refs
        .get(&base)
        .ok_or_else(|| ApiError::invalid_field(CREATE_DOCS, "base"))?;
    let dir = shared.existing_repo_dir(&owner, &name)?;
    let stats = repo::diff_stats(shared.home(), &dir, base_sha, head_sha).await?;
    if stats.commits == 0 {
        return Err(ApiError::custom(
            CREATE_DOCS,
            &format!("No commits between {base} and {head}"),
        ));
    }

    let pull = {
        let mut state = shared.lock();
        let id = state.next_id();
        let repository = state
            .repo_mut(&owner, &name)
            .ok_or_else(|| ApiError::not_found(CREATE_DOCS))?;
        let duplicate = repository
            .pulls
            .iter()
            .any(|pull| pull.state == PrState::Open && pull.head == head && pull.base == base);
        if duplicate {
            return Err(ApiError::custom(
                CREATE_DOCS,
                &format!("A pull request already exists for {owner}:{head}."),
            ));
        }
        let now = Utc::now();
        let pull = Pull {
            id,
            number: repository.pulls.len() as u64 + 1,
            user: USER_LOGIN.to_owned(),
            title,
            body: request.body,
            head_sha: head_sha.clone(),
            base_sha: base_sha.clone(),
            head,
            base,
            draft: request.draft,
            labels: Vec::new(),
            state: PrState::Open,
            created_at: now,
            updated_at: now,
            closed_at: None,
            merged_at: None,
            merge_commit_sha: None,
            closed_stats: None,
        };
        repository.pulls.push(pull.clone());
        pull
    };
    let value = render_detail(&shared, &repo, &pull).await?;
    let location = value["url"]
        .as_str()
        .and_then(|url| HeaderValue::try_from(url).ok());
    let mut response = (StatusCode::CREATED, Json(value)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn get_pull(
    State(shared): State<Arc<Shared>>,
    Path((owner, name, number)): Path<(String, String, String)>,
) -> ApiResult {
    let (repo, pull) = find_pull(&shared, &owner, &name, &number, GET_DOCS)?;
    Ok(Json(render_detail(&shared, &repo, &pull).await?).into_response())
}

#[derive(Deserialize)]
struct UpdatePull {
    title: Option<String>,
    body: Option<String>,
    state: Option<String>,
    base: Option<String>,
}

async fn update_pull(
    State(shared): State<Arc<Shared>>,
    Path((owner, name, number)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let request: UpdatePull = parse_body(&body, UPDATE_DOCS)?;
    let (repo, pull) = find_pull(&shared, &owner, &name, &number, UPDATE_DOCS)?;
    let refs = refs(&shared, &repo).await?;
    if request
        .base
        .as_ref()
        .is_some_and(|base| !refs.contains_key(base))
    {
        return Err(ApiError::invalid_field(UPDATE_DOCS, "base"));
    }
    let reopen = match request.state.as_deref() {
        None => false,
        Some("closed") => {
            shared.close_pull(&owner, &name, pull.number).await?;
            false
        }
        Some("open") if pull.state == PrState::Open => false,
        Some("open") if pull.merged_at.is_some() || !refs.contains_key(&pull.head) => {
            return Err(ApiError::validation(
                UPDATE_DOCS,
                json!([{
                    "resource": "PullRequest",
                    "code": "custom",
                    "field": "state",
                    "message": "state cannot be changed. The pull request cannot be reopened.",
                }]),
            ));
        }
        Some("open") => true,
        Some(_) => return Err(ApiError::invalid_field(UPDATE_DOCS, "state")),
    };
    let updated = {
        let mut state = shared.lock();
        let pull = state
            .repo_mut(&owner, &name)
            .and_then(|repo| repo.pull_mut(pull.number))
            .ok_or_else(|| ApiError::not_found(UPDATE_DOCS))?;
        if let Some(title) = request.title {
            pull.title = title;
        }
        if let Some(body) = request.body {
            pull.body = Some(body);
        }
        if let Some(base) = request.base {
            pull.base = base;
        }
        if reopen {
            pull.state = PrState::Open;
            pull.closed_at = None;
            pull.closed_stats = None;
        }
        pull.updated_at = Utc::now();
        pull.clone()
    };
    Ok(Json(render_detail(&shared, &repo, &updated).await?).into_response())
}

const LABELS_DOCS: &str = "https://docs.github.com/rest/issues/labels#add-labels-to-an-issue";

#[derive(Deserialize)]
struct AddLabels {
    labels: Vec<String>,
}

/// Adds labels to a pull request (an issue, for this endpoint) and answers with all its labels.
async fn add_labels(
    State(shared): State<Arc<Shared>>,
    Path((owner, name, number)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let request: AddLabels = parse_body(&body, LABELS_DOCS)?;
    let (repo, pull) = find_pull(&shared, &owner, &name, &number, LABELS_DOCS)?;
    let labels = {
        let mut state = shared.lock();
        let pull = state
            .repo_mut(&owner, &name)
            .and_then(|repo| repo.pull_mut(pull.number))
            .ok_or_else(|| ApiError::not_found(LABELS_DOCS))?;
        for label in request.labels {
            if !pull.labels.contains(&label) {
                pull.labels.push(label);
            }
        }
        pull.labels.clone()
    };
    let web = shared.web.get().cloned().unwrap_or_default();
    let rendered: Vec<Value> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            json!({
                "id": i + 1,
                "node_id": format!("LA_{i}"),
                "url": format!("{web}{API_PREFIX}/repos/{}/{}/labels/{label}", repo.owner, repo.name),
                "name": label,
                "description": null,
                "color": "ededed",
                "default": false,
            })
        })
        .collect();
    Ok(Json(rendered).into_response())
}

#[derive(Deserialize)]
struct MergePull {
    commit_title: Option<String>,
    commit_message: Option<String>,
    sha: Option<String>,
    merge_method: Option<String>,
}

async fn merge_pull(
    State(shared): State<Arc<Shared>>,
    Path((owner, name, number)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let request: MergePull = parse_body(&body, MERGE_DOCS)?;
    let (_, pull) = find_pull(&shared, &owner, &name, &number, MERGE_DOCS)?;
    let method = match request.merge_method.as_deref() {
        None | Some("merge") => MergeMethod::Merge,
        Some("squash") => MergeMethod::Squash,
        Some("rebase") => MergeMethod::Rebase,
        Some(_) => {
            return Err(ApiError::validation(
                MERGE_DOCS,
                json!([{ "resource": "PullRequest", "field": "merge_method", "code": "invalid" }]),
            ));
        }
    };
    let sha = shared
        .merge_pull(
            &owner,
            &name,
            pull.number,
            method,
            request.sha.as_deref(),
            Some((request.commit_title, request.commit_message)),
        )
        .await?;
    Ok(
        Json(json!({ "sha": sha, "merged": true, "message": "Pull Request successfully merged" }))
            .into_response(),
    )
}
