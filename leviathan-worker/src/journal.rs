//! What the attempt records: events with deterministic ids (`<attempt_id>-<n>`), artifacts
//! (content-addressed, each announced by `artifact.created`) and the worker log, all redacted
//! before they exist.

use std::{collections::BTreeSet, io::Write as _};

use bytes::Bytes;
use leviathan_core::{
    AttemptId, EventId, NewEvent, Sha256Digest, Timestamp,
    catalogue::{ArtifactCreated, Payload},
};

use leviathan_core::redact::Redactor;

/// An artifact the attempt produced, uploaded before the bundle that references it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// Content address.
    pub sha256: Sha256Digest,
    /// `model_prompt`, `model_output`, `test_output`, `diff`, `log`.
    pub kind: String,
    /// Human name, e.g. `prompt-r0-c1.txt`.
    pub name: String,
    /// The (redacted) content.
    pub content: Bytes,
}

impl Artifact {
    /// Where the control plane serves it.
    pub fn uri(&self) -> String {
        format!("/v1/artifacts/{}", self.sha256)
    }
}

/// The attempt's record.
#[derive(Debug)]
pub(crate) struct Journal {
    attempt_id: AttemptId,
    actor: String,
    redactor: Redactor,
    counter: u32,
    events: Vec<NewEvent>,
    artifacts: Vec<Artifact>,
    stored: BTreeSet<Sha256Digest>,
    log: String,
    echo: bool,
}

impl Journal {
    /// An empty journal for `attempt_id`; `echo` copies log lines to stderr.
    pub(crate) fn new(attempt_id: &AttemptId, redactor: Redactor, echo: bool) -> Self {
        Self {
            attempt_id: attempt_id.clone(),
            actor: format!("worker-{attempt_id}"),
            redactor,
            counter: 0,
            events: Vec::new(),
            artifacts: Vec::new(),
            stored: BTreeSet::new(),
            log: String::new(),
            echo,
        }
    }

    /// The redactor every output goes through.
    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Records an event (payload strings redacted) and returns it.
    pub(crate) fn event<P: Payload>(&mut self, payload: &P) -> NewEvent {
        self.counter += 1;
        let mut value = payload.to_value();
        self.redactor.redact_json(&mut value);
        let event = NewEvent {
            event_id: event_id(&self.attempt_id, self.counter),
            event_type: P::EVENT_TYPE.to_owned(),
            timestamp: Timestamp::now(),
            actor_id: Some(self.actor.clone()),
            payload: value,
            principal: None,
        };
        self.events.push(event.clone());
        event
    }

    /// Stores `content` (redacted) as an artifact, records `artifact.created` the first time
    /// this content is seen, and returns its digest.
    pub(crate) fn artifact(&mut self, kind: &str, name: &str, content: &str) -> Sha256Digest {
        let content = Bytes::from(self.redactor.redact(content).into_bytes());
        let sha256 = Sha256Digest::of(&content);
        if self.stored.insert(sha256) {
            let artifact = Artifact {
                sha256,
                kind: kind.to_owned(),
                name: name.to_owned(),
                content,
            };
            let created = ArtifactCreated {
                sha256,
                kind: kind.to_owned(),
                size: artifact.content.len() as u64,
                name: Some(name.to_owned()),
                uri: Some(artifact.uri()),
                attempt_id: Some(self.attempt_id.clone()),
            };
            self.artifacts.push(artifact);
            self.event(&created);
        }
        sha256
    }

    /// Appends a timestamped, redacted line to the log (and to stderr when echoing).
    pub(crate) fn log(&mut self, line: impl AsRef<str>) {
        let line = format!(
            "{} {}\n",
            Timestamp::now(),
            self.redactor.redact(line.as_ref())
        );
        if self.echo {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        self.log.push_str(&line);
    }

    /// The log so far.
    pub(crate) fn log_text(&self) -> &str {
        &self.log
    }

    /// The events so far.
    pub(crate) fn events(&self) -> &[NewEvent] {
        &self.events
    }

    /// The artifacts so far.
    pub(crate) fn artifacts(&self) -> &[Artifact] {
        &self.artifacts
    }

    /// Everything recorded: events, artifacts and the log.
    pub(crate) fn into_parts(self) -> (Vec<NewEvent>, Vec<Artifact>, String) {
        (self.events, self.artifacts, self.log)
    }
}

/// `<attempt_id>-<n>`: deterministic, so a retried bundle carries the same ids.
fn event_id(attempt_id: &AttemptId, n: u32) -> EventId {
    // An attempt id is 1 to 128 bytes of `[A-Za-z0-9._-]`; with `-` and at most 10 digits it
    // stays a valid event id (no whitespace, at most 256 bytes), so this cannot fail.
    #[allow(clippy::expect_used)]
    EventId::new(format!("{attempt_id}-{n:04}")).expect("attempt ids make valid event ids")
}

#[cfg(test)]
mod tests {
    use leviathan_core::catalogue::AttemptStarted;

    use super::*;

    #[test]
    fn longest_attempt_ids_make_valid_event_ids() {
        let attempt = AttemptId::new("a".repeat(128)).unwrap();
        assert!(
            event_id(&attempt, u32::MAX)
                .as_str()
                .ends_with("-4294967295")
        );
    }

    #[test]
    fn deterministic_ids_redaction_and_dedup() {
        let attempt = AttemptId::new("attempt-7").unwrap();
        let mut j = Journal::new(&attempt, Redactor::new(["tok3n"]), false);
        let e = j.event(&AttemptStarted {
            attempt_id: attempt.clone(),
            task_id: None,
            target_id: None,
            worker: Some("host tok3n".into()),
            sandbox: None,
        });
        assert_eq!(e.event_id, "attempt-7-0001");
        assert_eq!(e.actor_id.as_deref(), Some("worker-attempt-7"));
        assert_eq!(e.payload["worker"], "host [REDACTED]");

        let a = j.artifact("log", "a.txt", "secret tok3n here");
        let b = j.artifact("log", "b.txt", "secret tok3n here");
        assert_eq!(a, b);
        assert_eq!(j.artifacts().len(), 1);
        assert_eq!(j.artifacts()[0].content, "secret [REDACTED] here");
        assert_eq!(a, Sha256Digest::of(b"secret [REDACTED] here"));
        let types: Vec<_> = j.events().iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["attempt.started", "artifact.created"]);
        assert_eq!(j.events()[1].event_id, "attempt-7-0002");

        j.log("cloned with tok3n");
        assert!(j.log_text().ends_with(" cloned with [REDACTED]\n"));
    }
}
