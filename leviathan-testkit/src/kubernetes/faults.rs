//! Failure injection: the misbehaviour of a real cluster, on demand, so clients are tested
//! against it (failed creates, dropped and expired watches, unschedulable pods, slow starts).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::watch;

use super::{kind::Kind, selector::LabelSelector, status::ApiError};

/// How an injected job-create failure answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFailure {
    /// 409 `AlreadyExists`, as if the name were taken (nothing is stored).
    AlreadyExists,
    /// 500 `InternalError`, as when etcd or a webhook fails.
    InternalError,
    /// 403 `Forbidden`, as when RBAC denies the create.
    Forbidden,
}

#[derive(Debug, Default)]
struct FaultState {
    job_creates: VecDeque<InjectedFailure>,
    expired_watches: usize,
    unschedulable: Vec<LabelSelector>,
    start_delay: Duration,
}

/// The armed faults. Watches observe `cut` and `event_limit` through channels so that open
/// streams react at once.
#[derive(Debug)]
pub(crate) struct Faults {
    state: Mutex<FaultState>,
    cut: watch::Sender<u64>,
    event_limit: watch::Sender<Option<usize>>,
}

impl Faults {
    /// No faults armed.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::default(),
            cut: watch::channel(0).0,
            event_limit: watch::channel(None).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Arms `count` failures for the next job creates.
    pub(crate) fn fail_job_creates(&self, count: usize, failure: InjectedFailure) {
        self.lock()
            .job_creates
            .extend(std::iter::repeat_n(failure, count));
    }

    /// Consumes one armed create failure, as the error to answer with.
    pub(crate) fn take_job_create_failure(&self, name: &str, namespace: &str) -> Option<ApiError> {
        let failure = self.lock().job_creates.pop_front()?;
        Some(match failure {
            InjectedFailure::AlreadyExists => ApiError::already_exists(Kind::Job, name),
            InjectedFailure::InternalError => {
                ApiError::internal("injected failure (leviathan-testkit)")
            }
            InjectedFailure::Forbidden => ApiError::forbidden(Kind::Job, "create", namespace),
        })
    }

    /// Ends every open watch stream.
    pub(crate) fn cut_watches(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// A receiver that changes when watches are cut.
    pub(crate) fn cut_signal(&self) -> watch::Receiver<u64> {
        self.cut.subscribe()
    }

    /// Sets (or clears) the number of events after which a watch stream is ended.
    pub(crate) fn set_watch_event_limit(&self, limit: Option<usize>) {
        self.event_limit.send_replace(limit);
    }

    /// A receiver of the current watch event limit.
    pub(crate) fn event_limit(&self) -> watch::Receiver<Option<usize>> {
        self.event_limit.subscribe()
    }

    /// Arms `count` watches to answer with 410 Gone.
    pub(crate) fn expire_next_watches(&self, count: usize) {
        self.lock().expired_watches += count;
    }

    /// Consumes one armed 410, if any.
    pub(crate) fn take_expired_watch(&self) -> bool {
        let mut state = self.lock();
        let armed = state.expired_watches > 0;
        state.expired_watches = state.expired_watches.saturating_sub(1);
        armed
    }

    /// Pods whose labels match `selector` are never scheduled.
    pub(crate) fn add_unschedulable(&self, selector: LabelSelector) {
        self.lock().unschedulable.push(selector);
    }

    /// Whether a pod with these labels must stay unscheduled.
    pub(crate) fn is_unschedulable(&self, labels: &BTreeMap<String, String>) -> bool {
        self.lock()
            .unschedulable
            .iter()
            .any(|selector| selector.matches(labels))
    }

    /// Sets the extra delay before containers start.
    pub(crate) fn set_start_delay(&self, delay: Duration) {
        self.lock().start_delay = delay;
    }

    /// The extra delay before containers start.
    pub(crate) fn start_delay(&self) -> Duration {
        self.lock().start_delay
    }
}
