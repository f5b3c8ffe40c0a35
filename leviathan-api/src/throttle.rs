//! Per-principal limits: a request rate and a number of open event streams. The global
//! concurrency limit bounds memory; these keep one token (a runaway worker, a leaked reader
//! token) from taking every slot from the others.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use leviathan_core::id::TokenId;

/// Keys kept before idle ones are dropped: worker tokens are minted per attempt, so the set of
/// principals grows for as long as the server runs.
const RETAIN_ABOVE: usize = 4096;

/// The per-principal limits of one server.
pub(crate) struct Throttle {
    rate: Option<DefaultKeyedRateLimiter<TokenId>>,
    max_streams: usize,
    streams: Arc<Mutex<HashMap<TokenId, usize>>>,
}

impl Throttle {
    /// `per_second` requests a second with bursts of `burst` (no rate limit when either is 0),
    /// and at most `max_streams` open event streams, per principal.
    pub(crate) fn new(per_second: u32, burst: u32, max_streams: usize) -> Self {
        let rate = NonZeroU32::new(per_second)
            .zip(NonZeroU32::new(burst))
            .map(|(rate, burst)| RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)));
        Self {
            rate,
            max_streams,
            streams: Arc::default(),
        }
    }

    /// Counts a request of `principal`; `Err` says how long until it may send the next.
    pub(crate) fn admit(&self, principal: &TokenId) -> Result<(), Duration> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        if rate.len() > RETAIN_ABOVE {
            rate.retain_recent();
        }
        rate.check_key(principal)
            .map_err(|not_until| not_until.wait_time_from(rate_clock().now()))
    }

    /// Claims one of `principal`'s event-stream slots for as long as the slot lives; `None`
    /// when all are taken.
    pub(crate) fn open_stream(&self, principal: &TokenId) -> Option<StreamSlot> {
        let mut open = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(principal.clone()).or_insert(0);
        if *count >= self.max_streams {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            principal: principal.clone(),
            streams: self.streams.clone(),
        })
    }
}

/// The clock the rate limiter measures with.
fn rate_clock() -> governor::clock::DefaultClock {
    governor::clock::DefaultClock::default()
}

/// An open event stream of one principal; dropping it (the client went away, or the server
/// closed the stream) frees the slot.
pub(crate) struct StreamSlot {
    principal: TokenId,
    streams: Arc<Mutex<HashMap<TokenId, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> TokenId {
        TokenId::new(name).unwrap()
    }

    #[test]
    fn a_burst_is_admitted_and_the_next_request_told_when_to_retry() {
        let throttle = Throttle::new(1, 3, 1);
        for _ in 0..3 {
            assert_eq!(throttle.admit(&id("a")), Ok(()));
        }
        let wait = throttle.admit(&id("a")).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(
            throttle.admit(&id("b")),
            Ok(()),
            "another principal has its own budget"
        );
    }

    #[test]
    fn zero_turns_the_rate_limit_off() {
        let throttle = Throttle::new(0, 0, 1);
        for _ in 0..1000 {
            assert_eq!(throttle.admit(&id("a")), Ok(()));
        }
    }

    #[test]
    fn stream_slots_are_counted_per_principal_and_freed_on_drop() {
        let throttle = Throttle::new(0, 0, 2);
        let first = throttle.open_stream(&id("a")).unwrap();
        let _second = throttle.open_stream(&id("a")).unwrap();
        assert!(throttle.open_stream(&id("a")).is_none());
        assert!(throttle.open_stream(&id("b")).is_some());
        drop(first);
        assert!(throttle.open_stream(&id("a")).is_some());
    }
}
