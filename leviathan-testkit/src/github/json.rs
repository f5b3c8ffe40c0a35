//! GitHub's REST JSON shapes (users, repositories, pull requests, errors), following the REST API
//! reference so `octocrab`'s models and hand-written clients deserialize them as they would GitHub's.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse as _, Response},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{
    failure::error_body,
    records::{API_PREFIX, PrState, USER_LOGIN},
    repo::{DiffStats, Refs},
    state::{Pull, RepoMeta},
};

/// Extra fields of the single pull request endpoints (`pull-request`, not `pull-request-simple`).
pub(super) struct PullDetail {
    pub(super) stats: DiffStats,
    /// `None` while GitHub has not computed it (closed pull requests).
    pub(super) mergeable: Option<bool>,
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A stable numeric id for a login, so the same user always has the same id.
fn user_id(login: &str) -> u64 {
    // FNV-1a, kept below 2^53 so JavaScript clients read it exactly.
    login.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    }) & ((1 << 53) - 1)
}

/// `simple-user`.
pub(super) fn user(web: &str, login: &str) -> Value {
    let id = user_id(login);
    let api = format!("{web}{API_PREFIX}/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_{id:x}"),
        "avatar_url": format!("{web}/avatars/{login}"),
        "gravatar_id": "",
        "url": api,
        "html_url": format!("{web}/{login}"),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": "User",
        "site_admin": false,
    })
}

/// `full-repository` (the subset of fields clients read).
pub(super) fn repository(web: &str, repo: &RepoMeta) -> Value {
    let RepoMeta {
        id,
        owner,
        name,
        default_branch,
        private,
        created_at,
        open_pulls,
    } = repo;
    let api = format!("{web}{API_PREFIX}/repos/{owner}/{name}");
    let created = timestamp(*created_at);
    json!({
        "id": id,
        "node_id": format!("R_{id:x}"),
        "name": name,
        "full_name": format!("{owner}/{name}"),
        "private": private,
        "owner": user(web, owner),
        "html_url": format!("{web}/{owner}/{name}"),
        "description": null,
        "fork": false,
        "url": api,
        "pulls_url": format!("{api}/pulls{{/number}}"),
        "clone_url": format!("{web}/{owner}/{name}.git"),
        "homepage": null,
        "size": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": null,
        "has_issues": true,
        "has_projects": false,
        "has_downloads": true,
        "has_wiki": false,
        "has_pages": false,
        "forks_count": 0,
        "archived": false,
        "disabled": false,
        "open_issues_count": open_pulls,
        "visibility": if *private { "private" } else { "public" },
        "default_branch": default_branch,
        "allow_merge_commit": true,
        "allow_squash_merge": true,
        "allow_rebase_merge": false,
        "delete_branch_on_merge": false,
        "created_at": created,
        "updated_at": created,
        "pushed_at": created,
    })
}

/// Where a pull request's `html_url` points.
pub(super) fn pull_html_url(web: &str, owner: &str, name: &str, number: u64) -> String {
    format!("{web}/{owner}/{name}/pull/{number}")
}

/// `pull-request-simple` (listings), or `pull-request` when `detail` is given (single pull request
/// endpoints). `refs` supplies the live branch tips.
pub(super) fn pull(
    web: &str,
    repo: &RepoMeta,
    pull: &Pull,
    refs: &Refs,
    detail: Option<&PullDetail>,
) -> Value {
    let RepoMeta { owner, name, .. } = repo;
    let number = pull.number;
    let repo_api = format!("{web}{API_PREFIX}/repos/{owner}/{name}");
    let url = format!("{repo_api}/pulls/{number}");
    let html_url = pull_html_url(web, owner, name, number);
    let issue_url = format!("{repo_api}/issues/{number}");
    let comments_url = format!("{issue_url}/comments");
    let commits_url = format!("{url}/commits");
    let review_comments_url = format!("{url}/comments");
    let review_comment_url = format!("{repo_api}/pulls/comments{{/number}}");
    let (head_sha, base_sha) = pull.tips(refs);
    let statuses_url = format!("{repo_api}/statuses/{head_sha}");
    let repository = repository(web, repo);
    let branch = |branch: &str, sha: &str| {
        json!({
            "label": format!("{owner}:{branch}"),
            "ref": branch,
            "sha": sha,
            "user": user(web, owner),
            "repo": repository,
        })
    };
    let href = |url: &str| json!({ "href": url });
    let links = json!({
        "self": href(&url),
        "html": href(&html_url),
        "issue": href(&issue_url),
        "comments": href(&comments_url),
        "review_comments": href(&review_comments_url),
        "review_comment": href(&review_comment_url),
        "commits": href(&commits_url),
        "statuses": href(&statuses_url),
    });
    let mut value = json!({
        "url": url,
        "id": pull.id,
        "node_id": format!("PR_{:x}", pull.id),
        "html_url": html_url,
        "diff_url": format!("{html_url}.diff"),
        "patch_url": format!("{html_url}.patch"),
        "issue_url": issue_url,
        "commits_url": commits_url,
        "review_comments_url": review_comments_url,
        "review_comment_url": review_comment_url,
        "comments_url": comments_url,
        "statuses_url": statuses_url,
        "number": number,
        "state": match pull.state { PrState::Open => "open", PrState::Closed => "closed" },
        "locked": false,
        "title": pull.title,
        "user": user(web, &pull.user),
        "body": pull.body,
        "labels": [],
        "created_at": timestamp(pull.created_at),
        "updated_at": timestamp(pull.updated_at),
        "closed_at": pull.closed_at.map(timestamp),
        "merged_at": pull.merged_at.map(timestamp),
        "merge_commit_sha": pull.merge_commit_sha,
        "head": branch(&pull.head, &head_sha),
        "base": branch(&pull.base, &base_sha),
        "_links": links,
        "author_association": "COLLABORATOR",
        "auto_merge": null,
        "draft": pull.draft,
    });
    let nothing_assigned = json!({
        "milestone": null,
        "active_lock_reason": null,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
    });
    if let (Value::Object(fields), Value::Object(extra)) = (&mut value, nothing_assigned) {
        fields.extend(extra);
    }
    if let (Some(detail), Value::Object(fields)) = (detail, &mut value) {
        let merged = pull.merged_at.is_some();
        let state = match detail.mergeable {
            None => "unknown",
            Some(true) => "clean",
            Some(false) => "dirty",
        };
        let extra = json!({
            "merged": merged,
            "mergeable": detail.mergeable,
            "rebaseable": false,
            "mergeable_state": state,
            "merged_by": if merged { user(web, USER_LOGIN) } else { Value::Null },
            "comments": 0,
            "review_comments": 0,
            "maintainer_can_modify": false,
            "commits": detail.stats.commits,
            "additions": detail.stats.additions,
            "deletions": detail.stats.deletions,
            "changed_files": detail.stats.changed_files,
        });
        if let Value::Object(extra) = extra {
            fields.extend(extra);
        }
    }
    value
}

/// A GitHub error response, with the validation `errors` array when given.
pub(super) fn error(
    status: StatusCode,
    message: &str,
    documentation_url: &str,
    errors: Option<Value>,
) -> Response {
    let mut body = error_body(status, message, documentation_url);
    if let (Some(errors), Value::Object(fields)) = (errors, &mut body) {
        fields.insert("errors".into(), errors);
    }
    (status, Json(body)).into_response()
}
