//! The scheduler's Prometheus metrics, kept and encoded by `prometheus-client` and served by
//! [`serve_metrics`] (`leviathan schedule --metrics-bind ADDR`).

use std::{future::Future, sync::atomic::AtomicU64};

use axum::{Router, http::header, routing::get};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// The content type of the exposition (what the control plane's `/metrics` serves too).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The scheduler's counters and gauges.
#[derive(Debug)]
pub(crate) struct SchedulerMetrics {
    registry: Registry,
    cycles: Counter,
    dispatches: Counter,
    skips: Family<[(&'static str, &'static str); 1], Counter>,
    running: Gauge<u64, AtomicU64>,
    breaker_open: Family<[(&'static str, String); 1], Gauge>,
}

impl SchedulerMetrics {
    /// Every metric at zero.
    pub(crate) fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            cycles: Counter::default(),
            dispatches: Counter::default(),
            skips: Family::default(),
            running: Gauge::default(),
            breaker_open: Family::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "leviathan_scheduler_cycles",
            "Scheduling cycles completed",
            metrics.cycles.clone(),
        );
        registry.register(
            "leviathan_scheduler_dispatches",
            "Attempts created and handed to the executor",
            metrics.dispatches.clone(),
        );
        registry.register(
            "leviathan_scheduler_skips",
            "Tasks a cycle did not dispatch, by reason (counted every cycle)",
            metrics.skips.clone(),
        );
        registry.register(
            "leviathan_scheduler_attempts_running",
            "Attempts this scheduler runs or follows now",
            metrics.running.clone(),
        );
        registry.register(
            "leviathan_scheduler_breaker_open",
            "1 while a served target's circuit breaker is open, else 0",
            metrics.breaker_open.clone(),
        );
        metrics
    }

    /// Counts one cycle: its dispatches, its skips (by [`SkipReason::kind`]) and the breaker
    /// state of every served target after it.
    ///
    /// [`SkipReason::kind`]: leviathan_core::plan::SkipReason::kind
    pub(crate) fn record_cycle<'a>(
        &self,
        dispatches: usize,
        skips: impl IntoIterator<Item = &'static str>,
        breakers: impl IntoIterator<Item = (&'a str, bool)>,
    ) {
        self.cycles.inc();
        self.dispatches.inc_by(dispatches as u64);
        for kind in skips {
            self.skips.get_or_create(&[("reason", kind)]).inc();
        }
        for (target, open) in breakers {
            let labels = [("target", target.to_owned())];
            self.breaker_open
                .get_or_create(&labels)
                .set(i64::from(open));
        }
    }

    /// The exposition text, with `running` attempts.
    pub(crate) fn render(&self, running: usize) -> String {
        self.running.set(running as u64);
        let mut out = String::with_capacity(2048);
        if let Err(error) = encode(&mut out, &self.registry) {
            tracing::warn!(%error, "metrics: cannot encode the exposition");
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` with the text `render` gives (the scheduler's
/// `Scheduler::metrics`) until `shutdown` completes.
pub async fn serve_metrics<R>(
    listener: tokio::net::TcpListener,
    render: R,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    R: Fn() -> String + Clone + Send + Sync + 'static,
{
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let text = render();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], text) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
