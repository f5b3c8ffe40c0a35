//! The open-PR latch against the forge: pull requests that left the open state upstream become
//! `pr.merged` / `pr.closed`, and the forge's own count of open agent PRs holds the latch too.

use std::collections::BTreeSet;

use leviathan_core::{
    Expectations, TargetId,
    catalogue::{PrClosed, PrMerged, PrStateChange},
    model::PrState,
};

use super::{AGENT_BRANCH_PREFIX, Inner, Recorded, SchedulerError, Served};

impl Inner {
    /// Reconciles `target_id`'s open pull requests with its forge. `Ok(Ok(n))` is the number of
    /// agent pull requests the forge has open; `Ok(Err(reason))` when the forge cannot be read
    /// (the target fails closed).
    pub(super) async fn reconcile(
        &self,
        target_id: &TargetId,
        served: &Served,
    ) -> Result<Result<u32, String>, SchedulerError> {
        let listed = match served.forge.list_open(AGENT_BRANCH_PREFIX).await {
            Ok(listed) => listed,
            Err(error) => {
                return Ok(Err(format!(
                    "cannot list the forge's open pull requests: {error}"
                )));
            }
        };
        let open: BTreeSet<u64> = listed.iter().map(|pr| pr.number).collect();
        self.ledger.catch_up().await?;
        let gone: Vec<(u64, String)> = self
            .ledger
            .graph()
            .await
            .open_pull_requests(Some(target_id))
            .filter(|pr| !open.contains(&pr.number))
            .map(|pr| (pr.number, pr.url.clone()))
            .collect();
        for (number, url) in gone {
            let state = match served.forge.state(number).await {
                Ok(state) => state,
                Err(error) => {
                    return Ok(Err(format!(
                        "cannot read pull request #{number} on the forge: {error}"
                    )));
                }
            };
            let change = PrStateChange {
                target_id: target_id.clone(),
                pr_number: i64::try_from(number).unwrap_or(i64::MAX),
                pr_url: Some(url),
            };
            let (event, line) = match state {
                PrState::Merged => (
                    self.event(&PrMerged(change)),
                    format!("pr {target_id}#{number} merged upstream"),
                ),
                PrState::Closed => (
                    self.event(&PrClosed(change)),
                    format!("pr {target_id}#{number} closed upstream without merging"),
                ),
                // Open but not listed: its head is not an agent branch; it holds the latch as
                // the graph counts it.
                PrState::Open => continue,
            };
            match self.record(vec![event], Expectations::Derived).await? {
                Recorded::Appended => tracing::info!("{line}"),
                Recorded::Refused(reason) => {
                    tracing::info!("not recorded ({line}): {reason}");
                }
            }
        }
        Ok(Ok(u32::try_from(listed.len()).unwrap_or(u32::MAX)))
    }
}
