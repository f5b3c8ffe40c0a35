//! The event log: newest first, filtered by type, target or attempt, paged by `seq`, with a
//! jump to a `seq` and a live tail; and one event with its JSON and its inclusion proof (also as
//! a proof bundle to verify offline).

use axum::{
    Json,
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use leviathan_core::{Event, Timestamp, auth::Action, id::AttemptId};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Tail, encode, events_table};
use crate::{
    console::{Console, error::ConsoleError, session::Viewer, view},
    service::{ControlPlaneError, Leaf},
};

/// Rows per page.
const PAGE: usize = 100;
/// Events read per step of a filtered scan.
const STEP: usize = 1000;
/// Events a filtered page scans at most before it stops and offers the next page: a rare type
/// in a long log costs a bounded read per page, not the whole log.
const SCAN: u64 = 20_000;

#[derive(Deserialize, Default)]
pub(crate) struct LogQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    target: Option<String>,
    attempt: Option<String>,
    /// Show events before this `seq` (exclusive).
    before: Option<u64>,
    /// Jump to this `seq`.
    seq: Option<u64>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A page of matching events, newest first, and the `seq` to continue before (if any).
async fn scan(
    console: &Console,
    q: &LogQuery,
    before: u64,
) -> Result<(Vec<Event>, Option<u64>), ConsoleError> {
    let plane = console.api.control_plane();
    if let Some(raw) = nonempty(&q.attempt) {
        let id = AttemptId::new(raw)
            .map_err(|e| ConsoleError::BadRequest(format!("parameter `attempt`: {e}")))?;
        let detail = plane.attempt(&id, usize::MAX).await?;
        let mut events: Vec<Event> = detail
            .events
            .into_iter()
            .rev()
            .filter(|e| e.seq < before && matches(q, e))
            .take(PAGE + 1)
            .collect();
        let more = events.len() > PAGE;
        events.truncate(PAGE);
        let older = more.then(|| events.last().map_or(0, |e| e.seq));
        return Ok((events, older));
    }
    let mut found = Vec::new();
    let mut upper = before; // exclusive
    let floor = before.saturating_sub(SCAN);
    while upper > 1 && upper > floor && found.len() < PAGE {
        let from = upper.saturating_sub(STEP as u64).max(floor).max(1);
        let batch = plane
            .events()
            .read(from - 1, (upper - from) as usize)
            .await
            .map_err(ControlPlaneError::from)?;
        for e in batch.into_iter().rev() {
            if found.len() < PAGE && matches(q, &e) {
                found.push(e);
            }
        }
        upper = from;
        if let Some(last) = found.last().filter(|_| found.len() == PAGE) {
            upper = last.seq;
        }
    }
    Ok((found, (upper > 1).then_some(upper)))
}

fn matches(q: &LogQuery, e: &Event) -> bool {
    let field = |name| e.payload.get(name).and_then(|v| v.as_str());
    nonempty(&q.event_type).is_none_or(|t| e.event_type == t)
        && nonempty(&q.target).is_none_or(|t| field("target_id") == Some(t))
        && nonempty(&q.attempt).is_none_or(|a| field("attempt_id") == Some(a))
}

fn query_string(q: &LogQuery) -> String {
    let mut out = String::new();
    for (name, value) in [
        ("type", &q.event_type),
        ("target", &q.target),
        ("attempt", &q.attempt),
    ] {
        if let Some(v) = nonempty(value) {
            out.push_str(&format!("&{name}={}", encode(v)));
        }
    }
    out
}

pub(crate) async fn page(
    State(console): State<Console>,
    viewer: Viewer,
    Query(q): Query<LogQuery>,
) -> Result<Markup, ConsoleError> {
    let head = console
        .api
        .control_plane()
        .head()
        .await?
        .map_or(0, |h| h.seq);
    let before = match (q.seq, q.before) {
        (Some(seq), _) => seq.saturating_add(PAGE as u64 / 2).min(head + 1),
        (None, Some(b)) => b.min(head + 1),
        (None, None) => head + 1,
    };
    let (events, older) = scan(&console, &q, before).await?;
    let first_page = before == head + 1;
    let tail = first_page.then(|| Tail {
        event_type: nonempty(&q.event_type),
        target: nonempty(&q.target),
        attempt: nonempty(&q.attempt),
    });
    let filters = query_string(&q);
    let now = Timestamp::now();
    let body = html! {
        form.filters method="get" action=(console.link("/events")) {
            label { "Type" input type="text" name="type" value=[nonempty(&q.event_type)] placeholder="attempt.failed"; }
            label { "Target" input type="text" name="target" value=[nonempty(&q.target)]; }
            label { "Attempt" input type="text" name="attempt" value=[nonempty(&q.attempt)]; }
            button type="submit" { "Filter" }
        }
        form.filters method="get" action=(console.link("/events")) {
            label { "Jump to seq" input type="number" name="seq" min="1" max=(head) value=[q.seq]; }
            button type="submit" { "Go" }
        }
        p.muted { "Head: #" (head) "." @if first_page { " New events appear at the top (" span #live-status { "connecting…" } ")." } }
        (events_table(&console, &events, now, tail, q.seq))
        (view::pager(
            (!first_page).then(|| console.link(&format!("/events?{}", filters.trim_start_matches('&')))),
            older.map(|b| console.link(&format!("/events?before={b}{filters}"))),
        ))
    };
    Ok(view::page(
        &console,
        &viewer,
        "/events",
        "Event log",
        first_page.then_some(head),
        body,
    ))
}

#[derive(Deserialize)]
pub(crate) struct Format {
    format: Option<String>,
}

/// One event: its JSON (as a page, or raw with `?format=json`), and the proof that it is in
/// the latest signed checkpoint's tree (as a self-contained bundle with `?format=proof`).
pub(crate) async fn one(
    State(console): State<Console>,
    viewer: Viewer,
    Path(seq): Path<u64>,
    Query(format): Query<Format>,
) -> Result<Response, ConsoleError> {
    if !viewer.may(Action::Read) {
        return Err(ConsoleError::Forbidden(
            "this token may not read the log".into(),
        ));
    }
    let plane = console.api.control_plane();
    let event = plane
        .events()
        .read(seq.saturating_sub(1), 1)
        .await
        .map_err(ControlPlaneError::from)?
        .into_iter()
        .next()
        .filter(|e| e.seq == seq)
        .ok_or_else(|| ConsoleError::NotFound(format!("no event #{seq}")))?;
    match format.format.as_deref() {
        Some("json") => return Ok(Json(event).into_response()),
        Some("proof") => return proof_bundle(&console, seq).await,
        _ => {}
    }
    let proof = plane.inclusion_proof(Leaf::Seq(seq), None).await;
    let json = serde_json::to_string_pretty(&event).unwrap_or_default();
    let body = html! {
        p { a href=(console.link(&format!("/events/{seq}?format=json"))) { "Raw JSON" } " · "
            a href=(console.link(&format!("/events?seq={seq}"))) { "In the log" } }
        pre { (json) }
        h2 #proof { "Inclusion proof" }
        @match proof {
            Ok(p) => {
                p { "Leaf " (p.leaf_index) " of the tree of " (p.tree_size) " events (the latest signed checkpoint, on the "
                    a href=(console.link("/chain")) { "Chain" } " page)." }
                p { a href=(console.link(&format!("/events/{seq}?format=proof"))) download=(format!("proof-{seq}.json")) { "Proof bundle" }
                    " (the event, its inclusion proof and the signed checkpoint): "
                    code { "leviathan log verify proof-" (seq) ".json --key PUB" } " checks it offline." }
                pre { (serde_json::to_string_pretty(&p).unwrap_or_default()) }
            },
            Err(e) => p.muted { "No proof: " (e) },
        }
    };
    Ok(view::page(
        &console,
        &viewer,
        "/events",
        &format!("Event #{seq}"),
        None,
        body,
    )
    .into_response())
}

/// The event's proof bundle as `leviathan log prove` writes it, as a download.
async fn proof_bundle(console: &Console, seq: u64) -> Result<Response, ConsoleError> {
    let bundle = console.api.control_plane().proof_bundle(seq).await?;
    let disposition = format!("attachment; filename=\"proof-{seq}.json\"");
    Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(bundle)).into_response())
}
