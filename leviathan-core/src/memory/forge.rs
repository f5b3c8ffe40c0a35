//! A forge in memory, for tests and examples: pull requests numbered from 1, merged or closed
//! by the test as a reviewer would.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;

use crate::{
    forge::{Forge, ForgeError, OpenPullRequest, PullRequest, PullRequestSpec},
    model::PrState,
};

/// One pull request the memory forge holds.
#[derive(Clone, Debug)]
struct Pull {
    spec: PullRequestSpec,
    state: PrState,
    labels: Vec<String>,
}

/// A [`Forge`] in memory. Every pull request it opens gets the next number and the URL
/// `memory://pull/<number>`.
#[derive(Debug, Default)]
pub struct MemoryForge {
    pulls: Mutex<BTreeMap<u64, Pull>>,
}

impl MemoryForge {
    /// A forge without pull requests.
    pub fn new() -> Self {
        Self::default()
    }

    /// What pull request `number` was opened with, if it exists.
    pub fn spec(&self, number: u64) -> Option<PullRequestSpec> {
        self.lock().get(&number).map(|pull| pull.spec.clone())
    }

    /// The labels of pull request `number` (empty when it does not exist).
    pub fn labels(&self, number: u64) -> Vec<String> {
        self.lock()
            .get(&number)
            .map(|pull| pull.labels.clone())
            .unwrap_or_default()
    }

    /// Merges open pull request `number`, as a reviewer would.
    pub fn merge(&self, number: u64) -> Result<(), ForgeError> {
        self.end(number, PrState::Merged)
    }

    /// Closes open pull request `number` without merging it.
    pub fn close(&self, number: u64) -> Result<(), ForgeError> {
        self.end(number, PrState::Closed)
    }

    fn end(&self, number: u64, state: PrState) -> Result<(), ForgeError> {
        let mut pulls = self.lock();
        let pull = pulls.get_mut(&number).ok_or_else(|| not_found(number))?;
        if pull.state != PrState::Open {
            return Err(ForgeError::Invalid(format!(
                "pull request #{number} is not open"
            )));
        }
        pull.state = state;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Pull>> {
        // Every critical section leaves the map consistent, so a poisoned lock holds valid data.
        self.pulls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn not_found(number: u64) -> ForgeError {
    ForgeError::Refused {
        status: 404,
        message: format!("no pull request #{number}"),
    }
}

fn url(number: u64) -> String {
    format!("memory://pull/{number}")
}

#[async_trait]
impl Forge for MemoryForge {
    async fn find_open(&self, head: &str) -> Result<Option<PullRequest>, ForgeError> {
        Ok(self
            .lock()
            .iter()
            .find(|(_, pull)| pull.state == PrState::Open && pull.spec.head == head)
            .map(|(&number, pull)| PullRequest {
                number,
                url: url(number),
                reused: true,
                body: pull.spec.body.clone(),
            }))
    }

    async fn create(&self, spec: &PullRequestSpec) -> Result<PullRequest, ForgeError> {
        let mut pulls = self.lock();
        if pulls
            .values()
            .any(|pull| pull.state == PrState::Open && pull.spec.head == spec.head)
        {
            return Err(ForgeError::AlreadyExists(format!(
                "a pull request is open for `{}`",
                spec.head
            )));
        }
        let number = pulls.keys().next_back().map_or(1, |last| last + 1);
        pulls.insert(
            number,
            Pull {
                spec: spec.clone(),
                state: PrState::Open,
                labels: Vec::new(),
            },
        );
        Ok(PullRequest {
            number,
            url: url(number),
            reused: false,
            body: spec.body.clone(),
        })
    }

    async fn list_open(&self, head_prefix: &str) -> Result<Vec<OpenPullRequest>, ForgeError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(_, pull)| {
                pull.state == PrState::Open && pull.spec.head.starts_with(head_prefix)
            })
            .map(|(&number, pull)| OpenPullRequest {
                number,
                url: url(number),
                head: pull.spec.head.clone(),
            })
            .collect())
    }

    async fn state(&self, number: u64) -> Result<PrState, ForgeError> {
        self.lock()
            .get(&number)
            .map(|pull| pull.state)
            .ok_or_else(|| not_found(number))
    }

    async fn update_body(&self, number: u64, body: &str) -> Result<(), ForgeError> {
        let mut pulls = self.lock();
        let pull = pulls.get_mut(&number).ok_or_else(|| not_found(number))?;
        body.clone_into(&mut pull.spec.body);
        Ok(())
    }

    async fn add_labels(&self, number: u64, labels: &[String]) -> Result<(), ForgeError> {
        let mut pulls = self.lock();
        let pull = pulls.get_mut(&number).ok_or_else(|| not_found(number))?;
        for label in labels {
            if !pull.labels.contains(label) {
                pull.labels.push(label.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::open_pull_request;

    fn spec(head: &str) -> PullRequestSpec {
        PullRequestSpec {
            head: head.to_owned(),
            base: "main".to_owned(),
            title: format!("title of {head}"),
            body: String::new(),
            draft: false,
        }
    }

    #[tokio::test]
    async fn one_open_pull_request_per_head() {
        let forge = MemoryForge::new();
        let first = open_pull_request(&forge, &spec("agent/a")).await.unwrap();
        assert_eq!((first.number, first.reused), (1, false));
        assert_eq!(first.url, "memory://pull/1");
        let again = open_pull_request(&forge, &spec("agent/a")).await.unwrap();
        assert_eq!((again.number, again.reused), (1, true));
        let error = forge.create(&spec("agent/a")).await.unwrap_err();
        assert!(matches!(error, ForgeError::AlreadyExists(_)), "{error}");
        assert_eq!(forge.spec(1).unwrap().title, "title of agent/a");

        // Once merged, the head may be used again, under a new number.
        forge.merge(1).unwrap();
        assert!(forge.find_open("agent/a").await.unwrap().is_none());
        let next = open_pull_request(&forge, &spec("agent/a")).await.unwrap();
        assert_eq!((next.number, next.reused), (2, false));
    }

    #[tokio::test]
    async fn listings_and_states_follow_merges_and_closes() {
        let forge = MemoryForge::new();
        for head in ["agent/a", "agent/b", "feature/human", "agent/c"] {
            forge.create(&spec(head)).await.unwrap();
        }
        let heads = |listed: Vec<OpenPullRequest>| -> Vec<String> {
            listed.into_iter().map(|pr| pr.head).collect()
        };
        assert_eq!(
            heads(forge.list_open("agent/").await.unwrap()),
            ["agent/a", "agent/b", "agent/c"]
        );
        forge.merge(1).unwrap();
        forge.close(2).unwrap();
        assert_eq!(heads(forge.list_open("agent/").await.unwrap()), ["agent/c"]);
        assert_eq!(forge.state(1).await.unwrap(), PrState::Merged);
        assert_eq!(forge.state(2).await.unwrap(), PrState::Closed);
        assert_eq!(forge.state(4).await.unwrap(), PrState::Open);

        let error = forge.state(9).await.unwrap_err();
        assert!(
            matches!(error, ForgeError::Refused { status: 404, .. }),
            "{error}"
        );
        assert!(forge.merge(9).is_err());
        let error = forge.close(1).unwrap_err();
        assert!(error.to_string().contains("#1 is not open"), "{error}");
        assert_eq!(forge.state(1).await.unwrap(), PrState::Merged, "unchanged");
    }
}
