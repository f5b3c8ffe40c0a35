//! Spend: cost in USD and tokens per day per target and model from the recorded model calls
//! (`model.call_completed`, its `cost_usd` when the model gateway priced it), as bar charts
//! drawn on the server (SVG) and a table.

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
    cost_usd: f64,
    /// Calls that recorded no cost.
    unpriced: u64,
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
            match call.cost_usd {
                Some(cost) => u.cost_usd += cost,
                None => u.unpriced += 1,
            }
        }
        usage
    };
    let cost = last_days(&usage, |u| u.cost_usd);
    let tokens = last_days(&usage, |u| (u.tokens_in + u.tokens_out) as f64);
    let body = html! {
        (chart(&cost, Unit::Usd))
        (chart(&tokens, Unit::Tokens))
        div.table { table {
            thead { tr { th { "day" } th { "target" } th { "model" } th { "calls" } th { "cost (USD)" }
                th { "tokens in" } th { "tokens out" } } }
            tbody { @for ((day, target, model), u) in usage.iter().rev() { tr {
                td { (day) } td { (target) } td { (model) } td { (u.calls) }
                td { (usd(u.cost_usd)) @if u.unpriced > 0 { " " span.muted { "(" (u.unpriced) " unpriced)" } } }
                td { (u.tokens_in) } td { (u.tokens_out) }
            } } }
        } }
        p.muted { "From each " code { "model.call_completed" } " event; costs as the model gateway priced each call ("
            code { "cost_usd" } "), calls without one count no cost." }
    };
    Ok(view::page(&console, &viewer, "/spend", "Spend", None, body))
}

/// The last [`DAYS`] days with calls, oldest first, each with the sum of `amount` over its
/// targets and models.
fn last_days(usage: &BTreeMap<Key, Usage>, amount: impl Fn(&Usage) -> f64) -> Vec<(&str, f64)> {
    let mut per_day: BTreeMap<&str, f64> = BTreeMap::new();
    for ((day, _, _), u) in usage {
        *per_day.entry(day).or_default() += amount(u);
    }
    let skip = per_day.len().saturating_sub(DAYS);
    per_day.into_iter().skip(skip).collect()
}

fn usd(amount: f64) -> String {
    format!("${amount:.2}")
}

/// What a chart counts.
#[derive(Clone, Copy)]
enum Unit {
    Usd,
    Tokens,
}

impl Unit {
    fn amount(self, value: f64) -> String {
        match self {
            Self::Usd => usd(value),
            Self::Tokens => format!("{value:.0} tokens"),
        }
    }

    fn caption(self) -> &'static str {
        match self {
            Self::Usd => "Cost in USD per day",
            Self::Tokens => "Tokens (in + out) per day",
        }
    }
}

/// One bar per day, with the largest day's total as the scale.
fn chart(days: &[(&str, f64)], unit: Unit) -> Markup {
    let max = days.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let scale = if max > 0.0 { max } else { 1.0 };
    let (width, height, bottom) = (720usize, 220usize, 30usize);
    let slot = if days.is_empty() {
        width
    } else {
        width / days.len()
    };
    html! {
        figure {
            svg viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(unit.caption()) {
                line.axis x1="0" x2=(width) y1=(height - bottom) y2=(height - bottom) {}
                @for (i, (day, value)) in days.iter().enumerate() {
                    @let h = ((height - bottom - 20) as f64 * value / scale).round() as usize;
                    @let x = i * slot + slot / 8;
                    rect.bar x=(x) y=(height - bottom - h) width=((slot * 3 / 4).max(1)) height=(h) {
                        title { (day) ": " (unit.amount(*value)) }
                    }
                    @if days.len() <= 10 || i % (days.len() / 10 + 1) == 0 {
                        text x=(x) y=(height - 10) { (day[5..]) }
                    }
                }
                text x="4" y="12" { (unit.amount(max)) }
            }
            figcaption.muted { (unit.caption()) ", last " (days.len()) " days with calls." }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Unit, chart};

    #[test]
    fn the_chart_scales_to_the_largest_day() {
        let svg = chart(&[("2026-01-01", 50.0), ("2026-01-02", 100.0)], Unit::Tokens).into_string();
        assert!(svg.contains("height=\"170\""), "{svg}");
        assert!(svg.contains("height=\"85\""), "{svg}");
    }

    #[test]
    fn the_cost_chart_says_dollars() {
        let svg = chart(&[("2026-01-01", 0.6), ("2026-01-02", 1.2)], Unit::Usd).into_string();
        assert!(svg.contains("2026-01-01: $0.60"), "{svg}");
        assert!(svg.contains(">$1.20<"), "{svg}");
        assert!(svg.contains("height=\"85\""), "{svg}");
    }
}
