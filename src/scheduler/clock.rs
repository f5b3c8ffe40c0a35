//! Where the scheduler's "now" comes from: the planner's time, event timestamps, backoff and
//! deadlines all read one [`Clock`].

use std::fmt;

use leviathan_core::Timestamp;

/// The scheduler's source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// Wall time that advances with tokio's clock: the wall time at creation plus the
/// [`tokio::time::Instant`] elapsed since. Under a paused tokio clock (tests with
/// `#[tokio::test(start_paused = true)]`) it moves only when tokio's time does, so backoff,
/// cooldowns and deadlines are driven by `tokio::time::advance`.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin_wall: Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting at the current wall time.
    pub fn new() -> Self {
        Self {
            origin_wall: Timestamp::now(),
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.origin_wall.saturating_add(self.origin.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let clock = TokioClock::new();
        let start = clock.now();
        assert_eq!(clock.now(), start, "a paused clock stands still");
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start.saturating_add(Duration::from_secs(90)));
    }
}
