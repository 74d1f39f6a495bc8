//! Exponential backoff with full jitter (AWS's "full jitter": a random wait
//! between zero and the exponential cap), so many retrying tasks do not
//! hit a recovering peer in lockstep.

use std::time::Duration;

/// A backoff schedule. `next_delay` grows the cap `initial * 2^n` up to
/// `max`, and draws each delay uniformly from `[0, cap]`: full jitter, which
/// spreads retrying clients the most (a caller that must not retry at once,
/// such as a `Retry-After` window, waits for that on top).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The cap for the current attempt, before jitter.
    pub fn cap(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt; advances the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap();
        self.attempt = self.attempt.saturating_add(1);
        let spread = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        let jitter =
            u64::try_from(uuid::Uuid::new_v4().as_u128() % u128::from(spread.saturating_add(1)))
                .unwrap_or(0);
        Duration::from_micros(jitter)
    }

    /// Attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_grow_to_the_max_and_delays_stay_below_them() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let caps = [100, 200, 400, 800, 1600, 2000, 2000];
        for cap in caps {
            let cap = Duration::from_millis(cap);
            assert_eq!(b.cap(), cap);
            let d = b.next_delay();
            assert!(d <= cap, "{d:?} within [0, {cap:?}]");
        }
        b.reset();
        assert_eq!(b.cap(), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_spreads_delays_over_the_whole_range() {
        // 2000 draws from [0, 1s]: both the lowest and the highest tenth
        // are hit (half jitter would never go below 500 ms).
        let (mut low, mut high) = (0, 0);
        for _ in 0..2000 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            let d = b.next_delay();
            low += usize::from(d < Duration::from_millis(100));
            high += usize::from(d > Duration::from_millis(900));
        }
        assert!(low > 50 && high > 50, "low {low}, high {high}");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
    }
}
