//! Arbitrary events, valid or not, and valid histories with such events mixed in.

use proptest::{collection::vec, prelude::*, sample::Index};
use serde_json::{Value, json};

use super::{
    history::history,
    payloads::{broken_payload, catalogue_type, valid_payload},
};
use crate::{catalogue::KNOWN_EVENT_TYPES, event::NewEvent, id::EventId, timestamp::Timestamp};

/// Any JSON value: scalars (integers beyond `i64`, floats, unicode strings) nested up to five
/// levels in arrays and objects.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event the catalogue accepts, of any of its types or of an unknown one. Its ids come from
/// small pools, so the projection accepts or refuses it depending on what came before.
pub fn catalogue_event() -> impl Strategy<Value = NewEvent> {
    prop_oneof![
        9 => catalogue_type().prop_flat_map(|ty| (Just(ty), valid_payload(ty)))
            .prop_map(|(ty, payload)| (ty.to_owned(), payload)),
        1 => (unknown_type(), json_object()),
    ]
    .prop_flat_map(|(event_type, payload)| envelope(event_type, payload))
}

/// Any event, valid or not: a catalogue event as [`catalogue_event`] makes them, a payload of a
/// catalogue type broken in a required field, an unknown type with an arbitrary payload, or a
/// malformed envelope (an invalid type or actor, a payload that is not a JSON object, one too
/// deep or holding a NUL character).
pub fn event() -> impl Strategy<Value = NewEvent> {
    prop_oneof![
        4 => catalogue_event(),
        3 => catalogue_type()
            .prop_flat_map(|ty| (Just(ty), broken_payload(ty)))
            .prop_flat_map(|(ty, (payload, _))| envelope(ty.to_owned(), payload)),
        1 => (unknown_type(), json_object())
            .prop_flat_map(|(ty, payload)| envelope(ty, payload)),
        2 => malformed(),
    ]
}

/// A valid history (see [`history`]) with events of `extra` inserted at random places. Event ids
/// are renumbered (`mixed-00000`, …) so that they stay unique in the log.
pub fn mixed_history<S>(extra: S) -> impl Strategy<Value = Vec<NewEvent>>
where
    S: Strategy<Value = NewEvent>,
{
    (history(), vec((any::<Index>(), extra), 0..24)).prop_map(|(mut events, extras)| {
        for (place, event) in extras {
            let at = place.index(events.len() + 1);
            events.insert(at, event);
        }
        for (i, event) in events.iter_mut().enumerate() {
            event.event_id = EventId::new(format!("mixed-{i:05}")).expect("valid event id");
        }
        events
    })
}

/// A dotted type outside the catalogue.
fn unknown_type() -> impl Strategy<Value = String> {
    "[a-z]{1,8}\\.[a-z_]{1,12}".prop_filter("outside the catalogue", |ty| {
        !KNOWN_EVENT_TYPES.contains(&ty.as_str())
    })
}

/// A JSON object with arbitrary members.
fn json_object() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map("[a-z_]{1,10}", json_value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// An event of `event_type` carrying `payload`, with an arbitrary id, time and actor.
fn envelope(event_type: String, payload: Value) -> impl Strategy<Value = NewEvent> {
    (
        "[a-z0-9][a-z0-9-]{0,15}",
        0i64..4_000_000_000,
        proptest::option::of("[a-z]{1,10}(-[a-z0-9]{1,6})?"),
    )
        .prop_map(move |(id, seconds, actor)| NewEvent {
            event_id: EventId::new(id).expect("valid event id"),
            event_type: event_type.clone(),
            timestamp: Timestamp::from_unix_micros(1_700_000_000_000_000 + seconds * 1_000_000)
                .expect("in range"),
            actor_id: actor,
            payload: payload.clone(),
            principal: None,
        })
}

/// Events the catalogue refuses whatever their type: the envelope or the payload's shape is wrong.
fn malformed() -> impl Strategy<Value = NewEvent> {
    let deep = (0..80).fold(json!("bottom"), |inner, _| json!({ "d": inner }));
    prop_oneof![
        (
            prop_oneof![
                Just(String::new()),
                Just("Attempt.Created".to_owned()),
                Just(".leading".to_owned()),
                Just("trailing.".to_owned()),
                "[a-z]{1,4} [a-z]{1,4}",
            ],
            json_object()
        )
            .prop_flat_map(|(ty, payload)| envelope(ty, payload)),
        (
            catalogue_type(),
            prop_oneof![
                json_value().prop_filter("not an object", |v| !v.is_object()),
                Just(json!({ "attempt_id": "nul\u{0}inside" })),
                Just(deep),
            ]
        )
            .prop_flat_map(|(ty, payload)| envelope(ty.to_owned(), payload)),
        (catalogue_type(), json_object())
            .prop_flat_map(|(ty, payload)| envelope(ty.to_owned(), payload))
            .prop_map(|mut event| {
                event.actor_id = Some("control\u{7}character".into());
                event
            }),
    ]
}
