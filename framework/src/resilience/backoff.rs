//! Exponential backoff with full jitter (AWS's "full jitter": a random wait
//! between zero and the exponential cap), so many retrying tasks do not
//! hit a recovering peer in lockstep.

use std::time::Duration;

/// A backoff schedule. `next_delay` grows `initial * 2^n` up to `max`, each
/// delay drawn uniformly from `[cap / 2, cap]` (half jitter keeps a floor,
/// so a retry never fires immediately after a failure).
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
        let half = cap / 2;
        let spread = u64::try_from((cap - half).as_millis()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            u64::try_from(uuid::Uuid::new_v4().as_u128() % u128::from(spread + 1)).unwrap_or(0)
        };
        half + Duration::from_millis(jitter)
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
    fn delays_grow_to_the_cap_with_jitter_below_it() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let caps = [100, 200, 400, 800, 1600, 2000, 2000];
        for cap in caps {
            let cap = Duration::from_millis(cap);
            let d = b.next_delay();
            assert!(
                d >= cap / 2 && d <= cap,
                "{d:?} within [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert_eq!(b.cap(), Duration::from_millis(100));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
    }
}
