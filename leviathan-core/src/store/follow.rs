//! Catch-up-then-follow subscriptions, shared by every backend.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures::stream;
use tokio::sync::watch;

use super::event_store::{EventStore, EventStream};

const PAGE: usize = 512;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Streams events with `seq > after` from `store`: reads pages by `seq` until caught up, then
/// waits for `head` (the backend's latest appended seq) to move and reads again. Reading by
/// `seq` after the last delivered one is what guarantees no gap and no reordering, whatever
/// the wake-ups do. Transient read errors are retried with capped backoff; a permanent error is
/// delivered and ends the stream, as does the backend dropping its head sender.
pub fn follow(store: Arc<dyn EventStore>, after: u64, head: watch::Receiver<u64>) -> EventStream {
    struct State {
        store: Arc<dyn EventStore>,
        after: u64,
        buffer: VecDeque<crate::event::Event>,
        head: watch::Receiver<u64>,
        done: bool,
    }
    let state = State {
        store,
        after,
        buffer: VecDeque::new(),
        head,
        done: false,
    };
    Box::pin(stream::unfold(state, |mut st| async move {
        let mut delay = Duration::from_millis(50);
        loop {
            if st.done {
                return None;
            }
            if let Some(event) = st.buffer.pop_front() {
                st.after = event.seq;
                return Some((Ok(event), st));
            }
            // Mark the current head seen before reading, so an append after the read wakes us.
            let seen = *st.head.borrow_and_update();
            match st.store.read(st.after, PAGE).await {
                Ok(page) if !page.is_empty() => {
                    st.buffer.extend(page);
                    delay = Duration::from_millis(50);
                }
                Ok(_) => {
                    if seen > st.after {
                        continue;
                    }
                    if st.head.changed().await.is_err() {
                        return None;
                    }
                }
                Err(err) if err.is_transient() => {
                    tracing::warn!(error = %err, "subscription read failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(err) => {
                    st.done = true;
                    return Some((Err(err), st));
                }
            }
        }
    }))
}
