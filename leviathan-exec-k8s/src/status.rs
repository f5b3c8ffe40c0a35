//! Reading Job and pod status: where a Job stands, what keeps a pod from running, and the
//! attempt's result once the Job has ended. Pure functions of the API objects.
//!
//! Failure classes (decided here, documented in the crate docs):
//! - an image that cannot be pulled and a container that cannot be configured (missing secret
//!   or key) are `infrastructure`, **permanent**: the same Job fails the same way until an
//!   operator fixes the image or the secret, so retries would only burn attempts;
//! - a pod unschedulable past the grace period is `infrastructure`, **transient** (capacity
//!   frees up);
//! - `DeadlineExceeded` is `timeout`, transient;
//! - a worker that ended without a readable result is `infrastructure`: permanent for exit
//!   code 2 (it rejected its configuration), transient otherwise (a crash, `OOMKilled`).

use std::time::Duration;

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ContainerStateTerminated, Pod},
};
use leviathan_core::{
    AttemptResult,
    executor::protocol,
    model::{Failure, FailureClass, FailureKind},
};

use crate::job::CONTAINER_NAME;

/// Where a Job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Not finished.
    Active,
    /// `Complete=True`.
    Complete,
    /// `Failed=True` with reason `DeadlineExceeded`.
    DeadlineExceeded,
    /// `Failed=True` for another reason (`BackoffLimitExceeded`: the worker exited non-zero).
    Failed {
        /// The condition's reason.
        reason: String,
    },
    /// Being deleted (`deletionTimestamp` set).
    Deleting,
}

/// The state of `job`.
pub(crate) fn job_state(job: &Job) -> JobState {
    if job.metadata.deletion_timestamp.is_some() {
        return JobState::Deleting;
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete").is_some() {
        return JobState::Complete;
    }
    match holds("Failed") {
        Some(c) if c.reason.as_deref() == Some("DeadlineExceeded") => JobState::DeadlineExceeded,
        Some(c) => JobState::Failed {
            reason: c.reason.clone().unwrap_or_else(|| "Failed".to_owned()),
        },
        None => JobState::Active,
    }
}

/// What keeps a pod from running the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PodProblem {
    /// `ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`, `ErrImageNeverPull`.
    ImagePull {
        /// The waiting reason.
        reason: String,
        /// The kubelet's message.
        message: String,
    },
    /// `CreateContainerConfigError`: typically a missing secret or key.
    ContainerConfig {
        /// The kubelet's message (`secret "x" not found`).
        message: String,
    },
    /// `PodScheduled=False` with reason `Unschedulable`; fatal only after the grace period.
    Unschedulable {
        /// The scheduler's message.
        message: String,
    },
}

impl PodProblem {
    /// The attempt's failure; `image` and `grace` complete the summary.
    pub(crate) fn failure(&self, image: &str, grace: Duration) -> Failure {
        match self {
            Self::ImagePull { reason, message } => Failure {
                kind: FailureKind::Infrastructure,
                class: FailureClass::Permanent,
                summary: format!("worker image `{image}` cannot be pulled ({reason}): {message}"),
            },
            Self::ContainerConfig { message } => Failure {
                kind: FailureKind::Infrastructure,
                class: FailureClass::Permanent,
                summary: format!(
                    "the worker container cannot be configured (CreateContainerConfigError): {message}"
                ),
            },
            Self::Unschedulable { message } => Failure {
                kind: FailureKind::Infrastructure,
                class: FailureClass::Transient,
                summary: format!(
                    "the worker pod stayed unschedulable for {} s: {message}",
                    grace.as_secs()
                ),
            },
        }
    }
}

/// The problem `pod` shows, if any.
pub(crate) fn pod_problem(pod: &Pod) -> Option<PodProblem> {
    let status = pod.status.as_ref()?;
    let waiting = status
        .container_statuses
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|c| c.name == CONTAINER_NAME)
        .find_map(|c| c.state.as_ref()?.waiting.as_ref());
    if let Some(waiting) = waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        match reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                return Some(PodProblem::ImagePull { reason, message });
            }
            "CreateContainerConfigError" => return Some(PodProblem::ContainerConfig { message }),
            _ => {}
        }
    }
    status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
        .map(|c| PodProblem::Unschedulable {
            message: c.message.clone().unwrap_or_default(),
        })
}

/// The worker container's terminated state in `pod`.
pub(crate) fn terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_deref()?
        .iter()
        .find(|c| c.name == CONTAINER_NAME)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

/// The attempt's result once Job `job` ended in `state` (terminal), from the worker container's
/// final state and the pod log, whichever is available.
pub(crate) fn finished_result(
    job: &str,
    state: &JobState,
    container: Option<&ContainerStateTerminated>,
    log: Option<&str>,
    deadline: Duration,
) -> AttemptResult {
    let failed = |kind, class, summary| {
        AttemptResult::Failed(Failure {
            kind,
            class,
            summary,
        })
    };
    if *state == JobState::DeadlineExceeded {
        return failed(
            FailureKind::Timeout,
            FailureClass::Transient,
            format!(
                "attempt exceeded its deadline of {} s (Job {job}: DeadlineExceeded)",
                deadline.as_secs()
            ),
        );
    }
    let message = container.and_then(|c| c.message.as_deref());
    if let Some(result) = message
        .and_then(protocol::parse_worker_result)
        .or_else(|| log.and_then(protocol::parse_worker_result))
    {
        return result;
    }
    let ended = match state {
        JobState::Complete => "completed".to_owned(),
        JobState::Failed { reason } => format!("failed ({reason})"),
        JobState::Deleting => "was deleted".to_owned(),
        JobState::Active | JobState::DeadlineExceeded => "ended".to_owned(),
    };
    let Some(container) = container else {
        return failed(
            FailureKind::Infrastructure,
            FailureClass::Transient,
            format!("Job {job} {ended}, but the worker's final state is unknown (pod gone)"),
        );
    };
    let output = log.or(message).unwrap_or_default();
    let how = match container.reason.as_deref() {
        Some(reason) if reason != "Error" && reason != "Completed" => {
            format!("exit code {} ({reason})", container.exit_code)
        }
        _ => format!("exit code {}", container.exit_code),
    };
    if container.exit_code == protocol::EXIT_CONFIGURATION {
        failed(
            FailureKind::Infrastructure,
            FailureClass::Permanent,
            format!(
                "Job {job} {ended}: the worker rejected its configuration ({how}): {}",
                protocol::summary_line(output)
            ),
        )
    } else {
        failed(
            FailureKind::Infrastructure,
            FailureClass::Transient,
            format!(
                "Job {job} {ended}: the worker ended with {how} without reporting a result: {}",
                protocol::summary_line(output)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::{
            batch::v1::{JobCondition, JobStatus},
            core::v1::{
                ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
            },
        },
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    };

    use super::*;

    fn job_with(conditions: &[(&str, &str, &str)]) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(type_, status, reason)| JobCondition {
                            type_: (*type_).to_owned(),
                            status: (*status).to_owned(),
                            reason: Some((*reason).to_owned()),
                            ..JobCondition::default()
                        })
                        .collect(),
                ),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    #[test]
    fn job_states() {
        assert_eq!(job_state(&Job::default()), JobState::Active);
        assert_eq!(
            job_state(&job_with(&[("Complete", "True", "CompletionsReached")])),
            JobState::Complete
        );
        assert_eq!(
            job_state(&job_with(&[
                ("FailureTarget", "True", "DeadlineExceeded"),
                ("Failed", "True", "DeadlineExceeded")
            ])),
            JobState::DeadlineExceeded
        );
        assert_eq!(
            job_state(&job_with(&[("FailureTarget", "True", "DeadlineExceeded")])),
            JobState::Active,
            "only the final Failed condition ends it"
        );
        assert_eq!(
            job_state(&job_with(&[("Failed", "True", "BackoffLimitExceeded")])),
            JobState::Failed {
                reason: "BackoffLimitExceeded".to_owned()
            }
        );
        assert_eq!(
            job_state(&job_with(&[("Complete", "False", "")])),
            JobState::Active
        );
        let mut deleting = job_with(&[("Complete", "True", "")]);
        deleting.metadata = ObjectMeta {
            deletion_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            ..ObjectMeta::default()
        };
        assert_eq!(job_state(&deleting), JobState::Deleting);
    }

    fn waiting_pod(reason: &str, message: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER_NAME.to_owned(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.to_owned()),
                            message: Some(message.to_owned()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn pod_problems() {
        assert_eq!(pod_problem(&waiting_pod("ContainerCreating", "")), None);
        assert_eq!(
            pod_problem(&waiting_pod("ImagePullBackOff", "Back-off pulling image")),
            Some(PodProblem::ImagePull {
                reason: "ImagePullBackOff".to_owned(),
                message: "Back-off pulling image".to_owned()
            })
        );
        let config = pod_problem(&waiting_pod(
            "CreateContainerConfigError",
            "secret \"s\" not found",
        ))
        .unwrap();
        let failure = config.failure("img", Duration::ZERO);
        assert_eq!(
            (failure.kind, failure.class),
            (FailureKind::Infrastructure, FailureClass::Permanent)
        );
        assert!(failure.summary.contains("secret \"s\" not found"));

        let pending = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".to_owned(),
                    status: "False".to_owned(),
                    reason: Some("Unschedulable".to_owned()),
                    message: Some("0/3 nodes are available".to_owned()),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let problem = pod_problem(&pending).unwrap();
        let failure = problem.failure("img", Duration::from_secs(300));
        assert_eq!(failure.class, FailureClass::Transient);
        assert!(
            failure.summary.contains("300 s: 0/3 nodes"),
            "{}",
            failure.summary
        );
    }

    fn container(exit_code: i32, reason: &str, message: Option<&str>) -> ContainerStateTerminated {
        ContainerStateTerminated {
            exit_code,
            reason: Some(reason.to_owned()),
            message: message.map(str::to_owned),
            ..ContainerStateTerminated::default()
        }
    }

    const SUCCEEDED: &str =
        r#"{"result":"succeeded","branch":"b","commit_sha":"c","pr_number":1,"pr_url":"u"}"#;

    #[test]
    fn results_come_from_the_message_then_the_log() {
        let deadline = Duration::from_secs(60);
        let from_message = finished_result(
            "j",
            &JobState::Complete,
            Some(&container(0, "Completed", Some(SUCCEEDED))),
            Some("not a result"),
            deadline,
        );
        assert!(matches!(
            from_message,
            AttemptResult::Succeeded { pr_number: 1, .. }
        ));
        let from_log = finished_result(
            "j",
            &JobState::Complete,
            Some(&container(0, "Completed", None)),
            Some(&format!("log\n{SUCCEEDED}\n")),
            deadline,
        );
        assert_eq!(from_log, from_message);
    }

    fn failure_of(result: AttemptResult) -> Failure {
        match result {
            AttemptResult::Failed(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn endings_without_a_result() {
        let deadline = Duration::from_secs(60);
        let timeout = failure_of(finished_result(
            "j",
            &JobState::DeadlineExceeded,
            Some(&container(0, "Completed", Some(SUCCEEDED))),
            None,
            deadline,
        ));
        assert_eq!(
            (timeout.kind, timeout.class),
            (FailureKind::Timeout, FailureClass::Transient)
        );
        assert!(timeout.summary.contains("deadline of 60 s"));

        let failed = JobState::Failed {
            reason: "BackoffLimitExceeded".to_owned(),
        };
        let config = failure_of(finished_result(
            "j",
            &failed,
            Some(&container(2, "Error", Some("TASK_ID is not set\n"))),
            None,
            deadline,
        ));
        assert_eq!(
            (config.kind, config.class),
            (FailureKind::Infrastructure, FailureClass::Permanent)
        );
        assert!(
            config.summary.ends_with("TASK_ID is not set"),
            "{}",
            config.summary
        );

        let oom = failure_of(finished_result(
            "j",
            &failed,
            Some(&container(137, "OOMKilled", None)),
            Some("allocating\n"),
            deadline,
        ));
        assert_eq!(oom.class, FailureClass::Transient);
        assert!(
            oom.summary.contains("exit code 137 (OOMKilled)")
                && oom.summary.ends_with("allocating"),
            "{}",
            oom.summary
        );

        let gone = failure_of(finished_result(
            "j",
            &JobState::Complete,
            None,
            None,
            deadline,
        ));
        assert_eq!(gone.kind, FailureKind::Infrastructure);
        assert!(gone.summary.contains("pod gone"));
    }
}
