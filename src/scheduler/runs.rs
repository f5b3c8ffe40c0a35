//! The attempts this process runs (or follows after a restart), so that a cycle knows which
//! live attempts are its own, `--once` can wait for them, and the daemon wakes when one ends.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use leviathan_core::{AttemptId, TargetId, TaskId};
use tokio::sync::{Notify, watch};

/// One attempt in progress in this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) target_id: TargetId,
    pub(crate) task_id: TaskId,
}

/// The attempts in progress, with a count to wait on and a wake-up for the daemon.
#[derive(Debug)]
pub(crate) struct Runs {
    active: Mutex<BTreeMap<AttemptId, Run>>,
    count: watch::Sender<usize>,
    ended: Notify,
}

impl Runs {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            active: Mutex::default(),
            count: watch::Sender::new(0),
            ended: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<AttemptId, Run>> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `attempt`; the guard unregisters it when dropped (also if its task panics).
    /// `None` when it is registered already.
    pub(crate) fn start(self: &Arc<Self>, attempt: &AttemptId, run: Run) -> Option<RunGuard> {
        let mut active = self.lock();
        if active.contains_key(attempt) {
            return None;
        }
        active.insert(attempt.clone(), run);
        self.count.send_replace(active.len());
        Some(RunGuard {
            runs: Arc::clone(self),
            attempt: attempt.clone(),
        })
    }

    /// True when this process runs `attempt`.
    pub(crate) fn contains(&self, attempt: &AttemptId) -> bool {
        self.lock().contains_key(attempt)
    }

    /// The attempts in progress.
    pub(crate) fn snapshot(&self) -> BTreeMap<AttemptId, Run> {
        self.lock().clone()
    }

    /// Waits until no attempt is in progress.
    pub(crate) async fn idle(&self) {
        let mut count = self.count.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// Waits until an attempt ends (at once if one ended since the last call).
    pub(crate) async fn one_ended(&self) {
        self.ended.notified().await;
    }
}

/// Keeps an attempt registered while its task runs.
#[derive(Debug)]
pub(crate) struct RunGuard {
    runs: Arc<Runs>,
    attempt: AttemptId,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut active = self.runs.lock();
        active.remove(&self.attempt);
        self.runs.count.send_replace(active.len());
        drop(active);
        self.runs.ended.notify_one();
    }
}
