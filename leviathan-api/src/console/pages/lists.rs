//! The paged lists: a target's tasks, the failures, the pull requests.

use axum::extract::{Query, State};
use leviathan_core::{
    Timestamp,
    graph::{FailureQuery, Graph, Node, PullRequestNode, TaskNode},
    id::TargetId,
    model::PrState,
};
use maud::{Markup, html};
use serde::Deserialize;

use super::encode;
use crate::console::{Console, error::ConsoleError, session::Viewer, view};

/// Rows per page.
const PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    target: Option<String>,
    state: Option<String>,
    page: Option<usize>,
    cursor: Option<u64>,
}

impl ListQuery {
    fn target(&self) -> Result<Option<TargetId>, ConsoleError> {
        match self.target.as_deref().filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => TargetId::new(t)
                .map(Some)
                .map_err(|e| ConsoleError::BadRequest(format!("parameter `target`: {e}"))),
        }
    }
}

/// A form choosing the target (and, for pull requests, the state), keyboard-usable.
fn filter_form(
    console: &Console,
    path: &str,
    targets: &[TargetId],
    chosen: Option<&TargetId>,
    states: Option<&str>,
) -> Markup {
    html! {
        form.filters method="get" action=(console.link(path)) {
            label { "Target"
                select name="target" {
                    option value="" { "all" }
                    @for t in targets { option value=(t) selected[chosen == Some(t)] { (t) } }
                }
            }
            @if let Some(current) = states {
                label { "State" select name="state" {
                    @for s in ["open", "merged", "closed", "all"] { option value=(s) selected[current == s] { (s) } }
                } }
            }
            button type="submit" { "Show" }
        }
    }
}

fn page_link(console: &Console, path: &str, q: &ListQuery, page: usize) -> String {
    let mut link = format!("{path}?page={page}");
    if let Some(t) = &q.target {
        link.push_str(&format!("&target={}", encode(t)));
    }
    if let Some(s) = &q.state {
        link.push_str(&format!("&state={}", encode(s)));
    }
    console.link(&link)
}

fn targets(graph: &Graph) -> Vec<TargetId> {
    graph.targets().map(|t| t.target_id.clone()).collect()
}

pub(crate) async fn tasks(
    State(console): State<Console>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let chosen = q.target()?;
    let page = q.page.unwrap_or(0);
    let plane = console.caught_up().await?;
    let (all, rows, more) = {
        let graph = plane.ledger().graph().await;
        let all = targets(&graph);
        let mut rows: Vec<TaskNode> = all
            .iter()
            .filter(|t| chosen.as_ref().is_none_or(|c| c == *t))
            .flat_map(|t| graph.tasks_of(t))
            .skip(page * PAGE)
            .take(PAGE + 1)
            .cloned()
            .collect();
        let more = rows.len() > PAGE;
        rows.truncate(PAGE);
        (all, rows, more)
    };
    let now = Timestamp::now();
    let body = html! {
        (filter_form(&console, "/tasks", &all, chosen.as_ref(), None))
        div.table { table {
            thead { tr { th { "target" } th { "task" } th { "title" } th { "status" } th { "depends on" }
                th { "attempts" } th { "latest attempt" } th { "next retry" } } }
            tbody { @for t in &rows { tr {
                td { (t.target_id) } td { (t.task_id) } td { (t.spec.title) }
                td { (t.status.as_str()) @if let Some(r) = &t.status_reason { br; span.muted { (r) } } }
                td { @for (i, d) in t.spec.dependencies.iter().enumerate() { @if i > 0 { ", " } (d) } }
                td { (t.attempts) }
                td { @if let Some(a) = t.live_attempt.as_ref().or(t.last_attempt.as_ref()) {
                    a href=(console.link(&format!("/attempts/{}", encode(a.as_str())))) { (a) } } }
                td { @if let Some(at) = t.not_before { (view::time(at, now)) } }
            } } }
        } }
        (view::pager((page > 0).then(|| page_link(&console, "/tasks", &q, page - 1)), more.then(|| page_link(&console, "/tasks", &q, page + 1))))
    };
    Ok(view::page(&console, &viewer, "/tasks", "Tasks", None, body))
}

pub(crate) async fn failures(
    State(console): State<Console>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let chosen = q.target()?;
    let plane = console.api.control_plane();
    let query = FailureQuery {
        target: chosen.clone(),
        limit: PAGE,
        cursor: q.cursor,
    };
    let page = plane.failures(&query).await?;
    let (all, retries) = {
        let graph = plane.ledger().graph().await;
        let retries: Vec<Option<Timestamp>> = page
            .failures
            .iter()
            .map(|a| {
                graph
                    .task(&a.target_id, &a.task_id)
                    .and_then(|t| t.not_before)
            })
            .collect();
        (targets(&graph), retries)
    };
    let now = Timestamp::now();
    let next = page.next_cursor.map(|c| {
        let target = q
            .target
            .as_deref()
            .map(|t| format!("&target={}", encode(t)))
            .unwrap_or_default();
        console.link(&format!("/failures?cursor={c}{target}"))
    });
    let body = html! {
        (filter_form(&console, "/failures", &all, chosen.as_ref(), None))
        div.table { table {
            thead { tr { th { "attempt" } th { "task" } th { "kind" } th { "class" } th { "summary" } th { "ended" } th { "next retry" } } }
            tbody { @for (a, retry) in page.failures.iter().zip(&retries) { tr {
                td { a href=(console.link(&format!("/attempts/{}", encode(a.attempt_id.as_str())))) { (a.attempt_id) } }
                td { (a.target_id) " / " (a.task_id) }
                @if let Some(f) = &a.failure {
                    td { (view::label(&f.kind)) } td { (view::label(&f.class)) } td { (f.summary) }
                } @else { td { (view::label(&a.status)) } td {} td {} }
                td { @if let Some(t) = a.ended_at { (view::time(t, now)) } }
                td { @if let Some(t) = retry { (view::time(*t, now)) } }
            } } }
        } }
        (view::pager(q.cursor.map(|_| console.link("/failures")), next))
    };
    Ok(view::page(
        &console,
        &viewer,
        "/failures",
        "Failures",
        None,
        body,
    ))
}

fn wanted(pr: &PullRequestNode, state: &str) -> bool {
    match state {
        "all" => true,
        "merged" => pr.state == PrState::Merged,
        "closed" => pr.state == PrState::Closed,
        _ => pr.state == PrState::Open,
    }
}

pub(crate) async fn pulls(
    State(console): State<Console>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let chosen = q.target()?;
    let state = q.state.clone().unwrap_or_else(|| "open".to_owned());
    let page = q.page.unwrap_or(0);
    let plane = console.caught_up().await?;
    let (all, mut rows) = {
        let graph = plane.ledger().graph().await;
        let rows: Vec<PullRequestNode> = graph
            .nodes()
            .filter_map(|n| match n {
                Node::PullRequest(p) => Some(p),
                _ => None,
            })
            .filter(|p| chosen.as_ref().is_none_or(|t| t == &p.target_id) && wanted(p, &state))
            .skip(page * PAGE)
            .take(PAGE + 1)
            .cloned()
            .collect();
        (targets(&graph), rows)
    };
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let now = Timestamp::now();
    let body = html! {
        (filter_form(&console, "/pulls", &all, chosen.as_ref(), Some(&state)))
        div.table { table {
            thead { tr { th { "target" } th { "PR" } th { "title" } th { "state" } th { "branch" } th { "attempt" } th { "opened" } } }
            tbody { @for p in &rows { tr {
                td { (p.target_id) }
                td { a href=(p.url) rel="noreferrer" { "#" (p.number) } }
                td { (p.title.as_deref().unwrap_or("")) }
                td { (view::label(&p.state)) }
                td { (p.branch.as_deref().unwrap_or("")) }
                td { @if let Some(a) = &p.attempt_id { a href=(console.link(&format!("/attempts/{}", encode(a.as_str())))) { (a) } } }
                td { (view::time(p.meta.created_at, now)) }
            } } }
        } }
        (view::pager((page > 0).then(|| page_link(&console, "/pulls", &q, page - 1)), more.then(|| page_link(&console, "/pulls", &q, page + 1))))
    };
    Ok(view::page(
        &console,
        &viewer,
        "/pulls",
        "Pull requests",
        None,
        body,
    ))
}
