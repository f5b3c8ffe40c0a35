//! Prometheus metrics, kept in atomics and written by hand in the text exposition format.
//!
//! Event types are counted per catalogue type plus one `other` series for types outside the
//! catalogue, so that clients cannot grow the number of series without bound.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use leviathan_core::{
    Event, GraphSummary, Head, catalogue::KNOWN_EVENT_TYPES, model::AttemptStatus,
};

/// Upper bounds of the ingest latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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
    /// One counter per catalogue type, then `other`.
    events_by_type: Vec<AtomicU64>,
    type_index: HashMap<&'static str, usize>,
    ingests: [AtomicU64; 4],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self {
            events_by_type: (0..=KNOWN_EVENT_TYPES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            type_index: KNOWN_EVENT_TYPES
                .iter()
                .enumerate()
                .map(|(i, t)| (*t, i))
                .collect(),
            ingests: Default::default(),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts appended events by type.
    pub(crate) fn record_appended(&self, events: &[Event]) {
        for event in events {
            let i = self
                .type_index
                .get(event.event_type.as_str())
                .copied()
                .unwrap_or(KNOWN_EVENT_TYPES.len());
            self.events_by_type[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one ingest request.
    pub(crate) fn record_ingest(&self, outcome: IngestOutcome, elapsed: Duration) {
        let index = IngestOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.ingests[index].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The exposition text. `head` is `None` when the store could not be read (the
    /// `leviathan_event_store_up` gauge then reads 0).
    pub(crate) fn render(&self, head: Result<Option<Head>, ()>, summary: &GraphSummary) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut out,
            "leviathan_events_ingested_total",
            "counter",
            "Events appended through this control plane since it started, by event type (`other` for types outside the catalogue).",
        );
        let types = KNOWN_EVENT_TYPES.iter().copied().chain(["other"]);
        for (ty, counter) in types.zip(&self.events_by_type) {
            let _ = writeln!(
                out,
                "leviathan_events_ingested_total{{event_type=\"{ty}\"}} {}",
                load(counter)
            );
        }

        header(
            &mut out,
            "leviathan_ingest_requests_total",
            "counter",
            "Ingest requests by outcome.",
        );
        for (outcome, counter) in IngestOutcome::ALL.iter().zip(&self.ingests) {
            let _ = writeln!(
                out,
                "leviathan_ingest_requests_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                load(counter)
            );
        }

        header(
            &mut out,
            "leviathan_ingest_duration_seconds",
            "histogram",
            "Time to validate and append an ingested bundle.",
        );
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += load(bucket);
            let _ = writeln!(
                out,
                "leviathan_ingest_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(
            out,
            "leviathan_ingest_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "leviathan_ingest_duration_seconds_sum {}",
            load(&self.latency_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "leviathan_ingest_duration_seconds_count {count}");

        header(
            &mut out,
            "leviathan_event_store_up",
            "gauge",
            "1 when the event store answered this scrape.",
        );
        let _ = writeln!(out, "leviathan_event_store_up {}", u8::from(head.is_ok()));
        if let Ok(head) = head {
            header(
                &mut out,
                "leviathan_event_log_head_seq",
                "gauge",
                "Sequence number of the last event in the log (0 when empty).",
            );
            let _ = writeln!(
                out,
                "leviathan_event_log_head_seq {}",
                head.map_or(0, |h| h.seq)
            );
        }

        header(
            &mut out,
            "leviathan_attempts",
            "gauge",
            "Attempts in the graph, by status.",
        );
        for status in AttemptStatus::ALL {
            let n = summary
                .attempts_by_status
                .get(status.as_str())
                .copied()
                .unwrap_or(0);
            let _ = writeln!(out, "leviathan_attempts{{status=\"{status}\"}} {n}");
        }

        header(
            &mut out,
            "leviathan_graph_anomalies",
            "gauge",
            "Logged events the projection could not accept.",
        );
        let _ = writeln!(out, "leviathan_graph_anomalies {}", summary.anomalies);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
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
        assert!(text.contains("leviathan_ingest_duration_seconds_bucket{le=\"10\"} 1\n"));
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
