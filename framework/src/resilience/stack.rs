//! The layer stack every outbound call of a connector goes through, in this
//! order (written here and nowhere else):
//!
//! 1. **circuit breaker** (per target key): open means wait (a sink: its
//!    partitions fill up and pause, nothing is dropped) or, for a caller that
//!    can skip (a poll source), [`CallError::Open`] at once;
//! 2. **bulkhead** (per target key, if configured): wait for a free slot;
//! 3. **rate limit** (per target key, shared by the process): wait for a
//!    slot — last before the attempt, so a request never goes out on an
//!    old slot (a `Retry-After` that came while it waited for the
//!    bulkhead still holds it back);
//! 4. **timeout**: the attempt (request sent, answer read) within `timeout`;
//! 5. the answer teaches the rate limiter (advertised limits, `Retry-After`)
//!    and the breaker (a connection failure, a timeout or a 5xx in
//!    `retry_on` is a failure; a 4xx is the request's fault, and a 429 is
//!    the limiter's business, so neither counts against the target);
//! 6. **retry**: a connection failure, a timeout or a `retry_on` status is
//!    tried again after exponential backoff with full jitter (at least the
//!    `Retry-After`), up to `max_attempts` and `max_elapsed`; the breaker
//!    and the limiter are asked again before each attempt, and no bulkhead
//!    slot is held while waiting.
//!
//! The stack hands back the last answer, whatever its status: what a 3xx or
//! a 4xx means is the connector's to say (its body usually tells why). It
//! fails only when no answer came ([`CallError::Failed`]) or the breaker
//! is open for a caller that skips ([`CallError::Open`]).

use super::circuit_breaker::{Admission, CircuitState, Pass};
use super::config::ResilienceConfig;
use super::retry::{retry_after, RetryPolicy, Verdict};
use super::targets::{self, Target};
use crate::error::ConnectorError;
use crate::telemetry::metrics as m;
use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// An answer from a target: what the layers read of it.
pub trait Answer {
    fn status(&self) -> u16;
    fn headers(&self) -> &HeaderMap;
}

/// What a caller does while the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenOpen {
    /// Wait until it lets calls through (sinks: nothing is dropped).
    Wait,
    /// Return [`CallError::Open`] at once (poll sources skip the poll and
    /// keep their position).
    Skip,
}

/// Why a call has no answer.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The target's breaker is open until `until`.
    Open { target: String, until: Instant },
    /// The last attempt's failure (retryable if it may pass later).
    Failed(ConnectorError),
}

impl CallError {
    /// As a connector error (an open breaker is retryable, the target's fault).
    pub fn into_connector_error(self) -> ConnectorError {
        match self {
            Self::Open { target, until } => ConnectorError::external(format!(
                "the circuit breaker of {target} is open for {:?}",
                until.saturating_duration_since(Instant::now())
            )),
            Self::Failed(e) => e,
        }
    }
}

/// One connector's outbound stack. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

struct Inner {
    /// No layers: one attempt, as is (the benchmarks' baseline).
    bare: bool,
    connector: String,
    config: ResilienceConfig,
    retry: RetryPolicy,
    targets: Mutex<HashMap<String, Target>>,
    retries: metrics::Counter,
}

/// Frees an admitted breaker slot if the attempt ends without an outcome
/// (cancelled mid-call).
struct Admitted<'a> {
    target: &'a Target,
    pass: Pass,
    done: bool,
}

impl Admitted<'_> {
    fn record(mut self, failed: bool) {
        self.done = true;
        self.target.breaker.record(self.pass, failed);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.target.breaker.release(self.pass);
        }
    }
}

impl Outbound {
    pub fn new(connector: &str, config: &ResilienceConfig) -> Self {
        Self::build(connector, config, false)
    }

    /// A stack without layers: each call is one attempt, unguarded. Only
    /// for measuring what the layers cost (`BENCHMARKS.md`); a connector
    /// never runs like this.
    #[doc(hidden)]
    pub fn bare(connector: &str, config: &ResilienceConfig) -> Self {
        Self::build(connector, config, true)
    }

    fn build(connector: &str, config: &ResilienceConfig, bare: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                bare,
                connector: connector.to_owned(),
                retry: RetryPolicy::new(config.retry.clone()),
                config: config.clone(),
                targets: Mutex::new(HashMap::new()),
                retries: metrics::counter!(m::OUTBOUND_RETRIES_TOTAL, "connector" => connector.to_owned()),
            }),
        }
    }

    pub fn config(&self) -> &ResilienceConfig {
        &self.inner.config
    }

    pub fn retry(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// Whether an answer with `status` is worth retrying (per `retry_on`).
    pub fn retries(&self, status: u16) -> bool {
        self.inner.retry.retries(status)
    }

    /// The target `url` is on (by its host and port).
    pub fn target(&self, url: &url::Url) -> Target {
        let host = targets::host_key(url);
        let mut cache = self
            .inner
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .entry(host.clone())
            .or_insert_with(|| targets::target(&self.inner.connector, &self.inner.config, &host))
            .clone()
    }

    /// Makes a call to `url` through every layer; `attempt` makes one
    /// attempt (send the request, read the answer) and maps a transport
    /// failure to a retryable error.
    pub async fn call<A, F, Fut>(
        &self,
        url: &url::Url,
        when_open: WhenOpen,
        mut attempt: F,
    ) -> Result<A, CallError>
    where
        A: Answer,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<A, ConnectorError>>,
    {
        if self.inner.bare {
            return attempt().await.map_err(CallError::Failed);
        }
        let target = self.target(url);
        let state = metrics::gauge!(m::CIRCUIT_STATE, "target" => target.breaker_key.clone());
        let retry = &self.inner.retry;
        let mut backoff = retry.backoff();
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            // 1. Breaker.
            let pass = loop {
                match target.breaker.admit() {
                    Admission::Allowed(pass) => break pass,
                    Admission::OpenUntil(until) => {
                        state.set(target.breaker.state().gauge());
                        metrics::counter!(m::CIRCUIT_REJECTED_TOTAL, "target" => target.breaker_key.clone()).increment(1);
                        if when_open == WhenOpen::Skip {
                            return Err(CallError::Open {
                                target: target.breaker_key.clone(),
                                until,
                            });
                        }
                        tokio::time::sleep_until(until).await;
                    }
                }
            };
            let admitted = Admitted {
                target: &target,
                pass,
                done: false,
            };
            // 2. Bulkhead; 3. rate limit.
            let permit = match &target.bulkhead {
                Some(b) => Some(b.enter().await),
                None => None,
            };
            let ticket = target.limiter.acquire().await;
            // The breaker may have opened while this call waited for the
            // bulkhead or the limiter: ask again rather than send.
            if !pass.probe && target.breaker.state() == CircuitState::Open {
                drop(permit);
                drop(admitted);
                continue;
            }
            // 4. One attempt within the timeout.
            attempts += 1;
            let timeout = self.inner.config.timeout;
            let outcome = match tokio::time::timeout(timeout, attempt()).await {
                Ok(r) => r,
                Err(_) => Err(ConnectorError::external(format!(
                    "{}: no answer within the timeout ({timeout:?})",
                    crate::telemetry::redact::url(url.as_str())
                ))),
            };
            drop(permit);
            // 5. Learn from the outcome.
            let (verdict, wait_floor) = match &outcome {
                Ok(answer) => {
                    let status = answer.status();
                    target.limiter.observe(ticket, status, answer.headers());
                    self.publish_usage(&target);
                    let verdict = retry.status_verdict(status);
                    let target_trouble =
                        verdict == Verdict::Retry && status != 429 && status >= 500
                            || status == 408;
                    admitted.record(target_trouble);
                    let floor = matches!(status, 429 | 503)
                        .then(|| retry_after(answer.headers()))
                        .flatten();
                    (verdict, floor)
                }
                Err(e) if e.is_retryable() => {
                    admitted.record(true);
                    (Verdict::Retry, None)
                }
                Err(_) => {
                    drop(admitted);
                    (Verdict::Permanent, None)
                }
            };
            state.set(target.breaker.state().gauge());
            if verdict != Verdict::Retry {
                return outcome.map_err(CallError::Failed);
            }
            // 6. Retry, or give up with what the last attempt gave.
            match retry.next_wait(&mut backoff, attempts, started.elapsed(), wait_floor) {
                Some(wait) => {
                    self.inner.retries.increment(1);
                    if let Err(e) = &outcome {
                        tracing::debug!(connector = %self.inner.connector, error = %e, attempts, retry_in = ?wait, "call failed; retrying");
                    }
                    tokio::time::sleep(wait).await;
                }
                None => return outcome.map_err(CallError::Failed),
            }
        }
    }

    fn publish_usage(&self, target: &Target) {
        if let (Some(limit), remaining) = target.limiter.usage() {
            let key = target.limiter_key.clone();
            metrics::gauge!(m::RATE_LIMIT_LIMIT, "target" => key.clone()).set(limit as f64);
            if let Some(r) = remaining {
                metrics::gauge!(m::RATE_LIMIT_REMAINING, "target" => key.clone()).set(r as f64);
                if limit > 0 {
                    metrics::gauge!(m::RATE_LIMIT_UTILIZATION, "target" => key)
                        .set(1.0 - (r.min(limit) as f64 / limit as f64));
                }
            }
        }
    }
}

/// A tiny wait used by callers that poll the breaker (see [`WhenOpen::Skip`]).
pub fn until_open_ends(e: &CallError) -> Option<Duration> {
    match e {
        CallError::Open { until, .. } => Some(until.saturating_duration_since(Instant::now())),
        CallError::Failed(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::config::{CircuitBreakerConfig, RetryConfig};
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Fake {
        status: u16,
        headers: HeaderMap,
    }

    impl Answer for Fake {
        fn status(&self) -> u16 {
            self.status
        }
        fn headers(&self) -> &HeaderMap {
            &self.headers
        }
    }

    fn answer(status: u16) -> Result<Fake, ConnectorError> {
        Ok(Fake {
            status,
            headers: HeaderMap::new(),
        })
    }

    fn config() -> ResilienceConfig {
        ResilienceConfig {
            retry: RetryConfig {
                max_attempts: NonZeroU32::new(4).expect("non-zero"),
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                ..RetryConfig::default()
            },
            circuit_breaker: CircuitBreakerConfig {
                min_calls: NonZeroU32::new(4).expect("non-zero"),
                open_for: Duration::from_secs(10),
                half_open_probes: NonZeroU32::new(1).expect("non-zero"),
                ..CircuitBreakerConfig::default()
            },
            timeout: Duration::from_secs(2),
            ..ResilienceConfig::default()
        }
    }

    /// Each test its own target (the registry is process-wide).
    fn url(test: &str) -> url::Url {
        url::Url::parse(&format!("http://{test}.test:80/x")).expect("url")
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_retryable_status_and_returns_the_success() {
        let out = Outbound::new("t1", &config());
        let calls = AtomicU32::new(0);
        let got = out
            .call(&url("retries"), WhenOpen::Wait, || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { answer(if n < 2 { 503 } else { 200 }) }
            })
            .await
            .map(|a| a.status);
        assert_eq!(got.ok(), Some(200));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_4xx_is_not_retried_and_comes_back_to_the_caller() {
        let out = Outbound::new("t2", &config());
        let calls = AtomicU32::new(0);
        let got = out
            .call(&url("four"), WhenOpen::Wait, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { answer(404) }
            })
            .await
            .map(|a| a.status);
        assert_eq!(got.ok(), Some(404));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_the_last_answer() {
        let out = Outbound::new("t3", &config());
        let calls = AtomicU32::new(0);
        let got = out
            .call(&url("gives-up"), WhenOpen::Wait, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { answer(502) }
            })
            .await
            .map(|a| a.status);
        assert_eq!(got.ok(), Some(502));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_times_out_and_is_retried() {
        let out = Outbound::new("t4", &config());
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let got = out
            .call(&url("hangs"), WhenOpen::Wait, || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        std::future::pending::<()>().await;
                    }
                    answer(200)
                }
            })
            .await
            .map(|a| a.status);
        assert_eq!(got.ok(), Some(200));
        assert!(started.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_out() {
        let out = Outbound::new("t5", &config());
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let got = out
            .call(&url("retry-after"), WhenOpen::Wait, || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        let mut headers = HeaderMap::new();
                        headers.insert("retry-after", "5".parse().expect("value"));
                        return Ok(Fake {
                            status: 429,
                            headers,
                        });
                    }
                    answer(200)
                }
            })
            .await
            .map(|a| a.status);
        assert_eq!(got.ok(), Some(200));
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_lets_only_the_probe_through() {
        let out = Outbound::new("t6", &config());
        let u = url("breaker");
        let calls = Arc::new(AtomicU32::new(0));
        let failing = || {
            let calls = Arc::clone(&calls);
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { answer(503) }
            }
        };
        // 4 attempts, all failing: the breaker opens.
        let _ = out.call(&u, WhenOpen::Wait, failing()).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // A skipping caller is told at once, and the target sees nothing.
        let skipped = out.call(&u, WhenOpen::Skip, failing()).await;
        assert!(matches!(skipped, Err(CallError::Open { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // A waiting caller waits out `open_for`, then its probe goes.
        let started = Instant::now();
        let ok = out
            .call(&u, WhenOpen::Wait, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { answer(200) }
            })
            .await
            .map(|a| a.status);
        assert_eq!(ok.ok(), Some(200));
        assert!(
            started.elapsed() >= Duration::from_secs(9),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 5, "one probe");
        assert_eq!(
            targets::circuit_of("t6"),
            Some(super::super::circuit_breaker::CircuitState::Closed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_attempt_error_is_returned_at_once() {
        let out = Outbound::new("t7", &config());
        let calls = AtomicU32::new(0);
        let got = out
            .call(&url("permanent"), WhenOpen::Wait, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<Fake, _>(ConnectorError::user("bad auth config")) }
            })
            .await;
        assert!(matches!(got, Err(CallError::Failed(e)) if !e.is_retryable()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
