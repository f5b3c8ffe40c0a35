//! The overview: per target, what needs an operator (failed or blocked tasks, an open circuit,
//! PRs waiting for review, refused deliveries, spent budgets), what is running, and counts of
//! the rest;
//! below, the latest events, followed live.

use std::{collections::BTreeMap, time::Duration};

use axum::extract::State;
use leviathan_core::{
    Event, Timestamp,
    graph::{AttemptNode, Circuit, Graph, TargetNode},
    model::TaskStatus,
};
use maud::{Markup, html};

use super::{Tail, encode, events_table};
use crate::console::{Console, error::ConsoleError, session::Viewer, view};

/// A pull request open longer than this is waiting for review.
const REVIEW_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Latest events shown under the targets.
const RECENT: u64 = 20;

/// Something on a target that an operator should look at.
enum Need {
    Task {
        id: String,
        status: TaskStatus,
        reason: Option<String>,
    },
    Circuit {
        until: Timestamp,
        failures: u32,
    },
    Review {
        number: u64,
        url: String,
        title: Option<String>,
        since: Timestamp,
    },
    /// The trusted side delivered nothing for the latest attempt of an unfinished task.
    Refused {
        attempt: String,
        reason: String,
    },
    /// A budget refused a model call of the latest attempt of an unfinished task.
    Budget {
        attempt: String,
        spent: String,
    },
}

struct TargetView {
    target: TargetNode,
    needs: Vec<Need>,
    running: Vec<AttemptNode>,
    tasks: BTreeMap<&'static str, usize>,
}

fn target_view(graph: &Graph, target: &TargetNode, now: Timestamp) -> TargetView {
    let mut needs = Vec::new();
    let mut tasks = BTreeMap::new();
    for task in graph.tasks_of(&target.target_id) {
        *tasks.entry(task.status.as_str()).or_insert(0) += 1;
        if matches!(task.status, TaskStatus::Failed | TaskStatus::Blocked) {
            needs.push(Need::Task {
                id: task.task_id.to_string(),
                status: task.status,
                reason: task.status_reason.clone(),
            });
        }
        let last = task.last_attempt.as_ref().and_then(|id| graph.attempt(id));
        if let Some(attempt) = last.filter(|_| task.status != TaskStatus::Completed) {
            needs.extend(attempt_needs(attempt));
        }
    }
    if let Circuit::Open {
        until, failures, ..
    } = target.circuit
    {
        needs.push(Need::Circuit { until, failures });
    }
    for pr in graph.open_pull_requests(Some(&target.target_id)) {
        if now.saturating_since(pr.meta.created_at) > REVIEW_WAIT {
            needs.push(Need::Review {
                number: pr.number,
                url: pr.url.clone(),
                title: pr.title.clone(),
                since: pr.meta.created_at,
            });
        }
    }
    let running = graph
        .live_attempts()
        .filter(|a| a.target_id == target.target_id)
        .cloned()
        .collect();
    TargetView {
        target: target.clone(),
        needs,
        running,
        tasks,
    }
}

/// What the latest attempt of an unfinished task leaves for an operator: a refused delivery, a
/// spent budget.
fn attempt_needs(attempt: &AttemptNode) -> impl Iterator<Item = Need> + '_ {
    let refused = attempt
        .delivery_refused
        .as_ref()
        .map(|reason| Need::Refused {
            attempt: attempt.attempt_id.to_string(),
            reason: reason.clone(),
        });
    let budget = attempt.budget_exhausted.as_ref().map(|spent| Need::Budget {
        attempt: attempt.attempt_id.to_string(),
        spent: spent.clone(),
    });
    refused.into_iter().chain(budget)
}

pub(crate) async fn page(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Markup, ConsoleError> {
    let plane = console.caught_up().await?;
    let now = Timestamp::now();
    let targets: Vec<TargetView> = {
        let graph = plane.ledger().graph().await;
        graph
            .targets()
            .map(|t| target_view(&graph, t, now))
            .collect()
    };
    let head = plane.head().await?.map_or(0, |h| h.seq);
    let mut recent = plane
        .events()
        .read(head.saturating_sub(RECENT), RECENT as usize)
        .await
        .map_err(crate::service::ControlPlaneError::from)?;
    recent.reverse();
    let last = last_events(&console, &targets).await?;
    let body = html! {
        p.muted { "Event stream: " span #live-status { "connecting…" } }
        @if targets.is_empty() { p { "No target is registered yet." } }
        @for view in &targets { (target_section(&console, view, &last, now)) }
        h2 { "Latest events" }
        (events_table(&console, &recent, now, Some(Tail::default()), None))
    };
    Ok(view::page(
        &console,
        &viewer,
        "/",
        "Overview",
        Some(head),
        body,
    ))
}

/// The last event of each running attempt, by attempt id.
async fn last_events(
    console: &Console,
    targets: &[TargetView],
) -> Result<BTreeMap<String, Event>, ConsoleError> {
    let mut last = BTreeMap::new();
    let events = console.api.control_plane().events();
    for attempt in targets.iter().flat_map(|t| &t.running) {
        if let Some(&seq) = attempt.event_seqs.last() {
            let read = events
                .read(seq - 1, 1)
                .await
                .map_err(crate::service::ControlPlaneError::from)?;
            if let Some(event) = read.into_iter().next() {
                last.insert(attempt.attempt_id.to_string(), event);
            }
        }
    }
    Ok(last)
}

fn target_section(
    console: &Console,
    view: &TargetView,
    last: &BTreeMap<String, Event>,
    now: Timestamp,
) -> Markup {
    let t = &view.target;
    let tasks_link = console.link(&format!("/tasks?target={}", encode(t.target_id.as_str())));
    html! {
        section.card aria-labelledby=(format!("target-{}", t.target_id)) {
            h2 id=(format!("target-{}", t.target_id)) {
                a href=(tasks_link) { (t.target_id) }
                @if let Some(name) = &t.name { " " span.muted { (name) } }
            }
            div.groups {
                div.needs {
                    h3 { "Needs you (" (view.needs.len()) ")" }
                    @if view.needs.is_empty() { p.muted { "Nothing." } }
                    ul { @for need in &view.needs { li { (need_item(console, t, need, now)) } } }
                }
                div.running {
                    h3 { "Running (" (view.running.len()) ")" }
                    @if view.running.is_empty() { p.muted { "Nothing." } }
                    ul { @for a in &view.running { li { (running_item(console, a, last, now)) } } }
                }
                div.healthy {
                    h3 { "Healthy" }
                    ul.counts {
                        @for (status, n) in &view.tasks { li { (n) " " (status) } }
                        li { (t.open_prs) " open PRs" }
                        li { (t.live_attempts) " live attempts" }
                    }
                }
            }
        }
    }
}

fn need_item(console: &Console, target: &TargetNode, need: &Need, now: Timestamp) -> Markup {
    match need {
        Need::Task { id, status, reason } => html! {
            span.bad { "Task " (status.as_str()) } ": "
            a href=(console.link(&format!("/tasks?target={}", encode(target.target_id.as_str())))) { (id) }
            @if let Some(r) = reason { " — " span.muted { (r) } }
        },
        Need::Circuit { until, failures } => html! {
            span.bad { "Circuit open" } " after " (failures) " failures, until " (view::time(*until, now))
        },
        Need::Review {
            number,
            url,
            title,
            since,
        } => html! {
            span.warn { "PR waiting for review" } " since " (view::time(*since, now)) ": "
            a href=(url) rel="noreferrer" { "#" (number) }
            @if let Some(t) = title { " " (t) }
        },
        Need::Refused { attempt, reason } => html! {
            span.bad { "Delivery refused" } ": " (attempt_link(console, attempt))
            " — " span.muted { (reason) }
        },
        Need::Budget { attempt, spent } => html! {
            span.bad { "Budget spent" } ": " (attempt_link(console, attempt))
            " — " span.muted { (spent) }
        },
    }
}

fn attempt_link(console: &Console, attempt: &str) -> Markup {
    html! { a href=(console.link(&format!("/attempts/{}", encode(attempt)))) { (attempt) } }
}

fn running_item(
    console: &Console,
    a: &AttemptNode,
    last: &BTreeMap<String, Event>,
    now: Timestamp,
) -> Markup {
    let since = a.started_at.unwrap_or(a.meta.created_at);
    let elapsed = now.saturating_since(since);
    let over = a.deadline_seconds.is_some_and(|d| elapsed.as_secs() > d);
    html! {
        (attempt_link(console, a.attempt_id.as_str()))
        " · task " (a.task_id)
        @if let Some(x) = &a.executor { " · " (x) }
        " · " span class=[over.then_some("bad")] {
            (view::span(elapsed))
            @if let Some(d) = a.deadline_seconds { " of " (view::span(Duration::from_secs(d))) }
        }
        br;
        span.muted data-last-event=(a.attempt_id) {
            @if let Some(e) = last.get(a.attempt_id.as_str()) {
                (e.event_type) " · " (view::time(e.timestamp, now))
            }
        }
    }
}
