//! The daemon loop and its shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use leviathan_core::{
    Expectations,
    catalogue::AttemptFailed,
    model::{FailureClass, FailureKind},
};

use super::{Inner, Recorded, SchedulerError, cycle::Mode};

/// After cancelling, how long the cancelled runs may take to end (for their artifacts).
const CANCELLED_RUNS_WAIT: Duration = Duration::from_secs(60);

impl Inner {
    pub(super) async fn daemon(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), SchedulerError> {
        tokio::pin!(shutdown);
        let mut recovered = false;
        loop {
            if !recovered {
                match self.recover().await {
                    Ok(_) => recovered = true,
                    Err(error) => {
                        tracing::error!("recovery failed: {error}; trying again next cycle");
                    }
                }
            }
            if let Err(error) = self.cycle(Mode::Dispatch).await {
                tracing::error!("cycle failed: {error}; trying again next cycle");
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.options.tick) => {}
                () = self.runs.one_ended() => {}
            }
        }
        self.shut_down().await
    }

    /// Lets running attempts finish within the grace period, then cancels the rest, recording
    /// them as cancelled and transient (they are retried later).
    async fn shut_down(&self) -> Result<(), SchedulerError> {
        let running = self.runs.snapshot();
        if running.is_empty() {
            tracing::info!("stopped: no attempt running");
            return Ok(());
        }
        tracing::info!(
            "stopping: no more dispatch; {} running attempt(s) may finish within {} s",
            running.len(),
            self.options.shutdown_grace.as_secs()
        );
        if tokio::time::timeout(self.options.shutdown_grace, self.runs.idle())
            .await
            .is_ok()
        {
            tracing::info!("stopped: every running attempt finished");
            return Ok(());
        }
        let mut failure = None;
        for (attempt_id, run) in self.runs.snapshot() {
            let label = format!("{}/{} attempt={attempt_id}", run.target_id, run.task_id);
            // Recorded first, so that the run's own recording finds the attempt ended.
            let summary = format!(
                "the scheduler shut down and cancelled the attempt after a grace period of {} s",
                self.options.shutdown_grace.as_secs()
            );
            let event = self.event(&AttemptFailed {
                attempt_id: attempt_id.clone(),
                failure_kind: FailureKind::Cancelled,
                failure_class: Some(FailureClass::Transient),
                error_summary: summary,
            });
            match self.record(vec![event], Expectations::Derived).await {
                Ok(Recorded::Appended) => tracing::info!("cancel {label}: shutdown grace over"),
                Ok(Recorded::Refused(reason)) => {
                    tracing::info!("cancel {label}: it ended meanwhile ({reason})");
                }
                Err(error) => {
                    tracing::error!("cannot record the cancellation of {label}: {error}");
                    failure.get_or_insert(error);
                }
            }
            if let Err(error) = self.executor.cancel(&attempt_id).await {
                tracing::warn!("cannot cancel {label} on the executor: {error}");
            }
        }
        if tokio::time::timeout(CANCELLED_RUNS_WAIT, self.runs.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} cancelled attempt(s) did not end within {} s",
                self.runs.snapshot().len(),
                CANCELLED_RUNS_WAIT.as_secs()
            );
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
