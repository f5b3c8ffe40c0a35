//! The chain: its head, the last verification (run one from here), and the latest signed
//! checkpoint of the verifiable log with the key that checks it.

use axum::{
    Form,
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use leviathan_core::{Timestamp, id::TokenId};
use maud::{Markup, html};
use serde::Deserialize;

use crate::{
    console::{Console, error::ConsoleError, session::Viewer, view},
    wire::ChainVerification,
};

/// A verification run from the console: when, by whom, and what it found.
#[derive(Clone, Debug)]
pub(crate) struct Verification {
    at: Timestamp,
    by: TokenId,
    outcome: ChainVerification,
}

pub(crate) async fn page(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Markup, ConsoleError> {
    let plane = console.api.control_plane();
    let head = plane.head().await?;
    let checkpoint = plane.latest_checkpoint().await;
    let key = plane.log_verifier_key().map(str::to_owned);
    let last = console
        .last_verification
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let now = Timestamp::now();
    let body = html! {
        section.card {
            h2 { "Head" }
            @match &head {
                Some(h) => p { "#" (h.seq) " · " code { (h.hash.to_hex()) } },
                None => p.muted { "The log is empty." },
            }
        }
        section.card {
            h2 { "Verification" }
            @match &last {
                Some(v) => p { (outcome(&v.outcome)) " · " (view::time(v.at, now)) " by " (v.by) },
                None => p.muted { "Not verified from the console since the server started." },
            }
            form.inline method="post" action=(console.link("/chain/verify")) {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" { "Verify now" }
            }
        }
        section.card {
            h2 { "Signed checkpoint" }
            @match &checkpoint {
                Ok(c) => {
                    p { "Covers the first " (c.size) " events. Each event's page links its inclusion proof." }
                    pre #checkpoint { (c.note) }
                },
                Err(e) => p.muted { (e) },
            }
            @if let Some(k) = &key { p { "Verifier key: " code { (k) } } }
        }
    };
    Ok(view::page(&console, &viewer, "/chain", "Chain", None, body))
}

fn outcome(v: &ChainVerification) -> Markup {
    match v {
        ChainVerification::Verified(r) => html! {
            span.good { "Verified" } " " (r.events) " events (" (r.bytes) " bytes)"
        },
        ChainVerification::Broken(b) => html! {
            span.bad { "Broken at #" (b.seq) } ": " (view::label(&b.fault))
        },
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    csrf: String,
}

/// Verifies the whole chain now and keeps the result for the page (any signed-in role may:
/// it reads only, but it is work, so it is a POST with the CSRF token, and one at a time).
pub(crate) async fn verify(
    State(console): State<Console>,
    viewer: Viewer,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form.csrf)?;
    let Ok(_running) = console.verifying.try_lock() else {
        return Err(ConsoleError::Unavailable(
            "a verification of the chain is running; its result will show on this page".into(),
        ));
    };
    let outcome = console.api.control_plane().verify().await?;
    let verification = Verification {
        at: Timestamp::now(),
        by: viewer.principal.token_id.clone(),
        outcome,
    };
    *console
        .last_verification
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(verification);
    Ok(Redirect::to(&console.link("/chain")).into_response())
}
