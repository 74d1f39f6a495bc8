//! A circuit breaker: closed, open, half-open.
//!
//! **Closed**: calls go through; each outcome is counted in a sliding window
//! (`window`, kept as ten buckets). When the window holds at least
//! `min_calls` and the failures are at least `failure_rate` of them, the
//! breaker opens. **Open**: no call goes out for `open_for`; callers are told
//! until when ([`Admission::OpenUntil`]) and wait (a sink) or skip (a poll
//! source) — readiness as backpressure, never a dropped record. **Half-open**:
//! `half_open_probes` calls are let through; if all succeed the breaker
//! closes with an empty window, the first failure opens it again.
//!
//! A failure is what says the target is in trouble (a connection failure, a
//! timeout, a `retry_on` status), not a 4xx about the request itself. Time
//! is tokio's, so tests run it with `tokio::time::pause()`.

use super::config::CircuitBreakerConfig;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The breaker's state, as `/connectors` and the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The `ferry_circuit_state` gauge's value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

/// A call let through: report its outcome with [`CircuitBreaker::record`]
/// (or [`CircuitBreaker::release`] if it never reached the target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// A half-open probe.
    pub probe: bool,
    /// Which half-open period a probe belongs to: a probe of an earlier one
    /// that ends late does not count in the current one.
    generation: u64,
}

/// Whether a call may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go.
    Allowed(Pass),
    /// Not before this instant (open, or every probe slot taken).
    OpenUntil(Instant),
}

const BUCKETS: u32 = 10;

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped each time the breaker goes half-open.
    generation: u64,
    /// `(bucket start, calls, failures)`, oldest first.
    buckets: std::collections::VecDeque<(Instant, u32, u32)>,
}

/// One target's breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                buckets: std::collections::VecDeque::new(),
            }),
        }
    }

    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state now (an open breaker whose time is up reads half-open).
    pub fn state(&self) -> CircuitState {
        match self.lock().state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if Instant::now() >= until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Asks to make a call.
    pub fn admit(&self) -> Admission {
        let now = Instant::now();
        let mut inner = self.lock();
        if let State::Open { until } = inner.state {
            if now < until {
                return Admission::OpenUntil(until);
            }
            inner.state = State::HalfOpen {
                in_flight: 0,
                succeeded: 0,
            };
            inner.generation += 1;
        }
        let generation = inner.generation;
        match &mut inner.state {
            State::Closed => Admission::Allowed(Pass {
                probe: false,
                generation,
            }),
            State::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if *in_flight + *succeeded < self.config.half_open_probes.get() {
                    *in_flight += 1;
                    Admission::Allowed(Pass {
                        probe: true,
                        generation,
                    })
                } else {
                    // Every probe is out: ask again shortly.
                    Admission::OpenUntil(now + self.probe_wait())
                }
            }
            State::Open { until } => Admission::OpenUntil(*until),
        }
    }

    fn probe_wait(&self) -> Duration {
        (self.config.open_for / 10).clamp(Duration::from_millis(10), Duration::from_millis(500))
    }

    /// Reports the outcome of an admitted call: `failed` when it says the
    /// target is in trouble.
    pub fn record(&self, pass: Pass, failed: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        let current = inner.generation == pass.generation;
        match &mut inner.state {
            State::HalfOpen {
                in_flight,
                succeeded,
            } if pass.probe && current => {
                *in_flight = in_flight.saturating_sub(1);
                if failed {
                    inner.state = State::Open {
                        until: now + self.config.open_for,
                    };
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.half_open_probes.get() {
                        inner.state = State::Closed;
                        inner.buckets.clear();
                    }
                }
            }
            State::Closed if current => {
                self.count(&mut inner, now, failed);
                if self.tripped(&inner) {
                    inner.state = State::Open {
                        until: now + self.config.open_for,
                    };
                    inner.buckets.clear();
                }
            }
            // A call admitted before the breaker opened, or a stale probe:
            // the state already reflects newer news.
            _ => {}
        }
    }

    /// An admitted call that never reached the target (cancelled, refused
    /// by a later layer): frees its probe slot, counts nothing.
    pub fn release(&self, pass: Pass) {
        if !pass.probe {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != pass.generation {
            return;
        }
        if let State::HalfOpen { in_flight, .. } = &mut inner.state {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn count(&self, inner: &mut Inner, now: Instant, failed: bool) {
        let width = self.config.window / BUCKETS;
        while inner
            .buckets
            .front()
            .is_some_and(|(start, _, _)| now.duration_since(*start) >= self.config.window)
        {
            inner.buckets.pop_front();
        }
        match inner.buckets.back_mut() {
            Some((start, calls, failures)) if now.duration_since(*start) < width => {
                *calls += 1;
                *failures += u32::from(failed);
            }
            _ => inner.buckets.push_back((now, 1, u32::from(failed))),
        }
    }

    fn tripped(&self, inner: &Inner) -> bool {
        let (calls, failures) = inner
            .buckets
            .iter()
            .fold((0u32, 0u32), |(c, f), (_, bc, bf)| (c + bc, f + bf));
        calls >= self.config.min_calls.get()
            && f64::from(failures) >= self.config.failure_rate * f64::from(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(CircuitBreakerConfig {
            failure_rate: 0.5,
            min_calls: NonZeroU32::new(4).expect("non-zero"),
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_probes: NonZeroU32::new(2).expect("non-zero"),
            ..CircuitBreakerConfig::default()
        })
    }

    fn call(b: &CircuitBreaker, failed: bool) -> Admission {
        let a = b.admit();
        if let Admission::Allowed(pass) = a {
            b.record(pass, failed);
        }
        a
    }

    fn probe(b: &CircuitBreaker) -> Pass {
        match b.admit() {
            Admission::Allowed(pass) if pass.probe => pass,
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    fn is_probe(a: Admission) -> bool {
        matches!(a, Admission::Allowed(p) if p.probe)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_only_with_enough_calls_and_failures() {
        let b = breaker();
        for _ in 0..3 {
            call(&b, true);
        }
        assert_eq!(b.state(), CircuitState::Closed, "3 calls < min_calls");
        call(&b, false);
        assert_eq!(b.state(), CircuitState::Open, "3 of 4 failed");
        assert!(matches!(b.admit(), Admission::OpenUntil(_)));

        let b = breaker();
        for failed in [true, false, false, false, false, false] {
            call(&b, failed);
        }
        assert_eq!(b.state(), CircuitState::Closed, "1 of 6 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_slide_out_of_the_window() {
        let b = breaker();
        for _ in 0..3 {
            call(&b, true);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        call(&b, false);
        call(&b, true);
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "only 2 calls in the window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stays_open_for_open_for_then_lets_only_the_probes_through() {
        let b = breaker();
        for _ in 0..4 {
            call(&b, true);
        }
        let Admission::OpenUntil(until) = b.admit() else {
            panic!("open");
        };
        assert_eq!(until - Instant::now(), Duration::from_secs(5));
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(matches!(b.admit(), Admission::OpenUntil(_)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        // Two probes out; a third call waits.
        let (p1, p2) = (probe(&b), probe(&b));
        assert!(matches!(b.admit(), Admission::OpenUntil(_)));
        b.record(p1, false);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.record(p2, false);
        assert_eq!(b.state(), CircuitState::Closed, "both probes succeeded");
        assert!(matches!(b.admit(), Admission::Allowed(p) if !p.probe));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again() {
        let b = breaker();
        for _ in 0..4 {
            call(&b, true);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(is_probe(call(&b, true)));
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(matches!(b.admit(), Admission::OpenUntil(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_frees_its_slot() {
        let b = breaker();
        for _ in 0..4 {
            call(&b, true);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..2 {
            let p = probe(&b);
            b.release(p);
        }
        assert!(is_probe(b.admit()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_probe_of_an_earlier_half_open_period_does_not_count() {
        let b = breaker();
        for _ in 0..4 {
            call(&b, true);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let (slow, failing) = (probe(&b), probe(&b));
        b.record(failing, true);
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        let current = probe(&b);
        // The slow probe of the first period succeeds now: it neither
        // counts towards closing nor frees a slot of the current period.
        b.record(slow, false);
        b.release(slow);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let other = probe(&b);
        assert!(
            matches!(b.admit(), Admission::OpenUntil(_)),
            "two probes out"
        );
        b.record(current, false);
        b.record(other, false);
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
