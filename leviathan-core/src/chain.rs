//! Hash-chain verification, streaming: one event at a time, constant memory.

use serde::{Deserialize, Serialize};

use crate::{
    digest::Sha256Digest,
    event::{Event, Head},
};

/// What is wrong at the first bad position of a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "fault", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChainFault {
    /// The stored hash is not the hash of the stored content.
    #[error("hash mismatch: stored {stored}, computed {computed}")]
    HashMismatch {
        /// The hash the log holds.
        stored: Sha256Digest,
        /// The hash of the content the log holds.
        computed: Sha256Digest,
    },
    /// `prev_hash` is not the previous event's hash.
    #[error("broken link: prev_hash is {found}, previous event's hash is {expected}")]
    BrokenLink {
        /// The previous event's hash.
        expected: String,
        /// The `prev_hash` found (or `null`).
        found: String,
    },
    /// The sequence number is not the next one.
    #[error("sequence gap: expected seq {expected}, found {found}")]
    SeqGap {
        /// The next sequence number.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The first event must have no `prev_hash`.
    #[error("the first event has a prev_hash ({found})")]
    FirstHasPrevHash {
        /// The `prev_hash` found.
        found: Sha256Digest,
    },
    /// The stored record cannot be decoded.
    #[error("malformed record: {reason}")]
    Malformed {
        /// What could not be decoded.
        reason: String,
    },
}

/// The first bad position of a log and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("chain broken at seq {seq}: {fault}")]
pub struct ChainBreak {
    /// The log position (1-based) of the first event that does not verify.
    pub seq: u64,
    /// Why.
    #[serde(flatten)]
    pub fault: ChainFault,
}

/// What a successful verification covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Number of events verified.
    pub events: u64,
    /// Number of canonical bytes hashed.
    pub bytes: u64,
    /// The verified head; `None` for an empty log.
    pub head: Option<Head>,
}

/// Verifies a log one event at a time, in `seq` order, from the first event.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    report: ChainReport,
    buf: Vec<u8>,
}

impl ChainVerifier {
    /// A verifier expecting `seq` 1 next.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next position to verify.
    pub fn next_seq(&self) -> u64 {
        self.report.events + 1
    }

    /// Verifies the next event from its fields, re-deriving its canonical bytes.
    pub fn push(&mut self, event: &Event) -> Result<(), ChainBreak> {
        self.buf.clear();
        event.write_canonical(&mut self.buf);
        let computed = Sha256Digest::of(&self.buf);
        let len = self.buf.len() as u64;
        self.check(event.hash, computed, event.seq, event.prev_hash, len)
    }

    /// Verifies the next event from its stored canonical bytes and stored hash, the fast path for
    /// backends that keep canonical bytes: it hashes the bytes and reads `prev_hash` and `seq`
    /// from their fixed-shape tail, without parsing the payload.
    pub fn push_record(
        &mut self,
        stored_hash: Sha256Digest,
        canonical: &[u8],
    ) -> Result<(), ChainBreak> {
        let computed = Sha256Digest::of(canonical);
        if computed != stored_hash {
            return Err(self.fault(ChainFault::HashMismatch {
                stored: stored_hash,
                computed,
            }));
        }
        let (prev_hash, seq) =
            parse_tail(canonical).map_err(|reason| self.fault(ChainFault::Malformed { reason }))?;
        self.check(
            stored_hash,
            computed,
            seq,
            prev_hash,
            canonical.len() as u64,
        )
    }

    /// The verified head so far.
    pub fn head(&self) -> Option<Head> {
        self.report.head
    }

    /// Ends verification.
    pub fn finish(self) -> ChainReport {
        self.report
    }

    fn fault(&self, fault: ChainFault) -> ChainBreak {
        ChainBreak {
            seq: self.next_seq(),
            fault,
        }
    }

    fn check(
        &mut self,
        stored: Sha256Digest,
        computed: Sha256Digest,
        seq: u64,
        prev_hash: Option<Sha256Digest>,
        len: u64,
    ) -> Result<(), ChainBreak> {
        if stored != computed {
            return Err(self.fault(ChainFault::HashMismatch { stored, computed }));
        }
        let expected = self.next_seq();
        if seq != expected {
            return Err(self.fault(ChainFault::SeqGap {
                expected,
                found: seq,
            }));
        }
        match (self.report.head, prev_hash) {
            (None, Some(found)) => return Err(self.fault(ChainFault::FirstHasPrevHash { found })),
            (Some(head), found) if found != Some(head.hash) => {
                return Err(self.fault(ChainFault::BrokenLink {
                    expected: head.hash.to_hex(),
                    found: found.map_or_else(|| "null".to_owned(), |h| h.to_hex()),
                }));
            }
            _ => {}
        }
        self.report.events += 1;
        self.report.bytes += len;
        self.report.head = Some(Head { seq, hash: stored });
        Ok(())
    }
}

/// Verifies a whole sequence of events from the first.
pub fn verify<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<ChainReport, ChainBreak> {
    let mut verifier = ChainVerifier::new();
    for event in events {
        verifier.push(event)?;
    }
    Ok(verifier.finish())
}

/// Reads `prev_hash` and `seq` from the tail of canonical bytes, which always ends with
/// `,"prev_hash":<null|"hex">[,"principal":{…}],"seq":<n>,"timestamp":"<27 bytes>"}` because
/// keys are sorted. A principal is a flat object (ids and a role, no braces), so it is the
/// member after the last `,"principal":{`; the hash check already covers its content.
fn parse_tail(bytes: &[u8]) -> Result<(Option<Sha256Digest>, u64), String> {
    const TS: &[u8] = b",\"timestamp\":\"";
    // `"` + 27-byte timestamp + `"}` at the end.
    let ts_start = bytes
        .len()
        .checked_sub(27 + 2 + TS.len())
        .ok_or("record too short")?;
    if &bytes[ts_start..ts_start + TS.len()] != TS || !bytes.ends_with(b"\"}") {
        return Err("timestamp is not the last member".into());
    }
    let before_ts = &bytes[..ts_start];
    let seq_key = b",\"seq\":";
    let seq_at = rfind(before_ts, seq_key).ok_or("no seq member")?;
    let seq_text =
        std::str::from_utf8(&before_ts[seq_at + seq_key.len()..]).map_err(|_| "seq is not text")?;
    let seq: u64 = seq_text
        .parse()
        .map_err(|_| format!("seq `{seq_text}` is not a number"))?;
    let mut before_seq = &before_ts[..seq_at];
    if before_seq.ends_with(b"}") {
        let principal_at = rfind(before_seq, b",\"principal\":{")
            .ok_or("a member before seq is not a principal")?;
        before_seq = &before_seq[..principal_at];
    }
    let prev_key = b",\"prev_hash\":";
    if before_seq.ends_with(b",\"prev_hash\":null") {
        return Ok((None, seq));
    }
    if before_seq.len() < prev_key.len() + 66 {
        return Err("no prev_hash member".into());
    }
    let (head, quoted) = before_seq.split_at(before_seq.len() - 66);
    if !head.ends_with(prev_key) || quoted[0] != b'"' || quoted[65] != b'"' {
        return Err("prev_hash is malformed".into());
    }
    let hex = std::str::from_utf8(&quoted[1..65]).map_err(|_| "prev_hash is not text")?;
    let prev = Sha256Digest::parse_hex(hex).map_err(|e| e.to_string())?;
    Ok((Some(prev), seq))
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::NewEvent, id::EventId, timestamp::Timestamp};

    fn chain(n: u64) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for seq in 1..=n {
            let new = NewEvent {
                event_id: EventId::new(format!("e{seq}")).unwrap(),
                event_type: "note.added".into(),
                timestamp: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
                actor_id: None,
                payload: serde_json::json!({"n": seq, "text": "a,\"seq\":1,\"principal\":{}"}),
                // Every other event carries a principal: the record path reads both shapes.
                principal: (seq % 2 == 0).then(|| {
                    crate::auth::Principal::new(
                        format!("tok-{seq}").parse().unwrap(),
                        crate::auth::Role::Scheduler,
                    )
                }),
            };
            let prev = out.last().map(|e| e.hash);
            out.push(Event::seal(new, seq, prev));
        }
        out
    }

    #[test]
    fn valid_chain_verifies_by_fields_and_by_records() {
        let events = chain(100);
        let report = verify(&events).unwrap();
        assert_eq!(report.events, 100);
        assert_eq!(report.head, Some(events[99].head()));
        let mut v = ChainVerifier::new();
        for e in &events {
            v.push_record(e.hash, &e.canonical_bytes()).unwrap();
        }
        assert_eq!(v.finish(), report);
        assert_eq!(verify(&[]).unwrap(), ChainReport::default());
    }

    #[test]
    fn tampered_payload_is_a_hash_mismatch_at_its_seq() {
        let mut events = chain(10);
        events[6].payload["n"] = serde_json::json!(999);
        let err = verify(&events).unwrap_err();
        assert_eq!(err.seq, 7);
        assert!(matches!(err.fault, ChainFault::HashMismatch { .. }));
    }

    #[test]
    fn gaps_links_and_first_prev_hash() {
        let events = chain(5);
        let mut gap = events.clone();
        gap.remove(2);
        let err = verify(&gap).unwrap_err();
        assert_eq!(
            (err.seq, err.fault.clone()),
            (
                3,
                ChainFault::SeqGap {
                    expected: 3,
                    found: 4
                }
            )
        );

        let mut first = chain(1);
        let new = first[0].to_new_event();
        first[0] = Event::seal(new, 1, Some(Sha256Digest::of(b"x")));
        assert!(matches!(
            verify(&first).unwrap_err().fault,
            ChainFault::FirstHasPrevHash { .. }
        ));

        let mut relinked = events.clone();
        let new = relinked[3].to_new_event();
        relinked[3] = Event::seal(new, 4, Some(Sha256Digest::of(b"other")));
        let err = verify(&relinked).unwrap_err();
        assert_eq!(err.seq, 4);
        assert!(matches!(err.fault, ChainFault::BrokenLink { .. }));
    }

    #[test]
    fn reports_and_breaks_round_trip_through_json() {
        let events = chain(3);
        let report = verify(&events).unwrap();
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<ChainReport>(&json).unwrap(), report);
        let mut tampered = events.clone();
        tampered[1].payload["n"] = serde_json::json!(7);
        let broken = verify(&tampered).unwrap_err();
        let value = serde_json::to_value(&broken).unwrap();
        assert_eq!(value["seq"], 2);
        assert_eq!(value["fault"], "hash_mismatch");
        assert_eq!(serde_json::from_value::<ChainBreak>(value).unwrap(), broken);
    }

    #[test]
    fn every_single_byte_tamper_of_a_record_fails_at_its_seq() {
        let events = chain(3);
        let target = &events[1];
        let bytes = target.canonical_bytes();
        for i in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            let mut v = ChainVerifier::new();
            v.push_record(events[0].hash, &events[0].canonical_bytes())
                .unwrap();
            let err = v.push_record(target.hash, &tampered).unwrap_err();
            assert_eq!(err.seq, 2, "byte {i}");
        }
    }
}
