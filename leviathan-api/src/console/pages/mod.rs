//! One module per page. Each handler reads what it shows under the graph's lock, lets it go,
//! then renders.

pub(crate) mod attempt;
pub(crate) mod chain;
pub(crate) mod events;
pub(crate) mod lists;
pub(crate) mod overview;
pub(crate) mod spend;

use leviathan_core::{Event, Timestamp};
use maud::{Markup, html};

use super::{Console, view};

/// Filters a live list applies to arriving events (the same the server applied to the rows).
#[derive(Default)]
pub(crate) struct Tail<'a> {
    pub(crate) event_type: Option<&'a str>,
    pub(crate) target: Option<&'a str>,
    pub(crate) attempt: Option<&'a str>,
}

/// Events as a table, newest first as given; with `tail`, new events matching it are added at
/// the top as they are appended. `highlight` marks one row (a jump to a `seq`).
pub(crate) fn events_table(
    console: &Console,
    events: &[Event],
    now: Timestamp,
    tail: Option<Tail<'_>>,
    highlight: Option<u64>,
) -> Markup {
    let field = |e: &'_ Event, name: &str| {
        e.payload
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    html! {
        div.table {
            table {
                thead { tr {
                    th scope="col" { "seq" } th scope="col" { "time" } th scope="col" { "type" }
                    th scope="col" { "target" } th scope="col" { "attempt" } th scope="col" { "hash" }
                } }
                @let live = tail.as_ref().map(|_| "");
                tbody data-tail=[live]
                    data-filter-type=[tail.as_ref().and_then(|t| t.event_type)]
                    data-filter-target=[tail.as_ref().and_then(|t| t.target)]
                    data-filter-attempt=[tail.as_ref().and_then(|t| t.attempt)] {
                    @for e in events {
                        tr data-seq=(e.seq) class=[(highlight == Some(e.seq)).then_some("target")] {
                            td { a href=(console.link(&format!("/events/{}", e.seq))) { "#" (e.seq) } }
                            td { (view::time(e.timestamp, now)) }
                            td { (e.event_type) }
                            td { (field(e, "target_id").unwrap_or_default()) }
                            td { @if let Some(a) = field(e, "attempt_id") {
                                a href=(console.link(&format!("/attempts/{}", encode(&a)))) { (a) }
                            } }
                            td { code title=(e.hash.to_hex()) { (e.hash.to_hex()[..12]) } }
                        }
                    }
                }
            }
        }
    }
}

/// A value made safe for a path segment or a query value.
pub(crate) fn encode(raw: &str) -> String {
    percent_encoding::utf8_percent_encode(raw, percent_encoding::NON_ALPHANUMERIC).to_string()
}
