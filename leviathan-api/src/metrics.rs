//! Prometheus metrics, kept and encoded by `prometheus-client`.
//!
//! Event types are counted per catalogue type plus one `other` series for types outside the
//! catalogue, so that clients cannot grow the number of series without bound.

use std::time::Duration;

use leviathan_core::{
    Event, GraphSummary, Head, catalogue::KNOWN_EVENT_TYPES, model::AttemptStatus,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Upper bounds of the ingest latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One label: its name and value.
type Label = [(&'static str, &'static str); 1];

/// The labels of the gateway's spend: target and model (`other` for models the price table
/// does not name, so that callers cannot grow the series without bound).
type SpendLabels = [(&'static str, String); 2];

/// A counter of dollars.
type UsdCounter = Counter<f64, std::sync::atomic::AtomicU64>;

/// How an ingest request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IngestOutcome {
    /// Something was appended (or the bundle was empty).
    Ok,
    /// Every event was already in the log.
    Duplicate,
    /// The bundle was refused (4xx).
    Rejected,
    /// The server failed (5xx).
    Failed,
}

impl IngestOutcome {
    const ALL: [Self; 4] = [Self::Ok, Self::Duplicate, Self::Rejected, Self::Failed];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }
}

/// The control plane's counters.
#[derive(Debug)]
pub struct Metrics {
    /// One series per catalogue type, then `other`.
    events_by_type: Family<Label, Counter>,
    ingests: Family<Label, Counter>,
    latency: Histogram,
    model_calls: Family<SpendLabels, Counter>,
    model_tokens_in: Family<SpendLabels, Counter>,
    model_tokens_out: Family<SpendLabels, Counter>,
    model_cost: Family<SpendLabels, UsdCounter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All counters at zero, every series present.
    pub fn new() -> Self {
        let metrics = Self {
            events_by_type: Family::default(),
            ingests: Family::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            model_calls: Family::default(),
            model_tokens_in: Family::default(),
            model_tokens_out: Family::default(),
            model_cost: Family::default(),
        };
        // Every series exists from the start, at zero.
        for ty in KNOWN_EVENT_TYPES.iter().copied().chain(["other"]) {
            metrics
                .events_by_type
                .get_or_create(&[("event_type", ty)])
                .inc_by(0);
        }
        for outcome in IngestOutcome::ALL {
            metrics
                .ingests
                .get_or_create(&[("outcome", outcome.label())])
                .inc_by(0);
        }
        metrics
    }

    /// Counts appended events by type.
    pub(crate) fn record_appended(&self, events: &[Event]) {
        for event in events {
            let ty = KNOWN_EVENT_TYPES
                .iter()
                .copied()
                .find(|ty| *ty == event.event_type.as_str())
                .unwrap_or("other");
            self.events_by_type
                .get_or_create(&[("event_type", ty)])
                .inc();
        }
    }

    /// Records one ingest request.
    pub(crate) fn record_ingest(&self, outcome: IngestOutcome, elapsed: Duration) {
        self.ingests
            .get_or_create(&[("outcome", outcome.label())])
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Records one call the model gateway forwarded.
    pub(crate) fn record_model_call(
        &self,
        target: &str,
        model: &str,
        tokens_in: u64,
        tokens_out: u64,
        cost_usd: f64,
    ) {
        let labels = [("target", target.to_owned()), ("model", model.to_owned())];
        self.model_calls.get_or_create(&labels).inc();
        self.model_tokens_in
            .get_or_create(&labels)
            .inc_by(tokens_in);
        self.model_tokens_out
            .get_or_create(&labels)
            .inc_by(tokens_out);
        self.model_cost.get_or_create(&labels).inc_by(cost_usd);
    }

    /// The exposition text. `head` is `None` when the store could not be read (the
    /// `leviathan_event_store_up` gauge then reads 0).
    pub(crate) fn render(&self, head: Result<Option<Head>, ()>, summary: &GraphSummary) -> String {
        let mut registry = Registry::default();
        registry.register(
            "leviathan_events_ingested",
            "Events appended through this control plane since it started, by event type (`other` for types outside the catalogue)",
            self.events_by_type.clone(),
        );
        registry.register(
            "leviathan_ingest_requests",
            "Ingest requests by outcome",
            self.ingests.clone(),
        );
        registry.register(
            "leviathan_ingest_duration_seconds",
            "Time to validate and append an ingested bundle",
            self.latency.clone(),
        );
        registry.register(
            "leviathan_model_calls",
            "Model calls the gateway forwarded and recorded since it started, by target and model",
            self.model_calls.clone(),
        );
        registry.register(
            "leviathan_model_input_tokens",
            "Input tokens of those calls, as the upstream counted them",
            self.model_tokens_in.clone(),
        );
        registry.register(
            "leviathan_model_output_tokens",
            "Output tokens of those calls, as the upstream counted them",
            self.model_tokens_out.clone(),
        );
        registry.register(
            "leviathan_model_cost_usd",
            "Cost of those calls in USD, from the gateway's price table",
            self.model_cost.clone(),
        );
        register_gauge(
            &mut registry,
            "leviathan_event_store_up",
            "1 when the event store answered this scrape",
            i64::from(head.is_ok()),
        );
        if let Ok(head) = head {
            register_gauge(
                &mut registry,
                "leviathan_event_log_head_seq",
                "Sequence number of the last event in the log (0 when empty)",
                head.map_or(0, |h| i64::try_from(h.seq).unwrap_or(i64::MAX)),
            );
        }
        let attempts = Family::<Label, Gauge>::default();
        for status in AttemptStatus::ALL {
            let n = summary.attempts_by_status.get(status.as_str()).copied();
            let n = n.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
            attempts
                .get_or_create(&[("status", status.as_str())])
                .set(n);
        }
        registry.register(
            "leviathan_attempts",
            "Attempts in the graph, by status",
            attempts,
        );
        register_gauge(
            &mut registry,
            "leviathan_graph_anomalies",
            "Logged events the projection could not accept",
            i64::try_from(summary.anomalies).unwrap_or(i64::MAX),
        );
        let mut out = String::with_capacity(4096);
        if let Err(error) = encode(&mut out, &registry) {
            tracing::warn!(%error, "metrics: cannot encode the exposition");
        }
        out
    }
}

/// Registers a gauge reading `value`.
fn register_gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

#[cfg(test)]
mod tests {
    use super::*;
    use leviathan_core::testkit::{lifecycle, seal_all};

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let metrics = Metrics::new();
        let events = seal_all(lifecycle("m", "demo", 2));
        metrics.record_appended(&events);
        metrics.record_ingest(IngestOutcome::Ok, Duration::from_millis(3));
        metrics.record_ingest(IngestOutcome::Rejected, Duration::from_secs(20));
        let mut summary = GraphSummary::default();
        summary.attempts_by_status.insert("failed".into(), 2);
        let head = events.last().map(Event::head);
        let text = metrics.render(Ok(head), &summary);

        let created = events
            .iter()
            .filter(|e| e.event_type == "attempt.created")
            .count();
        assert!(text.contains(&format!(
            "leviathan_events_ingested_total{{event_type=\"attempt.created\"}} {created}"
        )));
        let unknown = events
            .iter()
            .filter(|e| !KNOWN_EVENT_TYPES.contains(&e.event_type.as_str()))
            .count();
        assert!(text.contains(&format!(
            "leviathan_events_ingested_total{{event_type=\"other\"}} {unknown}"
        )));
        assert!(text.contains("leviathan_ingest_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("leviathan_ingest_duration_seconds_bucket{le=\"10.0\"} 1\n"));
        assert!(text.contains("leviathan_ingest_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("leviathan_ingest_duration_seconds_count 2\n"));
        assert!(text.contains("leviathan_ingest_requests_total{outcome=\"rejected\"} 1\n"));
        assert!(text.contains(&format!("leviathan_event_log_head_seq {}\n", events.len())));
        assert!(text.contains("leviathan_attempts{status=\"failed\"} 2\n"));
        assert!(text.contains("leviathan_attempts{status=\"running\"} 0\n"));

        let down = metrics.render(Err(()), &summary);
        assert!(down.contains("leviathan_event_store_up 0\n"));
        assert!(!down.contains("leviathan_event_log_head_seq"));
    }
}
