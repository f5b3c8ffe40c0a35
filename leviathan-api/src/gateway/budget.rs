//! The books of the gateway's budgets: what each scope (an attempt, a target's day, the whole
//! day) has spent, folded from the gateway's own `model.call_completed` events in the log (so
//! every replica on one store and every restart agree), and what calls in flight hold.
//!
//! A call is admitted only while every scope it is charged to has spent less than its limit and
//! what is spent plus what calls in flight hold is below it too; it then holds its worst case
//! (all of `max_tokens`) until its event is in the log. So the spend of a scope can pass its
//! limit by at most one call's worth, however many attempts share it.

use std::collections::{HashMap, HashSet};

use leviathan_core::{
    Event, EventStore, Timestamp,
    catalogue::{BudgetExhausted, ModelCallCompleted, Payload},
    id::{AttemptId, TargetId},
    store::EventStoreError,
};
use tokio::sync::Mutex;

use super::config::{Budgets, Limit};

/// The actor of the events the gateway records; only its events (written by the control plane
/// itself, with no principal) count, never a worker's word.
pub(crate) const GATEWAY_ACTOR: &str = "gateway";

/// Events read per page while catching up.
const PAGE: usize = 1000;

/// Calls, tokens and dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Spend {
    /// Model calls.
    pub calls: u64,
    /// Input plus output tokens.
    pub tokens: u64,
    /// Cost in USD.
    pub usd: f64,
}

impl Spend {
    fn add(&mut self, other: &Spend) {
        self.calls += other.calls;
        self.tokens += other.tokens;
        self.usd += other.usd;
    }

    fn remove(&mut self, other: &Spend) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.tokens = self.tokens.saturating_sub(other.tokens);
        self.usd = (self.usd - other.usd).max(0.0);
    }
}

/// A budget that is spent.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Exhausted {
    /// `attempt:<id>`, `target:<id>:<day>` or `global:<day>`.
    pub scope: String,
    /// `calls`, `tokens`, `usd` or `wall_seconds`.
    pub resource: &'static str,
    /// The limit.
    pub limit: f64,
    /// What was spent.
    pub spent: f64,
}

/// Why a call is not forwarded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Refusal {
    /// A budget is spent: no call of this scope goes through until its window resets.
    Exhausted(Exhausted),
    /// Calls in flight hold what is left of a budget: retry when they are settled.
    Held {
        /// The scope.
        scope: String,
    },
    /// The log could not be read, so the books cannot be checked: refused (fail closed).
    Unreadable(String),
}

/// The call being asked for.
#[derive(Clone, Debug)]
pub(crate) struct Ask<'a> {
    /// Its attempt.
    pub attempt: &'a AttemptId,
    /// The attempt's target.
    pub target: &'a TargetId,
    /// When the attempt was created (for its wall-time budget).
    pub attempt_created: Timestamp,
    /// Now.
    pub now: Timestamp,
    /// Its worst case: one call, its input and all of `max_tokens`, their cost.
    pub worst: Spend,
}

/// What an admitted call holds until it is settled.
#[derive(Debug)]
pub(crate) struct Hold {
    scopes: Vec<String>,
    worst: Spend,
}

/// The scopes a call of `attempt` of `target` on `day` is charged to, with their limits.
fn scopes<'b>(
    budgets: &'b Budgets,
    attempt: &AttemptId,
    target: &TargetId,
    day: &str,
) -> [(String, &'b Limit); 3] {
    [
        (format!("attempt:{attempt}"), &budgets.attempt),
        (
            format!("target:{target}:{day}"),
            budgets.target_limit(target),
        ),
        (format!("global:{day}"), &budgets.global_day),
    ]
}

/// The first resource of `limit` that `spent` has reached.
fn reached(scope: &str, limit: &Limit, spent: &Spend) -> Option<Exhausted> {
    let exhausted = |resource, limit: f64, spent: f64| Exhausted {
        scope: scope.to_owned(),
        resource,
        limit,
        spent,
    };
    if let Some(calls) = limit.calls.filter(|calls| spent.calls >= *calls) {
        return Some(exhausted("calls", calls as f64, spent.calls as f64));
    }
    if let Some(tokens) = limit.tokens.filter(|tokens| spent.tokens >= *tokens) {
        return Some(exhausted("tokens", tokens as f64, spent.tokens as f64));
    }
    let usd = limit.usd.filter(|usd| spent.usd >= *usd)?;
    Some(exhausted("usd", usd, spent.usd))
}

#[derive(Debug, Default)]
struct Books {
    /// The last `seq` folded.
    read_to: u64,
    spent: HashMap<String, Spend>,
    held: HashMap<String, Spend>,
    /// `scope/resource` of every `budget.exhausted` in the log.
    announced: HashSet<String>,
}

impl Books {
    fn fold(&mut self, event: &Event) {
        if event.principal.is_some() {
            return;
        }
        if event.event_type == BudgetExhausted::EVENT_TYPE
            && let Ok(p) = BudgetExhausted::from_payload(&event.payload)
        {
            self.announced.insert(format!("{}/{}", p.scope, p.resource));
        }
        if event.event_type != ModelCallCompleted::EVENT_TYPE
            || event.actor_id.as_deref() != Some(GATEWAY_ACTOR)
        {
            return;
        }
        let Ok(call) = ModelCallCompleted::from_payload(&event.payload) else {
            return;
        };
        let spend = Spend {
            calls: 1,
            tokens: call.tokens_in.saturating_add(call.tokens_out),
            usd: call.cost_usd.unwrap_or(0.0),
        };
        let day = event.timestamp.as_datetime().date_naive();
        let mut charge = |scope: String| self.spent.entry(scope).or_default().add(&spend);
        charge(format!("attempt:{}", call.attempt_id));
        if let Some(target) = &call.target_id {
            charge(format!("target:{target}:{day}"));
        }
        charge(format!("global:{day}"));
    }

    async fn catch_up(&mut self, events: &dyn EventStore) -> Result<(), EventStoreError> {
        loop {
            let page = events.read(self.read_to, PAGE).await?;
            for event in &page {
                self.fold(event);
            }
            match page.last() {
                Some(last) if page.len() == PAGE => self.read_to = last.seq,
                Some(last) => {
                    self.read_to = last.seq;
                    return Ok(());
                }
                None => return Ok(()),
            }
        }
    }

    /// The refusal of `ask`, if any: a spent budget first, then one held by calls in flight.
    fn check(
        &self,
        budgets: &Budgets,
        ask: &Ask<'_>,
        scopes: &[(String, &Limit)],
    ) -> Option<Refusal> {
        if let Some(wall) = budgets.attempt_wall {
            let ran = ask.now.saturating_since(ask.attempt_created);
            if ran >= wall {
                return Some(Refusal::Exhausted(Exhausted {
                    scope: scopes[0].0.clone(),
                    resource: "wall_seconds",
                    limit: wall.as_secs_f64(),
                    spent: ran.as_secs_f64(),
                }));
            }
        }
        let spent = |scope: &str| self.spent.get(scope).copied().unwrap_or_default();
        if let Some(exhausted) = scopes
            .iter()
            .find_map(|(scope, limit)| reached(scope, limit, &spent(scope)))
        {
            return Some(Refusal::Exhausted(exhausted));
        }
        scopes.iter().find_map(|(scope, limit)| {
            let mut committed = spent(scope);
            committed.add(&self.held.get(scope).copied().unwrap_or_default());
            reached(scope, limit, &committed).map(|_| Refusal::Held {
                scope: scope.clone(),
            })
        })
    }
}

/// The books, behind one lock: checking and holding are one step, so two calls cannot both
/// take the last of a budget.
#[derive(Debug, Default)]
pub(crate) struct Accountant {
    books: Mutex<Books>,
}

impl Accountant {
    /// Admits `ask` and holds its worst case, or says why not.
    pub(crate) async fn reserve(
        &self,
        events: &dyn EventStore,
        budgets: &Budgets,
        ask: &Ask<'_>,
    ) -> Result<Hold, Refusal> {
        let mut books = self.books.lock().await;
        books
            .catch_up(events)
            .await
            .map_err(|e| Refusal::Unreadable(e.to_string()))?;
        let day = ask.now.as_datetime().date_naive().to_string();
        let scopes = scopes(budgets, ask.attempt, ask.target, &day);
        if let Some(refusal) = books.check(budgets, ask, &scopes) {
            return Err(refusal);
        }
        for (scope, _) in &scopes {
            books.held.entry(scope.clone()).or_default().add(&ask.worst);
        }
        Ok(Hold {
            scopes: scopes.into_iter().map(|(scope, _)| scope).collect(),
            worst: ask.worst,
        })
    }

    /// Ends a hold once the call's event (if any) is in the log: the log is read first, so the
    /// call is never counted in neither place.
    pub(crate) async fn settle(&self, events: &dyn EventStore, hold: Hold) {
        let mut books = self.books.lock().await;
        if let Err(error) = books.catch_up(events).await {
            tracing::warn!(%error, "the gateway's books could not read the log; they catch up on the next call");
        }
        for scope in &hold.scopes {
            if let Some(held) = books.held.get_mut(scope) {
                held.remove(&hold.worst);
            }
        }
    }

    /// True the first time `exhausted` is seen (here or in the log): it is then recorded.
    pub(crate) async fn first_announcement(&self, exhausted: &Exhausted) -> bool {
        let key = format!("{}/{}", exhausted.scope, exhausted.resource);
        self.books.lock().await.announced.insert(key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use leviathan_core::{NewEvent, Sha256Digest, memory::MemoryEventStore, store::AppendRequest};
    use proptest::prelude::*;

    use super::*;

    /// Where one attempt of the interleaving is.
    #[derive(Debug)]
    enum Step {
        Idle,
        Holding(Hold),
        Done,
    }

    fn call_event(n: usize, attempt: &AttemptId, target: &TargetId, tokens: u64) -> NewEvent {
        let digest = Sha256Digest::of(n.to_string().as_bytes());
        let payload = ModelCallCompleted {
            attempt_id: attempt.clone(),
            model: "m".into(),
            provider: None,
            tokens_in: tokens / 2,
            tokens_out: tokens - tokens / 2,
            prompt_sha256: digest,
            response_sha256: digest,
            round: 0,
            duration_ms: None,
            target_id: Some(target.clone()),
            cost_usd: Some(0.0),
            prices_as_of: None,
        };
        let id = leviathan_core::id::EventId::new(format!("call-{n}")).unwrap();
        NewEvent::new(
            id,
            Timestamp::now(),
            Some(GATEWAY_ACTOR.to_owned()),
            &payload,
        )
    }

    /// Runs `schedule` (which attempt moves next, and what fraction of its worst case its call
    /// then uses) over attempts sharing one target's daily token budget; the tokens spent.
    async fn run(limit: u64, worst: u64, attempts: usize, schedule: &[(usize, u8)]) -> u64 {
        let events = MemoryEventStore::new();
        let accountant = Accountant::default();
        let mut budgets = Budgets::default();
        budgets.target_day.tokens = Some(limit);
        let target = TargetId::new("shared").unwrap();
        let ids: Vec<AttemptId> = (0..attempts)
            .map(|i| AttemptId::new(format!("a{i}")).unwrap())
            .collect();
        let mut steps: Vec<Step> = (0..attempts).map(|_| Step::Idle).collect();
        let mut spent = 0;
        for (n, (who, fraction)) in schedule.iter().enumerate() {
            let who = who % attempts;
            let now = Timestamp::now();
            let ask = Ask {
                attempt: &ids[who],
                target: &target,
                attempt_created: now,
                now,
                worst: Spend {
                    calls: 1,
                    tokens: worst,
                    usd: 0.0,
                },
            };
            steps[who] = match std::mem::replace(&mut steps[who], Step::Done) {
                Step::Idle => match accountant.reserve(&events, &budgets, &ask).await {
                    Ok(hold) => Step::Holding(hold),
                    Err(Refusal::Held { .. }) => Step::Idle,
                    Err(Refusal::Exhausted(_)) => Step::Done,
                    Err(other) => panic!("{other:?}"),
                },
                Step::Holding(hold) => {
                    let used = worst * u64::from(*fraction) / 255;
                    let event = call_event(n, &ids[who], &target, used);
                    events
                        .append(AppendRequest::new(vec![event]))
                        .await
                        .unwrap();
                    spent += used;
                    accountant.settle(&events, hold).await;
                    Step::Idle
                }
                Step::Done => Step::Done,
            };
        }
        spent
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn attempts_sharing_a_daily_budget_overshoot_it_by_at_most_one_call(
            limit in 1u64..2_000,
            worst in 1u64..500,
            attempts in 1usize..6,
            schedule in proptest::collection::vec((0usize..6, any::<u8>()), 0..200),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let spent = runtime.block_on(run(limit, worst, attempts, &schedule));
            prop_assert!(spent < limit + worst, "spent {spent} of {limit}, one call at most {worst}");
        }
    }

    #[tokio::test]
    async fn an_attempt_past_its_wall_time_is_refused() {
        let events = MemoryEventStore::new();
        let accountant = Accountant::default();
        let budgets = Budgets {
            attempt_wall: Some(Duration::from_secs(60)),
            ..Budgets::default()
        };
        let (attempt, target) = (AttemptId::new("a").unwrap(), TargetId::new("t").unwrap());
        let now = Timestamp::now();
        let mut ask = Ask {
            attempt: &attempt,
            target: &target,
            attempt_created: now,
            now: now.saturating_add(Duration::from_secs(59)),
            worst: Spend::default(),
        };
        let hold = accountant.reserve(&events, &budgets, &ask).await.unwrap();
        accountant.settle(&events, hold).await;
        ask.now = now.saturating_add(Duration::from_secs(60));
        let refusal = accountant
            .reserve(&events, &budgets, &ask)
            .await
            .unwrap_err();
        let Refusal::Exhausted(exhausted) = refusal else {
            panic!("{refusal:?}")
        };
        assert_eq!(
            (exhausted.resource, exhausted.limit),
            ("wall_seconds", 60.0)
        );
    }

    #[tokio::test]
    async fn calls_the_worker_reports_itself_are_not_counted() {
        let events = MemoryEventStore::new();
        let (attempt, target) = (AttemptId::new("a").unwrap(), TargetId::new("t").unwrap());
        let mut event = call_event(1, &attempt, &target, 1_000);
        event.principal = Some(leviathan_core::auth::Principal::new(
            leviathan_core::id::TokenId::new("w").unwrap(),
            leviathan_core::auth::Role::Worker,
        ));
        events
            .append(AppendRequest::new(vec![event]))
            .await
            .unwrap();
        let mut budgets = Budgets::default();
        budgets.attempt.tokens = Some(10);
        let now = Timestamp::now();
        let ask = Ask {
            attempt: &attempt,
            target: &target,
            attempt_created: now,
            now,
            worst: Spend::default(),
        };
        assert!(
            Accountant::default()
                .reserve(&events, &budgets, &ask)
                .await
                .is_ok()
        );
        let own = call_event(2, &attempt, &target, 1_000);
        events.append(AppendRequest::new(vec![own])).await.unwrap();
        assert!(
            Accountant::default()
                .reserve(&events, &budgets, &ask)
                .await
                .is_err()
        );
    }
}
