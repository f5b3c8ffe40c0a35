//! `meta.k8s.io/v1` Table rendering: what `kubectl get` asks for (`Accept: ...;as=Table`) and
//! prints, with the columns a real server uses for Jobs, Pods and Secrets.
//!
//! k8s-openapi has no Table type, so the envelope is built as JSON; the row objects are
//! `PartialObjectMetadata` carrying the serialized `ObjectMeta`.

use k8s_openapi::{
    Metadata,
    api::{batch::v1::Job, core::v1::Pod, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Time},
};
use serde_json::{Value, json};

use super::now;

/// A kind that can be printed as Table rows.
pub(crate) trait Tabular: Metadata<Ty = ObjectMeta> {
    /// `(name, type, description)` of each column after NAME.
    fn columns() -> &'static [(&'static str, &'static str, &'static str)];

    /// The cells after NAME.
    fn cells(&self, now: i64) -> Vec<Value>;
}

/// The Table for `items`.
pub(crate) fn render<K: Tabular>(items: &[K], metadata: ListMeta) -> Value {
    let mut columns = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    columns.extend(K::columns().iter().map(|(name, type_, description)| {
        json!({
            "name": name, "type": type_, "format": "", "priority": 0, "description": description,
        })
    }));
    let now = seconds(&now());
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let meta = item.metadata();
            let mut cells = vec![json!(meta.name.clone().unwrap_or_default())];
            cells.extend(item.cells(now));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": meta,
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn seconds(time: &Time) -> i64 {
    time.0.as_second()
}

fn age(meta: &ObjectMeta, now: i64) -> Value {
    json!(
        meta.creation_timestamp
            .as_ref()
            .map(|created| human_duration(now - seconds(created)))
            .unwrap_or_default()
    )
}

/// Kubernetes' `duration.HumanDuration`: short and coarser as it grows.
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let seconds = seconds.max(0);
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    let with_rest = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match () {
        () if seconds < 120 => format!("{seconds}s"),
        () if minutes < 10 => with_rest(minutes, "m", seconds % 60, "s"),
        () if minutes < 180 => format!("{minutes}m"),
        () if hours < 8 => with_rest(hours, "h", minutes % 60, "m"),
        () if hours < 48 => format!("{hours}h"),
        () if hours < 192 => with_rest(days, "d", hours % 24, "h"),
        () if days < 730 => format!("{days}d"),
        () if days < 2920 => with_rest(days / 365, "y", days % 365, "d"),
        () => format!("{}y", days / 365),
    }
}

impl Tabular for Job {
    fn columns() -> &'static [(&'static str, &'static str, &'static str)] {
        &[
            ("Status", "string", "Status of the job."),
            (
                "Completions",
                "string",
                "The desired number of successfully finished pods the job should be run with.",
            ),
            ("Duration", "string", "Time required to complete the job."),
            ("Age", "string", "CreationTimestamp of the object."),
        ]
    }

    fn cells(&self, now: i64) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        let holds = |type_: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == type_ && c.status == "True")
        };
        let state = if self.metadata.deletion_timestamp.is_some() {
            "Terminating"
        } else if holds("Failed") {
            "Failed"
        } else if holds("Complete") {
            "Complete"
        } else if holds("Suspended") {
            "Suspended"
        } else {
            "Running"
        };
        let completions = self
            .spec
            .as_ref()
            .and_then(|spec| spec.completions)
            .unwrap_or(1);
        let duration = status
            .start_time
            .as_ref()
            .map(|start| {
                let end = status.completion_time.as_ref().map_or(now, seconds);
                human_duration(end - seconds(start))
            })
            .unwrap_or_default();
        vec![
            json!(state),
            json!(format!("{}/{completions}", status.succeeded.unwrap_or(0))),
            json!(duration),
            age(&self.metadata, now),
        ]
    }
}

impl Tabular for Pod {
    fn columns() -> &'static [(&'static str, &'static str, &'static str)] {
        &[
            (
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            (
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ),
            (
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted.",
            ),
            ("Age", "string", "CreationTimestamp of the object."),
        ]
    }

    fn cells(&self, now: i64) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        let total = self.spec.as_ref().map_or(0, |spec| spec.containers.len());
        let statuses = status.container_statuses.clone().unwrap_or_default();
        let ready = statuses.iter().filter(|container| container.ready).count();
        let mut reason = status
            .reason
            .clone()
            .or(status.phase.clone())
            .unwrap_or_else(|| "Unknown".to_owned());
        for container in &statuses {
            let state = container.state.clone().unwrap_or_default();
            if let Some(waiting) = state.waiting.and_then(|waiting| waiting.reason) {
                reason = waiting;
            } else if let Some(terminated) = state.terminated {
                reason = terminated
                    .reason
                    .unwrap_or_else(|| format!("ExitCode:{}", terminated.exit_code));
            }
        }
        if self.metadata.deletion_timestamp.is_some() {
            reason = "Terminating".to_owned();
        }
        vec![
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!("0"),
            age(&self.metadata, now),
        ]
    }
}

impl Tabular for Secret {
    fn columns() -> &'static [(&'static str, &'static str, &'static str)] {
        &[
            ("Type", "string", "The type of the secret."),
            ("Data", "string", "The number of entries in the data."),
            ("Age", "string", "CreationTimestamp of the object."),
        ]
    }

    fn cells(&self, now: i64) -> Vec<Value> {
        vec![
            json!(self.type_.clone().unwrap_or_default()),
            json!(self.data.as_ref().map_or(0, |data| data.len()).to_string()),
            age(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn human_duration_matches_kubernetes() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (130, "2m10s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (50 * 3600, "2d2h"),
            (10 * 86_400, "10d"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(seconds), expected, "{seconds}");
        }
    }
}
