//! Catch-up-then-follow subscriptions, shared by every backend.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures::stream;
use tokio::sync::watch;

use super::{
    error::EventStoreError,
    event_store::{EventStore, EventStream},
};
use crate::retry::{RetryPolicy, Verdict};

const PAGE: usize = 512;
/// A subscription outlives any outage: it retries transient read errors for as long as it
/// lives, sleeping up to 50 ms doubling to 5 s between tries.
const READ_RETRY: RetryPolicy =
    RetryPolicy::new(u32::MAX, Duration::from_millis(50), Duration::from_secs(5));

/// Streams events with `seq > after` from `store`: reads pages by `seq` until caught up, then
/// waits for `head` (the backend's latest appended seq) to move and reads again. Reading by
/// `seq` after the last delivered one is what guarantees no gap and no reordering, whatever
/// the wake-ups do. Transient read errors are retried with the one retry policy; a permanent error is
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
            let read = || st.store.read(st.after, PAGE);
            let verdict = |err: &EventStoreError| {
                if err.is_transient() {
                    Verdict::Transient
                } else {
                    Verdict::Permanent
                }
            };
            match READ_RETRY.retry("subscription read", read, verdict).await {
                Ok(page) if !page.is_empty() => st.buffer.extend(page),
                Ok(_) => {
                    if seen > st.after {
                        continue;
                    }
                    if st.head.changed().await.is_err() {
                        return None;
                    }
                }
                Err(err) => {
                    st.done = true;
                    return Some((Err(err), st));
                }
            }
        }
    }))
}
