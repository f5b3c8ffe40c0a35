//! The LISTEN task: turns NOTIFYs from any process's writer into moves of the local head watch,
//! which is what wakes subscriptions. Wake-ups only; subscriptions read by `seq`.
//!
//! After every (re)connection it LISTENs first and then reads the head row, so a commit whose
//! notification was lost while disconnected still wakes the subscribers.

use std::{convert::Infallible, sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;

use crate::location::Location;
use crate::log::{NOTIFY_CHANNEL, read_head};

const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Listens forever (until aborted), reconnecting with capped backoff.
pub(super) async fn run(
    listen_pool: PgPool,
    pool: PgPool,
    location: Location,
    head: Arc<watch::Sender<u64>>,
) {
    let mut delay = RETRY_MIN;
    loop {
        let error = listen(&listen_pool, &pool, &head, &mut delay).await;
        tracing::warn!(
            database = %location,
            error = %location.scrub(&error),
            retry_in = ?delay,
            "event notification listener failed; reconnecting"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// One listening session; returns why it ended.
async fn listen(
    listen_pool: &PgPool,
    pool: &PgPool,
    head: &watch::Sender<u64>,
    delay: &mut Duration,
) -> String {
    let session: Result<Infallible, String> = async {
        let mut listener = PgListener::connect_with(listen_pool)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        listener
            .listen(NOTIFY_CHANNEL)
            .await
            .map_err(|e| format!("LISTEN {NOTIFY_CHANNEL}: {e}"))?;
        catch_up(pool, head).await?;
        *delay = RETRY_MIN;
        loop {
            match listener
                .try_recv()
                .await
                .map_err(|e| format!("receiving: {e}"))?
            {
                Some(notification) => match notification.payload().parse::<u64>() {
                    Ok(seq) => advance(head, seq),
                    Err(_) => catch_up(pool, head).await?,
                },
                // The connection was lost and re-established; notifications may have been missed.
                None => catch_up(pool, head).await?,
            }
        }
    }
    .await;
    match session {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

/// Moves the head watch to the stored head.
async fn catch_up(pool: &PgPool, head: &watch::Sender<u64>) -> Result<(), String> {
    let stored = read_head(pool).await.map_err(|e| e.to_string())?;
    advance(head, stored.map_or(0, |h| h.seq));
    Ok(())
}

/// Moves the head watch forward (never back), waking subscribers only when it moves.
pub(super) fn advance(head: &watch::Sender<u64>, seq: u64) {
    head.send_if_modified(|seen| {
        let moved = seq > *seen;
        if moved {
            *seen = seq;
        }
        moved
    });
}
