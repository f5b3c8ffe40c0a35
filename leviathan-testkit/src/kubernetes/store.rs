//! The object store: typed objects per kind, one global resourceVersion, and the change history
//! that watches replay.
//!
//! Every write bumps the global counter, stamps it into `metadata.resourceVersion` and appends a
//! [`Change`] holding the serialized object, so a watch from any retained version replays exactly
//! what a real API server would send, in order.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
};

use k8s_openapi::{
    ListableResource, Metadata, Resource,
    api::{batch::v1::Job, core::v1::Pod, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;

use super::{kind::Kind, status::ApiError};

/// `(namespace, name)`: how objects are addressed.
pub(crate) type Key = (String, String);

/// Watch event types recorded in the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One recorded write, with what selectors need to filter it without re-parsing the object.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) kind: Kind,
    pub(crate) event: EventType,
    /// Selectable view of the object after the write.
    pub(crate) view: ObjectView,
    /// Selectable view before the write (modifications only): a watch whose selector matched the
    /// old object but not the new one sees a DELETED event, and the reverse an ADDED event.
    pub(crate) previous: Option<ObjectView>,
    pub(crate) object: Arc<serde_json::Value>,
}

/// The parts of an object that label and field selectors look at.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ObjectView {
    pub(crate) labels: BTreeMap<String, String>,
    /// Field-selector values by field path (`metadata.name`, `status.phase`, ...).
    pub(crate) fields: BTreeMap<&'static str, String>,
}

/// A kind stored here: a k8s-openapi type with a collection in [`Objects`].
pub(crate) trait StoredObject:
    Resource
    + ListableResource
    + Metadata<Ty = ObjectMeta>
    + Clone
    + Default
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Which kind this is, for history records and messages.
    const KIND_ID: Kind;

    /// The collection of this kind.
    fn collection(objects: &Objects) -> &BTreeMap<Key, Self>;

    /// The collection of this kind, mutably.
    fn collection_mut(objects: &mut Objects) -> &mut BTreeMap<Key, Self>;

    /// Kind-specific selectable fields besides `metadata.name` and `metadata.namespace`.
    fn extra_fields(&self, fields: &mut BTreeMap<&'static str, String>) {
        let _ = fields;
    }

    /// The selectable view of this object.
    fn view(&self) -> ObjectView {
        let meta = self.metadata();
        let mut fields = BTreeMap::new();
        fields.insert("metadata.name", meta.name.clone().unwrap_or_default());
        fields.insert(
            "metadata.namespace",
            meta.namespace.clone().unwrap_or_default(),
        );
        self.extra_fields(&mut fields);
        ObjectView {
            labels: meta.labels.clone().unwrap_or_default(),
            fields,
        }
    }
}

/// All stored objects, by kind.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    jobs: BTreeMap<Key, Job>,
    pods: BTreeMap<Key, Pod>,
    secrets: BTreeMap<Key, Secret>,
}

impl StoredObject for Job {
    const KIND_ID: Kind = Kind::Job;

    fn collection(objects: &Objects) -> &BTreeMap<Key, Self> {
        &objects.jobs
    }

    fn collection_mut(objects: &mut Objects) -> &mut BTreeMap<Key, Self> {
        &mut objects.jobs
    }
}

impl StoredObject for Pod {
    const KIND_ID: Kind = Kind::Pod;

    fn collection(objects: &Objects) -> &BTreeMap<Key, Self> {
        &objects.pods
    }

    fn collection_mut(objects: &mut Objects) -> &mut BTreeMap<Key, Self> {
        &mut objects.pods
    }

    fn extra_fields(&self, fields: &mut BTreeMap<&'static str, String>) {
        let phase = self
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let node = self
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        fields.insert("status.phase", phase);
        fields.insert("spec.nodeName", node);
    }
}

impl StoredObject for Secret {
    const KIND_ID: Kind = Kind::Secret;

    fn collection(objects: &Objects) -> &BTreeMap<Key, Self> {
        &objects.secrets
    }

    fn collection_mut(objects: &mut Objects) -> &mut BTreeMap<Key, Self> {
        &mut objects.secrets
    }

    fn extra_fields(&self, fields: &mut BTreeMap<&'static str, String>) {
        fields.insert("type", self.type_.clone().unwrap_or_default());
    }
}

/// The key of a stored object.
pub(crate) fn key_of(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    objects: Objects,
    history: Vec<Arc<Change>>,
    /// Versions up to and including this one are no longer in `history`.
    compacted_through: u64,
    namespaces: BTreeSet<String>,
}

/// Answer to "what happened after version N".
pub(crate) enum Replay {
    /// The changes after N, oldest first.
    Changes(Vec<Arc<Change>>),
    /// N is older than the retained history (410 Gone).
    Expired { oldest: u64 },
}

/// The store. Writers hold a std mutex briefly and never across an await; watchers learn about
/// new versions through a `watch` channel and then replay the history.
#[derive(Debug)]
pub(crate) struct Store {
    state: Mutex<State>,
    latest: watch::Sender<u64>,
}

impl Store {
    /// An empty store at resourceVersion 1 (a real server never answers with version 0).
    pub(crate) fn new() -> Self {
        let state = State {
            rv: 1,
            ..State::default()
        };
        Self {
            state: Mutex::new(state),
            latest: watch::channel(1).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current global resourceVersion.
    pub(crate) fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// A receiver that changes whenever a write lands.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Reads the objects under the lock.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Objects) -> R) -> R {
        f(&self.lock().objects)
    }

    /// One object by key.
    pub(crate) fn get<K: StoredObject>(&self, key: &Key) -> Option<K> {
        self.read(|objects| K::collection(objects).get(key).cloned())
    }

    /// Objects of a kind, optionally in one namespace, in key order, with the version they were
    /// read at.
    pub(crate) fn list<K: StoredObject>(&self, namespace: Option<&str>) -> (Vec<K>, u64) {
        let state = self.lock();
        let items = K::collection(&state.objects)
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
            .map(|(_, object)| object.clone())
            .collect();
        (items, state.rv)
    }

    /// Every namespace that has been used, plus `default`.
    pub(crate) fn namespaces(&self) -> Vec<String> {
        let state = self.lock();
        let mut all = state.namespaces.clone();
        all.insert("default".to_owned());
        all.into_iter().collect()
    }

    /// Stores a new object; 409 AlreadyExists if the key is taken.
    pub(crate) fn create<K: StoredObject>(&self, mut object: K) -> Result<K, ApiError> {
        let key = key_of(object.metadata());
        let mut guard = self.lock();
        let state = &mut *guard;
        if K::collection(&state.objects).contains_key(&key) {
            return Err(ApiError::already_exists(K::KIND_ID, &key.1));
        }
        state.rv += 1;
        let rv = state.rv;
        object.metadata_mut().resource_version = Some(rv.to_string());
        state.namespaces.insert(key.0.clone());
        K::collection_mut(&mut state.objects).insert(key, object.clone());
        record(state, rv, EventType::Added, &object, None);
        drop(guard);
        self.latest.send_replace(rv);
        Ok(object)
    }

    /// Applies `change` to a stored object. A change that leaves the object as it was is not a
    /// write (no new version, no event), as on a real server. `None` if the object is gone.
    pub(crate) fn update<K: StoredObject>(
        &self,
        key: &Key,
        change: impl FnOnce(&mut K),
    ) -> Option<K> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let current = K::collection_mut(&mut state.objects).get_mut(key)?;
        let before = current.clone();
        change(current);
        if serde_json::to_value(&*current).ok() == serde_json::to_value(&before).ok() {
            return Some(before);
        }
        state.rv += 1;
        let rv = state.rv;
        current.metadata_mut().resource_version = Some(rv.to_string());
        let updated = current.clone();
        record(
            state,
            rv,
            EventType::Modified,
            &updated,
            Some(before.view()),
        );
        drop(guard);
        self.latest.send_replace(rv);
        Some(updated)
    }

    /// Removes an object; the DELETED event carries it at the deletion's version.
    pub(crate) fn remove<K: StoredObject>(&self, key: &Key) -> Option<K> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut object = K::collection_mut(&mut state.objects).remove(key)?;
        state.rv += 1;
        let rv = state.rv;
        object.metadata_mut().resource_version = Some(rv.to_string());
        record(state, rv, EventType::Deleted, &object, None);
        drop(guard);
        self.latest.send_replace(rv);
        Some(object)
    }

    /// The changes after version `after`, or `Expired` if they are no longer retained.
    pub(crate) fn replay(&self, after: u64) -> Replay {
        let state = self.lock();
        if after < state.compacted_through {
            return Replay::Expired {
                oldest: state.compacted_through + 1,
            };
        }
        let start = state.history.partition_point(|change| change.rv <= after);
        Replay::Changes(state.history[start..].to_vec())
    }

    /// Drops the whole history, as etcd compaction does: watches from any older version get 410.
    pub(crate) fn compact(&self) {
        let mut state = self.lock();
        state.compacted_through = state.rv;
        state.history.clear();
    }
}

fn record<K: StoredObject>(
    state: &mut State,
    rv: u64,
    event: EventType,
    object: &K,
    previous: Option<ObjectView>,
) {
    let value = serde_json::to_value(object).unwrap_or(serde_json::Value::Null);
    let change = Arc::new(Change {
        rv,
        kind: K::KIND_ID,
        event,
        view: object.view(),
        previous,
        object: Arc::new(value),
    });
    state.history.push(change);
}
