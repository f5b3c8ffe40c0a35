//! The one retry policy: bounded tries, exponential backoff with full jitter, and a server's
//! `Retry-After` honoured over the backoff.
//!
//! It lives in core because the API client, the worker and the Kubernetes executor share only
//! core. The backoff and the retry loop are `backon`'s, which does no I/O of its own: it sleeps
//! on tokio's timer, which core already uses (and tests pause).

use std::{fmt, future::Future, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable, Sleeper, TokioSleeper};

/// The longest `Retry-After` honoured; a server asking for more is waited on this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How to retry: up to `max_attempts` tries in all, sleeping a uniformly random time between
/// zero and `initial × 2^(retry − 1)` (capped at `max`) between them (full jitter), or what the
/// failure's `Retry-After` asks (up to [`MAX_RETRY_AFTER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Backoff cap before the first retry.
    pub initial: Duration,
    /// Largest backoff cap.
    pub max: Duration,
}

/// What a failure says about trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Trying again cannot help.
    Permanent,
    /// Trying again may help, after the policy's backoff.
    Transient,
    /// Trying again may help after this long (a server's `Retry-After`, or zero to try again at
    /// once); the backoff still counts the try.
    RetryAfter(Duration),
}

impl RetryPolicy {
    /// A policy of `max_attempts` tries with caps from `initial` doubling up to `max`.
    pub const fn new(max_attempts: u32, initial: Duration, max: Duration) -> Self {
        Self {
            max_attempts,
            initial,
            max,
        }
    }

    /// Never retry.
    pub const fn none() -> Self {
        Self::new(1, Duration::ZERO, Duration::ZERO)
    }

    /// The upper bound of the sleep before retry number `retry` (1-based).
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The sleeps between the tries, one per retry: full jitter over backon's exponential caps.
    pub fn backoff(&self) -> FullJitter {
        let caps = ExponentialBuilder::default()
            .with_factor(2.0)
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build();
        FullJitter {
            caps,
            rng: fastrand::Rng::new(),
        }
    }

    /// Runs `op` until it succeeds, fails for good (as `verdict` says) or the tries run out;
    /// returns its last result. `what` names the operation in the debug log of each retry.
    pub async fn retry<T, E, Fut, Op, V>(&self, what: &str, op: Op, verdict: V) -> Result<T, E>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        V: Fn(&E) -> Verdict,
        E: fmt::Display,
    {
        run(&mut self.backoff(), what, op, verdict, TokioSleeper).await
    }

    /// [`RetryPolicy::retry`], waiting between tries with `sleep` (a closure from the wait to a
    /// future), e.g. one that ends early when the caller is cancelled so that `op` can notice.
    pub async fn retry_with_sleep<T, E, Fut, Op, V, S>(
        &self,
        what: &str,
        op: Op,
        verdict: V,
        sleep: S,
    ) -> Result<T, E>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        V: Fn(&E) -> Verdict,
        E: fmt::Display,
        S: Sleeper,
    {
        run(&mut self.backoff(), what, op, verdict, sleep).await
    }
}

/// [`RetryPolicy::retry`] with the sleeps of `backoff`, e.g. one that outlives a single call
/// (a stream's reconnections share one until an event arrives).
pub async fn retry_with<T, E, Fut, Op, V>(
    backoff: &mut FullJitter,
    what: &str,
    op: Op,
    verdict: V,
) -> Result<T, E>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    V: Fn(&E) -> Verdict,
    E: fmt::Display,
{
    run(backoff, what, op, verdict, TokioSleeper).await
}

async fn run<T, E, Fut, Op, V, S>(
    backoff: &mut FullJitter,
    what: &str,
    op: Op,
    verdict: V,
    sleep: S,
) -> Result<T, E>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    V: Fn(&E) -> Verdict,
    E: fmt::Display,
    S: Sleeper,
{
    op.retry(backoff)
        .sleep(sleep)
        .when(|error| verdict(error) != Verdict::Permanent)
        .adjust(|error, delay| match verdict(error) {
            Verdict::RetryAfter(wait) => delay.map(|_| wait.min(MAX_RETRY_AFTER)),
            _ => delay,
        })
        .notify(|error, delay| {
            tracing::debug!(
                what,
                %error,
                delay_ms = delay.as_millis() as u64,
                "transient failure; retrying"
            );
        })
        .await
}

/// The sleeps of a [`RetryPolicy`]: each a uniformly random duration up to the exponential cap
/// (AWS's "full jitter"), which spreads clients that failed together better than backon's own
/// jitter (the cap plus up to the cap).
pub struct FullJitter {
    caps: <ExponentialBuilder as BackoffBuilder>::Backoff,
    rng: fastrand::Rng,
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let cap = self.caps.next()?;
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(self.rng.u64(0..=nanos)))
    }
}

impl fmt::Debug for FullJitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FullJitter").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        sync::atomic::{AtomicU32, Ordering},
    };

    use tokio::time::Instant;

    use super::*;

    const POLICY: RetryPolicy =
        RetryPolicy::new(5, Duration::from_millis(100), Duration::from_millis(400));

    #[test]
    fn sleeps_are_full_jitter_under_doubling_caps() {
        assert_eq!(POLICY.backoff_cap(1), Duration::from_millis(100));
        assert_eq!(POLICY.backoff_cap(3), Duration::from_millis(400));
        assert_eq!(POLICY.backoff_cap(60), Duration::from_millis(400));
        let sleeps: Vec<_> = POLICY.backoff().collect();
        assert_eq!(sleeps.len(), 4, "one sleep per retry: {sleeps:?}");
        for (n, sleep) in (1..).zip(&sleeps) {
            assert!(*sleep <= POLICY.backoff_cap(n), "{n}: {sleep:?}");
        }
        let spread: BTreeSet<_> = (0..50).map(|_| POLICY.backoff().nth(2).unwrap()).collect();
        assert!(spread.len() > 1, "jitter varies the sleep");
        assert_eq!(RetryPolicy::none().backoff().count(), 0);
    }

    /// Fails with `errors` in turn, then succeeds; counts the calls.
    async fn run(policy: RetryPolicy, errors: &[Verdict]) -> (Result<u32, String>, u32) {
        let calls = AtomicU32::new(0);
        let result = policy
            .retry(
                "test",
                || async {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    match errors.get(n as usize) {
                        Some(verdict) => Err(format!("{n}:{verdict:?}")),
                        None => Ok(n),
                    }
                },
                |error: &String| {
                    let n: usize = error.split(':').next().unwrap().parse().unwrap();
                    errors[n]
                },
            )
            .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_within_the_caps() {
        let start = Instant::now();
        let (result, calls) = run(POLICY, &[Verdict::Transient; 3]).await;
        assert_eq!((result, calls), (Ok(3), 4));
        // Three sleeps, each at most its cap: 100 + 200 + 400 ms.
        assert!(
            start.elapsed() <= Duration::from_millis(700),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tries_run_out_and_permanent_failures_stop_at_once() {
        let (result, calls) = run(POLICY, &[Verdict::Transient; 9]).await;
        assert_eq!((result, calls), (Err("4:Transient".into()), 5));
        let (result, calls) = run(POLICY, &[Verdict::Transient, Verdict::Permanent]).await;
        assert_eq!((result, calls), (Err("1:Permanent".into()), 2));
        let (result, calls) = run(RetryPolicy::none(), &[Verdict::Transient]).await;
        assert_eq!((result, calls), (Err("0:Transient".into()), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_over_the_backoff_up_to_the_limit() {
        let start = Instant::now();
        let wait = Verdict::RetryAfter(Duration::from_secs(7));
        assert_eq!(run(POLICY, &[wait]).await, (Ok(1), 2));
        assert_eq!(start.elapsed(), Duration::from_secs(7));

        let start = Instant::now();
        let day = Verdict::RetryAfter(Duration::from_secs(86_400));
        assert_eq!(run(POLICY, &[day]).await, (Ok(1), 2));
        assert_eq!(start.elapsed(), MAX_RETRY_AFTER);
    }
}
