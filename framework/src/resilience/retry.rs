//! The retry policy: which outcomes are worth another attempt, how long to
//! wait before it (exponential backoff with full jitter, never less than a
//! `Retry-After`), and when to give up (`max_attempts`, `max_elapsed`).
//! Like tower's `retry::Policy`, it is a small value; [`super::stack`] runs
//! the loop.

use super::backoff::Backoff;
use super::config::RetryConfig;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::{Duration, SystemTime};

/// What one attempt's outcome means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: a success, or an answer that is the caller's to interpret
    /// (a 3xx, a 4xx not in `retry_on`).
    Done,
    /// Worth another attempt (connection failure, timeout, `retry_on` status).
    Retry,
    /// Failed in a way another attempt cannot fix.
    Permanent,
}

/// A call's retry state.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    pub fn new(config: RetryConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// An answer's verdict from its status.
    pub fn status_verdict(&self, status: u16) -> Verdict {
        if self.config.retry_on.contains(&status) {
            Verdict::Retry
        } else {
            Verdict::Done
        }
    }

    /// Whether `status` is one the configuration retries.
    pub fn retries(&self, status: u16) -> bool {
        self.config.retry_on.contains(&status)
    }

    /// A fresh backoff schedule for one call.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.config.initial_backoff, self.config.max_backoff)
    }

    /// The wait before attempt `attempts + 1`, or `None` to give up: after
    /// `max_attempts`, or when waiting would pass `max_elapsed` since the
    /// first attempt. `retry_after` (the peer's own word) is a floor.
    pub fn next_wait(
        &self,
        backoff: &mut Backoff,
        attempts: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempts >= self.config.max_attempts.get() {
            return None;
        }
        let wait = backoff.next_delay().max(retry_after.unwrap_or_default());
        (elapsed.saturating_add(wait) <= self.config.max_elapsed).then_some(wait)
    }
}

/// The longest wait an API's header can impose (`Retry-After`, a rate
/// limit's reset): a garbage value (`Retry-After: 9999999999`) must not
/// stop a target for good. A longer wait is taken as this long; the API
/// says so again if it still means it.
pub const MAX_ADVERTISED_WAIT: Duration = Duration::from_secs(3600);

/// `Retry-After` as a duration from now: delta-seconds or an HTTP date
/// (RFC 9110 §10.2.3), at most [`MAX_ADVERTISED_WAIT`]. A date in the
/// past, or garbage, is no constraint.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_ADVERTISED_WAIT));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    // Dates have one-second resolution: round up so the window is never cut short.
    at.duration_since(SystemTime::now()).ok().map(|d| {
        Duration::from_secs(d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)))
            .min(MAX_ADVERTISED_WAIT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn policy(max_attempts: u32, max_elapsed: Duration) -> RetryPolicy {
        RetryPolicy::new(RetryConfig {
            max_attempts: NonZeroU32::new(max_attempts).expect("non-zero"),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed,
            retry_on: vec![429, 503],
        })
    }

    #[test]
    fn only_configured_statuses_are_retried() {
        let p = policy(3, Duration::from_secs(60));
        assert_eq!(p.status_verdict(503), Verdict::Retry);
        assert_eq!(p.status_verdict(429), Verdict::Retry);
        assert_eq!(p.status_verdict(500), Verdict::Done);
        assert_eq!(p.status_verdict(404), Verdict::Done);
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let p = policy(3, Duration::from_secs(60));
        let mut b = p.backoff();
        assert!(p.next_wait(&mut b, 1, Duration::ZERO, None).is_some());
        assert!(p.next_wait(&mut b, 2, Duration::ZERO, None).is_some());
        assert!(p.next_wait(&mut b, 3, Duration::ZERO, None).is_none());
    }

    #[test]
    fn gives_up_when_the_wait_would_pass_max_elapsed() {
        let p = policy(100, Duration::from_secs(5));
        let mut b = p.backoff();
        assert!(p
            .next_wait(
                &mut b,
                1,
                Duration::from_secs(4),
                Some(Duration::from_secs(2))
            )
            .is_none());
        assert!(p
            .next_wait(
                &mut b,
                1,
                Duration::from_secs(1),
                Some(Duration::from_secs(2))
            )
            .is_some());
    }

    #[test]
    fn retry_after_is_a_floor_for_the_wait() {
        let p = policy(100, Duration::from_secs(600));
        let mut b = p.backoff();
        for _ in 0..20 {
            let w = p
                .next_wait(&mut b, 1, Duration::ZERO, Some(Duration::from_secs(7)))
                .expect("wait");
            assert!(w >= Duration::from_secs(7), "{w:?}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "120".parse().expect("value"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        let later = SystemTime::now() + Duration::from_secs(30);
        h.insert(
            RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().expect("value"),
        );
        let d = retry_after(&h).expect("date");
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(31),
            "{d:?}"
        );
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("value"),
        );
        assert_eq!(retry_after(&h), None, "a past date is no wait");
        h.insert(RETRY_AFTER, "soon".parse().expect("value"));
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "18446744073709551615".parse().expect("value"));
        assert_eq!(
            retry_after(&h),
            Some(MAX_ADVERTISED_WAIT),
            "capped, no overflow"
        );
    }
}
