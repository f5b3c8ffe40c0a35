//! An attempt: its phases as a waterfall, model calls, test runs with their output, the
//! proposal's diff, its pull request, its events, and (for operators) cancellation and
//! invalidation.

use axum::{
    Form,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
};
use leviathan_core::{
    Event, Sha256Digest, Timestamp,
    auth::Action,
    graph::{ModelCallNode, Node, NodeKind, TestRunNode},
    id::AttemptId,
    model::AttemptStatus,
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Tail, encode, events_table};
use crate::{
    AttemptAction,
    console::{Console, error::ConsoleError, session::Viewer, view},
    wire::AttemptDetail,
};

/// Events of the attempt shown (the most recent).
const MAX_EVENTS: usize = 500;
/// Bytes of a test output or a diff shown (their ends, where failures are).
const MAX_SHOWN: usize = 64 * 1024;

fn parse_id(raw: String) -> Result<AttemptId, ConsoleError> {
    AttemptId::new(raw).map_err(|e| ConsoleError::BadRequest(e.to_string()))
}

pub(crate) async fn page(
    State(console): State<Console>,
    viewer: Viewer,
    Path(raw): Path<String>,
) -> Result<Markup, ConsoleError> {
    let id = parse_id(raw)?;
    if !viewer.may(Action::ReadAttempt(&id)) {
        return Err(ConsoleError::Forbidden(format!(
            "this token may not read attempt `{id}`"
        )));
    }
    let plane = console.api.control_plane();
    let detail = plane.attempt(&id, MAX_EVENTS).await?;
    let (calls, runs) = {
        let graph = plane.ledger().graph().await;
        let calls: Vec<ModelCallNode> = graph
            .produced_by(&id, NodeKind::ModelCall)
            .filter_map(|n| match n {
                Node::ModelCall(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let runs: Vec<TestRunNode> = graph
            .produced_by(&id, NodeKind::TestRun)
            .filter_map(|n| match n {
                Node::TestRun(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        (calls, runs)
    };
    let mut outputs = Vec::with_capacity(runs.len());
    for run in &runs {
        outputs.push(text_artifact(&console, run.output_sha256.as_ref()).await);
    }
    // The proposal's patch (`delivery.requested`), else a diff the worker stored.
    let diff_sha = detail
        .attempt
        .proposal
        .as_ref()
        .map(|p| p.patch_sha256)
        .or_else(|| {
            detail
                .artifacts
                .iter()
                .find(|a| a.kind == "diff" || a.kind == "patch")
                .map(|a| a.sha256)
        });
    let diff = text_artifact(&console, diff_sha.as_ref()).await;
    let now = Timestamp::now();
    let head = plane.head().await?.map_or(0, |h| h.seq);
    let mut events = detail.events.clone();
    events.reverse();
    let body = html! {
        (summary(&detail, now))
        (actions(&console, &viewer, &detail))
        h2 { "Timeline" }
        (timeline(&detail.events))
        h2 { "Model calls (" (calls.len()) ")" }
        (model_calls(&calls))
        h2 { "Test runs (" (runs.len()) ")" }
        (test_runs(&runs, &outputs))
        h2 { "Proposal" }
        @match &diff { Some(text) => (render_diff(text)), None => p.muted { "No diff recorded." } }
        h2 { "Events (" (detail.events_total) ")" }
        (events_table(&console, &events, now, Some(Tail { attempt: Some(id.as_str()), ..Tail::default() }), None))
    };
    let title = format!("Attempt {id}");
    Ok(view::page(&console, &viewer, "", &title, Some(head), body))
}

/// The text of an artifact, its end only when long, without terminal escapes; `None` when it
/// is not stored.
async fn text_artifact(console: &Console, sha: Option<&Sha256Digest>) -> Option<String> {
    let bytes = console.api.control_plane().get_artifact(sha?).await.ok()?;
    let start = bytes.len().saturating_sub(MAX_SHOWN);
    Some(view::strip_ansi(&String::from_utf8_lossy(&bytes[start..])))
}

fn summary(d: &AttemptDetail, now: Timestamp) -> Markup {
    let a = &d.attempt;
    html! {
        section.card {
            ul.counts {
                li { "status " strong { (view::label(&a.status)) } }
                li { "task " (a.task_id) " on " (a.target_id) }
                li { "attempt #" (a.attempt_number) }
                @if let Some(x) = &a.executor { li { "executor " (x) } }
                @if let Some(w) = &a.worker { li { "worker " (w) } }
                li { "created " (view::time(a.meta.created_at, now)) }
                @if let Some(t) = a.ended_at { li { "ended " (view::time(t, now)) } }
                li { (a.tokens_in) " tokens in, " (a.tokens_out) " out" }
            }
            @if let Some(f) = &a.failure {
                p { span.bad { (view::label(&f.kind)) " (" (view::label(&f.class)) ")" } ": " (f.summary) }
            }
            @if let Some(r) = &a.invalidated_reason { p { span.bad { "Invalidated" } ": " (r) } }
            @if let Some(pr) = &d.pull_request {
                p { "Pull request " a href=(pr.url) rel="noreferrer" { "#" (pr.number) }
                    @if let Some(t) = &pr.title { " " (t) } " (" (view::label(&pr.state)) ")" }
            } @else if let Some(url) = &a.pr_url {
                p { "Pull request " a href=(url) rel="noreferrer" { (url) } }
            }
        }
    }
}

fn actions(console: &Console, viewer: &Viewer, d: &AttemptDetail) -> Markup {
    let id = &d.attempt.attempt_id;
    let may = |action: AttemptAction| viewer.may(action.authorization(id));
    let cancel = may(AttemptAction::Cancel) && d.attempt.status.is_live();
    let invalidate =
        may(AttemptAction::Invalidate) && d.attempt.status != AttemptStatus::Invalidated;
    html! {
        @if cancel {
            (action_form(console, viewer, id, AttemptAction::Cancel,
                "Cancel this attempt? Its run is stopped and its task is not retried."))
        }
        @if invalidate {
            (action_form(console, viewer, id, AttemptAction::Invalidate,
                "Invalidate this attempt? It is recorded in the log for good."))
        }
    }
}

/// A form posting `action` with a reason and the session's CSRF token.
fn action_form(
    console: &Console,
    viewer: &Viewer,
    id: &AttemptId,
    action: AttemptAction,
    confirm: &str,
) -> Markup {
    let verb = action.verb();
    let button = match action {
        AttemptAction::Invalidate => "Invalidate",
        AttemptAction::Cancel => "Cancel",
    };
    html! {
        form.inline.operator method="post"
            action=(console.link(&format!("/attempts/{}/{verb}", encode(id.as_str()))))
            data-confirm=(confirm) {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label { "Reason" input type="text" name="reason" required maxlength="500"; }
            button.danger type="submit" { (button) }
        }
    }
}

/// One bar of the waterfall: a phase, when it began and ended (µs since the first event).
struct Phase {
    name: String,
    start: i64,
    end: i64,
    class: &'static str,
}

fn phases(events: &[Event]) -> Vec<Phase> {
    let Some(first) = events.first().map(|e| e.timestamp.unix_micros()) else {
        return Vec::new();
    };
    let mut previous = first;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let at = e.timestamp.unix_micros();
        let took = e.payload.get("duration_ms").and_then(|v| v.as_u64());
        let start = took
            .map_or(previous, |ms| at.saturating_sub(ms as i64 * 1000))
            .max(first);
        let class = match e.event_type.as_str() {
            "tests.failed" | "attempt.failed" | "attempt.timed_out" | "attempt.invalidated" => {
                "failed"
            }
            "tests.passed" | "attempt.succeeded" | "pr.created" => "passed",
            _ => "",
        };
        out.push(Phase {
            name: e.event_type.clone(),
            start: start - first,
            end: at - first,
            class,
        });
        previous = at;
    }
    out
}

fn timeline(events: &[Event]) -> Markup {
    let phases = phases(events);
    let total = phases.iter().map(|p| p.end).max().unwrap_or(0).max(1);
    let row = 18;
    let label = 190;
    let width = 760;
    let height = phases.len() * row + 24;
    let x = |us: i64| label as f64 + (width - label - 10) as f64 * us as f64 / total as f64;
    html! {
        figure {
            svg.timeline viewBox=(format!("0 0 {width} {height}")) role="img"
                aria-label="Timeline of the attempt's phases" {
                @for (i, p) in phases.iter().enumerate() {
                    @let y = i * row + 4;
                    text x="0" y=(y + 12) { (p.name) }
                    rect class=(format!("phase {}", p.class)) x=(format!("{:.1}", x(p.start)))
                        y=(y) height=(row - 6)
                        width=(format!("{:.1}", (x(p.end) - x(p.start)).max(2.0))) {
                        title { (p.name) ": " (view::span(std::time::Duration::from_micros((p.end - p.start).max(0) as u64))) }
                    }
                }
                text x=(label) y=(height - 4) { "0" }
                text x=(width - 60) y=(height - 4) {
                    (view::span(std::time::Duration::from_micros(total as u64)))
                }
            }
            figcaption.muted { "Each bar runs from the previous event (or the start of a timed step) to the event." }
        }
    }
}

fn model_calls(calls: &[ModelCallNode]) -> Markup {
    html! {
        @if calls.is_empty() { p.muted { "None recorded." } } @else {
            div.table { table {
                thead { tr { th { "#" } th { "round" } th { "model" } th { "provider" }
                    th { "tokens in" } th { "tokens out" } th { "took" } } }
                tbody { @for c in calls { tr {
                    td { (c.index) } td { (c.round) } td { (c.model) }
                    td { (c.provider.as_deref().unwrap_or("")) }
                    td { (c.tokens_in) } td { (c.tokens_out) }
                    td { @if let Some(ms) = c.duration_ms { (ms) " ms" } }
                } } }
            } }
        }
    }
}

fn test_runs(runs: &[TestRunNode], outputs: &[Option<String>]) -> Markup {
    html! {
        @if runs.is_empty() { p.muted { "None recorded." } }
        @for (run, output) in runs.iter().zip(outputs) {
            details open[!run.passed] {
                summary {
                    span class=(if run.passed { "good" } else { "bad" }) { (if run.passed { "passed" } else { "failed" }) }
                    " round " (run.round) " · " code { (run.command) }
                    @if let Some(code) = run.exit_code { " · exit " (code) }
                    @if let Some(ms) = run.duration_ms { " · " (ms) " ms" }
                }
                @match output { Some(text) => pre { (text) }, None => p.muted { "Output not stored." } }
            }
        }
    }
}

/// The files a unified diff changes: from git's `diff --git a/X b/Y` headers (which also name
/// deleted and binary files), else from its `+++` lines.
fn diff_files(text: &str) -> Vec<&str> {
    let git: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("diff --git "))
        .filter_map(|names| names.rsplit_once(" b/").map(|(_, new)| new))
        .collect();
    if !git.is_empty() {
        return git;
    }
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("+++ ")
                .map(|f| f.strip_prefix("b/").unwrap_or(f))
        })
        .filter(|f| *f != "/dev/null")
        .collect()
}

/// A unified diff with its list of files, each line classed as added, removed or hunk header.
fn render_diff(text: &str) -> Markup {
    let files = diff_files(text);
    html! {
        p { (files.len()) " files: " @for (i, f) in files.iter().enumerate() { @if i > 0 { ", " } code { (f) } } }
        pre.diff { @for line in text.lines() {
            @let class = if line.starts_with("@@") { "hunk" }
                else if line.starts_with('+') && !line.starts_with("+++") { "add" }
                else if line.starts_with('-') && !line.starts_with("---") { "del" } else { "" };
            span class=[(!class.is_empty()).then_some(class)] { (line) } "\n"
        } }
    }
}

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    csrf: String,
    reason: String,
}

/// Records `attempt.invalidated` for an operator whose form carries the session's CSRF token.
pub(crate) async fn invalidate(
    console: State<Console>,
    viewer: Viewer,
    raw: Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    act(AttemptAction::Invalidate, console, viewer, raw, form).await
}

/// Records the cancellation (`attempt.failed`, kind `cancelled`) for an operator whose form
/// carries the session's CSRF token; the scheduler running the attempt stops it.
pub(crate) async fn cancel(
    console: State<Console>,
    viewer: Viewer,
    raw: Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    act(AttemptAction::Cancel, console, viewer, raw, form).await
}

async fn act(
    action: AttemptAction,
    State(console): State<Console>,
    viewer: Viewer,
    Path(raw): Path<String>,
    form: ActionForm,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form.csrf)?;
    let id = parse_id(raw)?;
    if !viewer.may(action.authorization(&id)) {
        return Err(ConsoleError::Forbidden(format!(
            "a {} token may not {} attempts; an operator's may",
            view::label(&viewer.principal.role),
            action.verb()
        )));
    }
    let plane = console.api.control_plane();
    plane
        .attempt_action(
            action,
            &id,
            &form.reason,
            None,
            Some(viewer.principal.clone()),
        )
        .await?;
    Ok(Redirect::to(&console.link(&format!("/attempts/{}", encode(id.as_str())))).into_response())
}

#[cfg(test)]
mod tests {
    use super::render_diff;

    const PATCH: &str = "diff --git a/docs/a.md b/docs/a.md\nindex 1..2 100644\n--- a/docs/a.md\n+++ b/docs/a.md\n@@ -1 +1 @@\n-old\n+<script>alert(1)</script>\ndiff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n";

    #[test]
    fn a_patch_lists_every_file_and_renders_as_escaped_text() {
        let html = render_diff(PATCH).into_string();
        assert!(
            html.contains("2 files: <code>docs/a.md</code>, <code>gone.txt</code>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"add\">+&lt;script&gt;alert(1)&lt;/script&gt;</span>"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("<span class=\"del\">-bye</span>"), "{html}");
    }
}
