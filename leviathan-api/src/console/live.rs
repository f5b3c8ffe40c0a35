//! The event stream for the console's pages: the same subscription as `/v1/events/stream`, but
//! authenticated by the session cookie (a browser's `EventSource` cannot send a bearer token)
//! and carrying a summary of each event, not its payload.

use std::convert::Infallible;

use axum::{
    extract::{Query, State},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::StreamExt;
use leviathan_core::Event;
use serde::{Deserialize, Serialize};

use super::{Console, error::ConsoleError, session::Viewer};

#[derive(Deserialize)]
pub(crate) struct After {
    after: Option<u64>,
}

/// What a page needs to show an event as it arrives.
#[derive(Serialize)]
struct Summary<'a> {
    seq: u64,
    event_type: &'a str,
    timestamp: String,
    actor_id: Option<&'a str>,
    target_id: Option<&'a str>,
    attempt_id: Option<&'a str>,
    hash: String,
}

fn summary(event: &Event) -> Summary<'_> {
    let field = |name| event.payload.get(name).and_then(|v| v.as_str());
    Summary {
        seq: event.seq,
        event_type: &event.event_type,
        timestamp: event.timestamp.to_string(),
        actor_id: event.actor_id.as_deref(),
        target_id: field("target_id"),
        attempt_id: field("attempt_id"),
        hash: event.hash.to_hex(),
    }
}

/// Every event after `after`, then each new one, until the client goes away or the server
/// shuts down; held to the viewer's token's number of open streams.
pub(crate) async fn stream(
    State(console): State<Console>,
    viewer: Viewer,
    Query(After { after }): Query<After>,
) -> Result<Response, ConsoleError> {
    let token = &viewer.principal.token_id;
    let slot = console.api.throttle().open_stream(token).ok_or_else(|| {
        ConsoleError::Unavailable(format!(
            "token `{token}` has too many event streams open; close a console tab"
        ))
    })?;
    let events = console
        .api
        .control_plane()
        .events()
        .subscribe(after.unwrap_or(0))
        .await
        .map_err(crate::service::ControlPlaneError::from)?;
    let stream = events
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(|item| std::future::ready(item.ok()))
        .map(|event| {
            let message = SseEvent::default().id(event.seq.to_string());
            let message = message
                .json_data(summary(&event))
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
            Ok::<_, Infallible>(message)
        })
        .take_until(console.api.streams_closed().cancelled_owned())
        .map(move |message| {
            let _held = &slot;
            message
        });
    let keep_alive = KeepAlive::new().interval(console.api.config().limits.stream_keep_alive);
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}
