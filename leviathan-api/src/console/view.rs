//! The page shell and the small pieces every page renders the same way: times (relative and
//! absolute), labels of enums, pagers, terminal output without its colour codes.

use std::time::Duration;

use leviathan_core::Timestamp;
use maud::{DOCTYPE, Markup, html};
use serde::Serialize;

use super::{Console, assets, session::Viewer};

/// The pages in the navigation, by path and name.
const NAV: [(&str, &str); 7] = [
    ("/", "Overview"),
    ("/tasks", "Tasks"),
    ("/failures", "Failures"),
    ("/pulls", "Pull requests"),
    ("/events", "Event log"),
    ("/chain", "Chain"),
    ("/spend", "Spend"),
];

fn head(console: &Console, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Leviathan" }
            link rel="icon" type="image/svg+xml" href=(assets::url(console, "icon.svg"));
            link rel="stylesheet" href=(assets::url(console, "console.css"));
            script src=(assets::url(console, "console.js")) defer {}
        }
    }
}

/// A page without navigation (the sign-in form).
pub(crate) fn bare(console: &Console, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(console, title))
            body { main #main { (body) } }
        }
    }
}

/// A signed-in page: navigation (marking `current`), who is signed in, and the body. Pages
/// with `live` set follow the event stream from after `live`'s seq.
pub(crate) fn page(
    console: &Console,
    viewer: &Viewer,
    current: &str,
    title: &str,
    live: Option<u64>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(console, title))
            body data-base=(console.config.base) data-live=[live.map(|_| console.link("/live"))] data-after=[live] {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Console" {
                        span.brand { "Leviathan" }
                        @for (path, name) in NAV {
                            a href=(console.link(path)) aria-current=[(path == current).then_some("page")] { (name) }
                        }
                    }
                    form.signout method="post" action=(console.link("/sign-out")) {
                        span.who { (label(&viewer.principal.role)) " · " (viewer.principal.token_id) }
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

/// An enum's wire name (`in_progress`, `tests_failed`…).
pub(crate) fn label<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A time as "3 min ago", with the absolute time in `datetime` and as a tooltip.
pub(crate) fn time(at: Timestamp, now: Timestamp) -> Markup {
    let absolute = at.to_string();
    let relative = if at.unix_micros() > now.unix_micros() {
        format!("in {}", span(at.saturating_since(now)))
    } else {
        format!("{} ago", span(now.saturating_since(at)))
    };
    html! { time datetime=(absolute) title=(absolute) { (relative) } }
}

/// A duration in its largest whole unit or two: `45 s`, `3 min 20 s`, `2 h 5 min`, `4 d`.
pub(crate) fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// "Older" / "Newer" links of a list paged by cursor.
pub(crate) fn pager(newer: Option<String>, older: Option<String>) -> Markup {
    html! {
        nav.pager aria-label="Pages" {
            @if let Some(href) = newer { a href=(href) rel="prev" { "← Newer" } }
            @if let Some(href) = older { a href=(href) rel="next" { "Older →" } }
        }
    }
}

/// Terminal output without its escape sequences (colours, cursor moves) and other control
/// characters but newlines and tabs.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Skips one escape sequence after its ESC: CSI (`[` … final byte `@`..=`~`), OSC (`]` … BEL
/// or ESC `\`), or a single character.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        Some(']') => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                    break;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_cursor_moves_are_stripped_text_kept() {
        let raw = "\u{1b}[1;31mFAILED\u{1b}[0m test_a\r\n\u{1b}]0;title\u{7}ok\t\u{1b}[2Kdone";
        assert_eq!(strip_ansi(raw), "FAILED test_a\nok\tdone");
    }

    #[test]
    fn spans_read_in_their_largest_units() {
        assert_eq!(span(Duration::from_secs(45)), "45 s");
        assert_eq!(span(Duration::from_secs(200)), "3 min 20 s");
        assert_eq!(span(Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(span(Duration::from_secs(90_000)), "1 d 1 h");
    }
}
