//! Connector tasks and their lifecycle.
//!
//! Each connector runs as a supervised task: RUNNING; PAUSED while a sink
//! waits for its target; RESTARTING after a failure that may pass (a peer
//! down, a timeout), after a backoff (1 s doubling to 60 s, jittered; reset
//! after a minute of healthy running) rather than staying down until
//! someone notices; FAILED, for good, after a failure that will not pass by
//! trying again (a record that cannot be written, a refused credential):
//! restarting would only repeat it, and rewrite what came before; STOPPED
//! at shutdown; COMPLETED when a batch source finishes.
//! Each attempt runs in a task of its own, so even a panic in a connector
//! is contained: it fails that connector, never the others.

use super::source_task::Exit;
use super::Shutdown;
use crate::error::ConnectorError;
use crate::resilience::Backoff;
use crate::telemetry::metrics as m;
use crate::telemetry::redact;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;

/// What a connector task is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Running,
    Paused { reason: String },
    Failed { reason: String },
    Restarting { attempt: u32, in_ms: u64 },
    Stopped,
    Completed,
}

/// A connector's status, as `/connectors` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorStatus {
    pub name: String,
    /// `source` or `sink`.
    pub role: &'static str,
    #[serde(flatten)]
    pub state: TaskState,
    pub restarts: u32,
    pub last_error: Option<String>,
    /// The worst state of the circuit breakers of the targets it calls
    /// (`closed`, `open`, `half_open`); absent before its first call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<&'static str>,
    /// A webhook connector's spool: events not yet in Kafka.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<crate::ingress::lane::SpoolStatus>,
}

/// Every connector's status. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Statuses(Arc<RwLock<BTreeMap<String, ConnectorStatus>>>);

impl Statuses {
    pub fn snapshot(&self) -> Vec<ConnectorStatus> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .map(|mut s| {
                // A sink's task for returning records calls out as its sink.
                let connector = s.name.strip_suffix(".returning").unwrap_or(&s.name);
                s.circuit = crate::resilience::targets::circuit_of(connector).map(|c| c.as_str());
                s.spool = crate::ingress::lane::spool_of(&s.name);
                s
            })
            .collect()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut ConnectorStatus)) {
        let mut all = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = all.get_mut(name) {
            f(s);
        }
    }

    fn insert(&self, name: &str, role: &'static str) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                name.to_owned(),
                ConnectorStatus {
                    name: name.to_owned(),
                    role,
                    state: TaskState::Running,
                    restarts: 0,
                    last_error: None,
                    circuit: None,
                    spool: None,
                },
            );
    }
}

/// What a running task may report about itself.
#[derive(Debug, Clone)]
pub struct TaskHandle {
    name: String,
    statuses: Statuses,
}

impl TaskHandle {
    pub fn paused(&self, reason: String) {
        self.statuses.update(&self.name, |s| {
            s.state = TaskState::Paused {
                reason: redact::scrub(&reason).into_owned(),
            }
        });
    }

    pub fn running(&self) {
        self.statuses
            .update(&self.name, |s| s.state = TaskState::Running);
    }

    /// A failure the task is retrying by itself (a sink's target down): it
    /// stays `RUNNING`, and `/connectors` shows the failure as `last_error`.
    pub fn retrying(&self, error: &str) {
        let error = redact::scrub(error).into_owned();
        self.statuses
            .update(&self.name, |s| s.last_error = Some(error));
    }

    /// A handle for a task `name` outside a supervisor, and the statuses it
    /// reports to (tests of a task's parts).
    #[cfg(test)]
    pub(crate) fn detached(name: &str) -> Self {
        let statuses = Statuses::default();
        statuses.insert(name, "sink");
        Self {
            name: name.to_owned(),
            statuses,
        }
    }

    /// What this handle reported (tests).
    #[cfg(test)]
    pub(crate) fn status(&self) -> Option<ConnectorStatus> {
        self.statuses
            .snapshot()
            .into_iter()
            .find(|s| s.name == self.name)
    }
}

const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Runs `attempt` until it ends cleanly or Ferry stops, restarting it with
/// backoff after each failure.
pub(crate) fn supervise<F, Fut>(
    name: String,
    role: &'static str,
    statuses: Statuses,
    shutdown: Shutdown,
    mut attempt: F,
) -> JoinHandle<()>
where
    F: FnMut(TaskHandle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Exit, ConnectorError>> + Send + 'static,
{
    statuses.insert(&name, role);
    tokio::spawn(async move {
        let handle = TaskHandle {
            name: name.clone(),
            statuses: statuses.clone(),
        };
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            handle.running();
            let started = tokio::time::Instant::now();
            // Aborted with the supervisor: an attempt never outlives it.
            let mut running = AbortOnDrop(tokio::spawn(attempt(handle.clone())));
            let outcome = match (&mut running.0).await {
                Ok(r) => r,
                Err(e) if e.is_panic() => Err(ConnectorError::internal(format!(
                    "connector `{name}` panicked: {}",
                    panic_message(e.into_panic())
                ))),
                Err(e) => Err(ConnectorError::internal(format!("connector `{name}`: {e}"))),
            };
            let error = match outcome {
                Ok(Exit::Stopped) => {
                    statuses.update(&name, |s| s.state = TaskState::Stopped);
                    return;
                }
                Ok(Exit::Completed) => {
                    tracing::info!(connector = %name, "connector completed");
                    statuses.update(&name, |s| s.state = TaskState::Completed);
                    return;
                }
                Err(e) => e,
            };
            if started.elapsed() >= HEALTHY_AFTER {
                backoff.reset();
            }
            // Statuses are shown on `/connectors`: never with a secret in them.
            let reason = redact::scrub(&error.to_string()).into_owned();
            if !error.is_retryable() {
                tracing::error!(connector = %name, error = %error, domain = ?error.domain, "connector failed for good; it is not restarted");
                metrics::counter!(m::CONNECTOR_FAILURES_TOTAL, "connector" => name.clone())
                    .increment(1);
                statuses.update(&name, |s| {
                    s.state = if shutdown.is_cancelled() {
                        TaskState::Stopped
                    } else {
                        TaskState::Failed {
                            reason: reason.clone(),
                        }
                    };
                    s.last_error = Some(reason);
                });
                return;
            }
            let wait = backoff.next_delay();
            tracing::error!(connector = %name, error = %error, domain = ?error.domain, restart_in = ?wait, "connector failed");
            metrics::counter!(m::CONNECTOR_RESTARTS_TOTAL, "connector" => name.clone())
                .increment(1);
            statuses.update(&name, |s| {
                s.state = TaskState::Failed {
                    reason: reason.clone(),
                };
                s.last_error = Some(reason);
            });
            if shutdown.is_cancelled() {
                statuses.update(&name, |s| s.state = TaskState::Stopped);
                return;
            }
            statuses.update(&name, |s| {
                s.restarts += 1;
                s.state = TaskState::Restarting {
                    attempt: s.restarts,
                    in_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                };
            });
            tokio::select! {
                _ = shutdown.cancelled() => {
                    statuses.update(&name, |s| s.state = TaskState::Stopped);
                    return;
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_is_restarted_with_backoff_and_a_panic_is_contained() {
        let statuses = Statuses::default();
        let shutdown = Shutdown::new();
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&attempts);
        let task = supervise(
            "flaky".into(),
            "source",
            statuses.clone(),
            shutdown.clone(),
            move |_| {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0 => Err(ConnectorError::external("target down")),
                        1 => panic!("bug in connector"),
                        _ => Ok(Exit::Completed),
                    }
                }
            },
        );
        task.await.expect("supervisor itself never panics");
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        let s = &statuses.snapshot()[0];
        assert_eq!(s.state, TaskState::Completed);
        assert_eq!(s.restarts, 2);
        assert!(s
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("bug in connector")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_ends_in_failed_without_a_restart() {
        let statuses = Statuses::default();
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&attempts);
        let task = supervise(
            "poisoned".into(),
            "sink",
            statuses.clone(),
            Shutdown::new(),
            move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    Err(ConnectorError::user(
                        "record t/0@4 failed for good: HTTP 400",
                    ))
                }
            },
        );
        task.await.expect("supervisor itself never panics");
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "no restart loop");
        let s = &statuses.snapshot()[0];
        assert!(
            matches!(&s.state, TaskState::Failed { reason } if reason.contains("t/0@4")),
            "{s:?}"
        );
        assert_eq!(s.restarts, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_backoff_stops_the_task() {
        let statuses = Statuses::default();
        let shutdown = Shutdown::new();
        let task = supervise(
            "down".into(),
            "sink",
            statuses.clone(),
            shutdown.clone(),
            |_| async { Err(ConnectorError::external("target down")) },
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(matches!(
            statuses.snapshot()[0].state,
            TaskState::Restarting { .. }
        ));
        shutdown.cancel();
        task.await.expect("stops");
        assert_eq!(statuses.snapshot()[0].state, TaskState::Stopped);
    }
}
