//! Spend: tokens per day per target and model from the recorded model calls, as a bar chart
//! drawn on the server (SVG) and a table. Costs appear when model calls record them.

use std::collections::BTreeMap;

use axum::extract::State;
use leviathan_core::graph::Node;
use maud::{Markup, html};

use crate::console::{Console, error::ConsoleError, session::Viewer, view};

/// Days shown, the most recent.
const DAYS: usize = 30;

#[derive(Default, Clone, Copy)]
struct Usage {
    calls: u64,
    tokens_in: u64,
    tokens_out: u64,
}

type Key = (String, String, String); // day, target, model

pub(crate) async fn page(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Markup, ConsoleError> {
    let plane = console.caught_up().await?;
    let usage: BTreeMap<Key, Usage> = {
        let graph = plane.ledger().graph().await;
        let mut usage: BTreeMap<Key, Usage> = BTreeMap::new();
        for node in graph.nodes() {
            let Node::ModelCall(call) = node else {
                continue;
            };
            let target = graph
                .attempt(&call.attempt_id)
                .map_or_else(String::new, |a| a.target_id.to_string());
            let day = call.meta.created_at.to_string()[..10].to_owned();
            let u = usage.entry((day, target, call.model.clone())).or_default();
            u.calls += 1;
            u.tokens_in += call.tokens_in;
            u.tokens_out += call.tokens_out;
        }
        usage
    };
    let mut per_day: BTreeMap<&str, u64> = BTreeMap::new();
    for ((day, _, _), u) in &usage {
        *per_day.entry(day).or_default() += u.tokens_in + u.tokens_out;
    }
    let days: Vec<(&str, u64)> = per_day
        .into_iter()
        .rev()
        .take(DAYS)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let body = html! {
        (chart(&days))
        div.table { table {
            thead { tr { th { "day" } th { "target" } th { "model" } th { "calls" } th { "tokens in" } th { "tokens out" } } }
            tbody { @for ((day, target, model), u) in usage.iter().rev() { tr {
                td { (day) } td { (target) } td { (model) } td { (u.calls) } td { (u.tokens_in) } td { (u.tokens_out) }
            } } }
        } }
        p.muted { "Tokens from each " code { "model.call_completed" } " event. Costs are not recorded by model calls yet." }
    };
    Ok(view::page(&console, &viewer, "/spend", "Spend", None, body))
}

/// Tokens per day as bars, with the largest day's total as the scale.
fn chart(days: &[(&str, u64)]) -> Markup {
    let max = days.iter().map(|(_, t)| *t).max().unwrap_or(0).max(1);
    let (width, height, bottom) = (720usize, 220usize, 30usize);
    let slot = if days.is_empty() {
        width
    } else {
        width / days.len()
    };
    html! {
        figure {
            svg viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="Tokens per day" {
                line.axis x1="0" x2=(width) y1=(height - bottom) y2=(height - bottom) {}
                @for (i, (day, tokens)) in days.iter().enumerate() {
                    @let h = (height - bottom - 20) as u64 * tokens / max;
                    @let x = i * slot + slot / 8;
                    rect.bar x=(x) y=(height as u64 - bottom as u64 - h) width=((slot * 3 / 4).max(1)) height=(h) {
                        title { (day) ": " (tokens) " tokens" }
                    }
                    @if days.len() <= 10 || i % (days.len() / 10 + 1) == 0 {
                        text x=(x) y=(height - 10) { (day[5..]) }
                    }
                }
                text x="4" y="12" { (max) " tokens" }
            }
            figcaption.muted { "Tokens (in + out) per day, last " (days.len()) " days with calls." }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_chart_scales_to_the_largest_day() {
        let svg = super::chart(&[("2026-01-01", 50), ("2026-01-02", 100)]).into_string();
        assert!(svg.contains("height=\"170\""), "{svg}");
        assert!(svg.contains("height=\"85\""), "{svg}");
    }
}
