//! Event envelopes: what clients submit, what the log stores, and the hash that links them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    auth::principal::Principal, canonical, digest::Sha256Digest, id::EventId, timestamp::Timestamp,
};

/// An event as a client submits it. The store assigns `seq`, `prev_hash` and `hash`; hashes a
/// client sends are ignored (unknown fields are skipped when deserializing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Client-chosen id; appending the same event twice is idempotent.
    pub event_id: EventId,
    /// Dotted type such as `attempt.created`; unknown types are kept verbatim.
    pub event_type: String,
    /// When the fact happened, according to its producer. Order is `seq`, never this.
    pub timestamp: Timestamp,
    /// Who produced the event (`scheduler`, `worker-<attempt_id>`, `operator`…).
    #[serde(default)]
    pub actor_id: Option<String>,
    /// The fact itself, a JSON object, kept exactly as submitted.
    pub payload: Value,
    /// Who wrote it, as the server authenticated the request: set by the control plane on
    /// every event it appends (whatever a client sent here), `None` for writes that went to a
    /// store directly. Part of the hashed bytes only when present, so older events keep their
    /// hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
}

impl NewEvent {
    /// True when `event` records this same fact (same id, type, actor, timestamp and payload).
    /// The principal is not compared: the same fact sent again by another token (a worker
    /// retrying after a key rotation) is a duplicate, recorded with its first writer.
    pub fn same_content(&self, event: &Event) -> bool {
        self.event_id == event.event_id
            && self.event_type == event.event_type
            && self.timestamp == event.timestamp
            && self.actor_id == event.actor_id
            && self.payload == event.payload
    }
}

/// The SHA-256 of a batch of events as JSON: the same batch always gives the same digest, so
/// a client can name a bundle by its content.
pub fn batch_digest(events: &[NewEvent]) -> Sha256Digest {
    let mut hasher = crate::digest::Sha256Hasher::new();
    for event in events {
        // Serialising an event (string keys, JSON values) cannot fail.
        if let Ok(bytes) = serde_json::to_vec(event) {
            hasher.update(&bytes);
        }
    }
    hasher.finish()
}

/// An event in the log: a submitted event plus its place in the hash chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log, gap-free from 1.
    pub seq: u64,
    /// Client-chosen id, unique in the log.
    pub event_id: EventId,
    /// Dotted type.
    pub event_type: String,
    /// Producer's timestamp.
    pub timestamp: Timestamp,
    /// Producer.
    pub actor_id: Option<String>,
    /// The payload exactly as submitted.
    pub payload: Value,
    /// Who wrote it, as the server authenticated the request (see [`NewEvent::principal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    /// Hash of the previous event; `None` only for `seq` 1.
    pub prev_hash: Option<Sha256Digest>,
    /// SHA-256 of this event's canonical bytes.
    pub hash: Sha256Digest,
}

impl Event {
    /// Places `new` in the chain after `prev_hash` at `seq`, computing its hash.
    pub fn seal(new: NewEvent, seq: u64, prev_hash: Option<Sha256Digest>) -> Self {
        Self::seal_canonical(new, seq, prev_hash).0
    }

    /// [`Event::seal`], also returning the canonical bytes it hashed (what durable backends
    /// store), so that a writer encodes each event once.
    pub fn seal_canonical(
        new: NewEvent,
        seq: u64,
        prev_hash: Option<Sha256Digest>,
    ) -> (Self, Vec<u8>) {
        let mut buf = Vec::with_capacity(256);
        write_canonical(
            &mut buf,
            seq,
            &new.event_id,
            &new.event_type,
            &new.timestamp,
            new.actor_id.as_deref(),
            &new.payload,
            new.principal.as_ref(),
            prev_hash.as_ref(),
        );
        let hash = Sha256Digest::of(&buf);
        let event = Self {
            seq,
            event_id: new.event_id,
            event_type: new.event_type,
            timestamp: new.timestamp,
            actor_id: new.actor_id,
            payload: new.payload,
            principal: new.principal,
            prev_hash,
            hash,
        };
        (event, buf)
    }

    /// Appends this event's canonical bytes (everything but `hash`) to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        write_canonical(
            out,
            self.seq,
            &self.event_id,
            &self.event_type,
            &self.timestamp,
            self.actor_id.as_deref(),
            &self.payload,
            self.principal.as_ref(),
            self.prev_hash.as_ref(),
        );
    }

    /// This event's canonical bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_canonical(&mut out);
        out
    }

    /// Recomputes the hash from the fields (not the stored `hash`).
    pub fn compute_hash(&self) -> Sha256Digest {
        Sha256Digest::of(&self.canonical_bytes())
    }

    /// The log position this event establishes.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash,
        }
    }

    /// Decodes an event from its canonical bytes and its stored hash (how durable backends keep
    /// events). The bytes are trusted to be canonical; [`crate::chain`] is what checks them.
    pub fn from_canonical(bytes: &[u8], hash: Sha256Digest) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Canonical {
            seq: u64,
            event_id: EventId,
            event_type: String,
            timestamp: Timestamp,
            actor_id: Option<String>,
            payload: Value,
            #[serde(default)]
            principal: Option<Principal>,
            prev_hash: Option<Sha256Digest>,
        }
        let c: Canonical = serde_json::from_slice(bytes)?;
        Ok(Self {
            seq: c.seq,
            event_id: c.event_id,
            event_type: c.event_type,
            timestamp: c.timestamp,
            actor_id: c.actor_id,
            payload: c.payload,
            principal: c.principal,
            prev_hash: c.prev_hash,
            hash,
        })
    }

    /// The submitted part of the event.
    pub fn to_new_event(&self) -> NewEvent {
        NewEvent {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            timestamp: self.timestamp,
            actor_id: self.actor_id.clone(),
            payload: self.payload.clone(),
            principal: self.principal.clone(),
        }
    }
}

/// The last event of the log: its `seq` and `hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Sequence number of the last event.
    pub seq: u64,
    /// Its hash, which the next event links to.
    pub hash: Sha256Digest,
}

/// Writes `{actor_id, event_id, event_type, payload, prev_hash, principal?, seq, timestamp}`
/// canonically (`principal` only when there is one). The keys are already in sorted order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_canonical(
    out: &mut Vec<u8>,
    seq: u64,
    event_id: &EventId,
    event_type: &str,
    timestamp: &Timestamp,
    actor_id: Option<&str>,
    payload: &Value,
    principal: Option<&Principal>,
    prev_hash: Option<&Sha256Digest>,
) {
    out.extend_from_slice(b"{\"actor_id\":");
    match actor_id {
        Some(actor) => canonical::write_str(out, actor),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"event_id\":");
    canonical::write_str(out, event_id.as_str());
    out.extend_from_slice(b",\"event_type\":");
    canonical::write_str(out, event_type);
    out.extend_from_slice(b",\"payload\":");
    canonical::write_value(out, payload);
    out.extend_from_slice(b",\"prev_hash\":");
    match prev_hash {
        Some(hash) => {
            out.push(b'"');
            let start = out.len();
            out.resize(start + 64, 0);
            // Writing 32 bytes as 64 hex characters into a 64-byte slice cannot fail.
            let _ = hex::encode_to_slice(hash.as_bytes(), &mut out[start..]);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    if let Some(principal) = principal {
        out.extend_from_slice(b",\"principal\":");
        // A principal is strings in a plain struct: it always converts.
        canonical::write_value(out, &serde_json::to_value(principal).unwrap_or_default());
    }
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"timestamp\":\"");
    timestamp.write_canonical(out);
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_events() -> (Event, Event) {
        let e1 = NewEvent {
            event_id: EventId::new("evt-0001").unwrap(),
            event_type: "task.created".into(),
            timestamp: Timestamp::parse("2026-01-28T12:00:00.123456Z").unwrap(),
            actor_id: Some("scheduler".into()),
            payload: serde_json::from_str(
                r#"{"task_id":"docs-guide","target_id":"demo","title":"Write the guide — café","scope":"docs","priority":"high","allowed_paths":["docs/GUIDE.md"],"acceptance_criteria":["Explains setup"],"ready":true,"dependencies":[]}"#,
            )
            .unwrap(),
            principal: None,
        };
        let e1 = Event::seal(e1, 1, None);
        let e2 = NewEvent {
            event_id: EventId::new("evt-0002").unwrap(),
            event_type: "attempt.created".into(),
            timestamp: Timestamp::parse("2026-01-28T12:00:01Z").unwrap(),
            actor_id: None,
            payload: serde_json::from_str(
                r#"{"attempt_id":"attempt-1a2b3c4d","task_id":"docs-guide","target_id":"demo","attempt_number":1,"big":12345678901234567890,"nested":{"z":[1,{"b":2,"a":"\u0001"}],"a":null}}"#,
            )
            .unwrap(),
            principal: None,
        };
        let e2 = Event::seal(e2, 2, Some(e1.hash));
        (e1, e2)
    }

    #[test]
    fn hash_vectors() {
        let (e1, e2) = vector_events();
        assert_eq!(
            e1.hash.to_hex(),
            "cac858e5fc892862ed7f701de9280b91be4753546d797bc310b868afde48779c"
        );
        assert_eq!(
            e2.hash.to_hex(),
            "63d7ccfab7e80712d7d51f43a7a5e4645bf762b673494ec38b62e16ec049151d"
        );
    }

    #[test]
    fn canonical_bytes_equal_serde_json_of_sorted_value() {
        let (_, e2) = vector_events();
        let value = serde_json::json!({
            "actor_id": e2.actor_id, "event_id": e2.event_id, "event_type": e2.event_type,
            "payload": e2.payload, "prev_hash": e2.prev_hash, "seq": e2.seq, "timestamp": e2.timestamp,
        });
        assert_eq!(e2.canonical_bytes(), serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn canonical_round_trip() {
        let (_, e2) = vector_events();
        let back = Event::from_canonical(&e2.canonical_bytes(), e2.hash).unwrap();
        assert_eq!(back, e2);
        assert_eq!(back.compute_hash(), e2.hash);
    }

    /// A principal enters the hashed bytes (in key order, between `prev_hash` and `seq`) only
    /// when present: the vectors above, without one, keep their hashes.
    #[test]
    fn a_principal_is_hashed_only_when_present() {
        let (e1, e2) = vector_events();
        let mut new = e2.to_new_event();
        new.principal = Some(crate::auth::Principal::worker(
            "tok-1".parse().unwrap(),
            "attempt-1a2b3c4d".parse().unwrap(),
        ));
        let signed = Event::seal(new, 2, Some(e1.hash));
        assert_ne!(signed.hash, e2.hash);
        let value = serde_json::json!({
            "actor_id": signed.actor_id, "event_id": signed.event_id,
            "event_type": signed.event_type, "payload": signed.payload,
            "prev_hash": signed.prev_hash, "principal": signed.principal, "seq": signed.seq,
            "timestamp": signed.timestamp,
        });
        assert_eq!(
            signed.canonical_bytes(),
            serde_json::to_vec(&value).unwrap()
        );
        let back = Event::from_canonical(&signed.canonical_bytes(), signed.hash).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.compute_hash(), signed.hash);
        assert!(
            signed.to_new_event().same_content(&e2),
            "the principal is not content"
        );
    }

    #[test]
    fn client_hashes_are_ignored() {
        let json = r#"{"event_id":"e","event_type":"x.y","timestamp":"2026-01-01T00:00:00Z","payload":{},"prev_hash":"zz","hash":"zz","seq":9}"#;
        let new: NewEvent = serde_json::from_str(json).unwrap();
        let sealed = Event::seal(new, 1, None);
        assert_eq!(sealed.seq, 1);
        assert_eq!(sealed.prev_hash, None);
    }
}
