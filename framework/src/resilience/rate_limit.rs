//! A rate limit per target key, shared by every task of the process that
//! calls the target (a poll source and a sink on one API share its budget).
//!
//! Two parts, both of which a request must pass:
//! - **A fixed rate** (`requests_per_second`, `burst`): GCRA, the
//!   generic cell rate algorithm — one "theoretical arrival time" per key,
//!   no per-request bookkeeping.
//! - **The API's own word** (`from_headers`): `Retry-After` stops every
//!   request until its time; `X-RateLimit-Limit/Remaining/Reset`, the IETF
//!   draft's `RateLimit-Limit/Remaining/Reset`, `RateLimit: limit=, remaining=,
//!   reset=` and `RateLimit: "p";r=;t=` with `RateLimit-Policy: "p";q=;w=`
//!   give a budget until the window resets. Ferry never sends more than the
//!   budget: an answer's `remaining` is lowered by the requests sent after
//!   that request (the API had not counted them yet). Below half of the
//!   limit it also spreads what is left over the rest of the window, so it
//!   slows down before the limit rather than hitting it. Once a window has
//!   passed, `limit` requests may go before an answer tells the new budget.
//!   A reset is taken as given, and as at least one second; an API that
//!   sends `remaining` without a reset is assumed to reset after the
//!   `RateLimit-Policy` window (`w=`), else after one second (the next
//!   answer corrects the budget). Resets and `Retry-After` longer than an
//!   hour count as an hour, so a garbage value cannot stop a target for
//!   good. A reset beyond a year is a Unix time, in seconds, or in
//!   milliseconds beyond 10^11.
//!
//! Why not the `governor` crate: its quota is fixed when the limiter is
//! built, and this limit changes with every answer; and it reads its own
//! clock, where these tests run on tokio's paused one. GCRA itself is the
//! few lines of [`Gcra`].

use super::config::RateLimitConfig;
use super::retry::MAX_ADVERTISED_WAIT;
use reqwest::header::HeaderMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The generic cell rate algorithm: `interval` between requests on
/// average, up to `burst` at once.
#[derive(Debug, Clone)]
pub(crate) struct Gcra {
    interval: Duration,
    burst: u32,
    tat: Option<Instant>,
}

impl Gcra {
    /// `requests_per_second` on average (more than 0), up to `burst` at once.
    pub(crate) fn new(requests_per_second: f64, burst: u32) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / requests_per_second),
            burst,
            tat: None,
        }
    }

    /// Takes a cell now if one is free, else says when one will be.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        let at = self.ready_at(now);
        if at > now {
            return Err(at);
        }
        self.take(now);
        Ok(())
    }

    /// Whether this limiter has recovered its whole burst by `now` (it can
    /// be forgotten: a fresh one behaves the same).
    pub(crate) fn idle(&self, now: Instant) -> bool {
        self.tat.is_none_or(|t| t <= now)
    }

    /// When the next request may go (now, or later).
    fn ready_at(&self, now: Instant) -> Instant {
        let tolerance = self.interval * self.burst.saturating_sub(1);
        match self.tat {
            Some(tat) if tat > now + tolerance => tat - tolerance,
            _ => now,
        }
    }

    fn take(&mut self, now: Instant) {
        let base = self.tat.map_or(now, |t| t.max(now));
        self.tat = Some(base + self.interval);
    }
}

/// What an API said about its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Advertised {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Time until the window resets.
    pub reset: Option<Duration>,
    /// The window's length (`RateLimit-Policy: ...;w=`).
    pub window: Option<Duration>,
}

impl Advertised {
    /// Reads the headers an API may send (see the module doc).
    pub fn from_headers(h: &HeaderMap) -> Self {
        let num = |name: &str| -> Option<u64> {
            h.get(name)?
                .to_str()
                .ok()?
                .split(',')
                .next()?
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| v as u64)
        };
        let mut a = Self {
            limit: num("x-ratelimit-limit").or_else(|| num("ratelimit-limit")),
            remaining: num("x-ratelimit-remaining").or_else(|| num("ratelimit-remaining")),
            reset: num("x-ratelimit-reset")
                .or_else(|| num("ratelimit-reset"))
                .map(reset_duration),
            window: None,
        };
        if let Some(v) = h.get("ratelimit").and_then(|v| v.to_str().ok()) {
            // Draft 7: `limit=100, remaining=50, reset=30`; draft 8+: `"p";r=50;t=30`.
            for (k, n) in params(v) {
                match k {
                    "limit" => a.limit = a.limit.or(Some(n)),
                    "remaining" | "r" => a.remaining = Some(n),
                    "reset" | "t" => a.reset = Some(reset_duration(n)),
                    _ => {}
                }
            }
        }
        if let Some(v) = h.get("ratelimit-policy").and_then(|v| v.to_str().ok()) {
            for (k, n) in params(v) {
                if k == "q" && a.limit.is_none() {
                    a.limit = Some(n);
                }
                if k == "w" {
                    a.window = Some(Duration::from_secs(n).min(MAX_ADVERTISED_WAIT));
                }
                // `100;w=60` (draft 7): the bare number is the quota.
                if k.is_empty() && a.limit.is_none() {
                    a.limit = Some(n);
                }
            }
        }
        a
    }
}

/// `X-RateLimit-Reset` is seconds from now, or (GitHub and others) a Unix
/// timestamp: a value beyond a year is taken as one.
fn reset_duration(n: u64) -> Duration {
    const YEAR: u64 = 365 * 24 * 3600;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let d = if n > 100_000_000_000 {
        Duration::from_millis(n).saturating_sub(now)
    } else if n > YEAR {
        Duration::from_secs(n).saturating_sub(now)
    } else {
        Duration::from_secs(n)
    };
    d.min(MAX_ADVERTISED_WAIT)
}

/// `key=number` pairs of a structured header, separated by `,` or `;`; a bare
/// number has an empty key. Quoted names and unparseable values are skipped.
fn params(v: &str) -> impl Iterator<Item = (&str, u64)> {
    v.split([',', ';']).filter_map(|p| {
        let p = p.trim();
        let (k, n) = p.split_once('=').unwrap_or(("", p));
        n.trim().parse::<u64>().ok().map(|n| (k.trim(), n))
    })
}

/// What a request must wait for, with the slot it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    seq: u64,
}

#[derive(Debug, Default)]
struct Quota {
    /// Requests sent so far (a ticket's `seq` is its place in this count).
    sent: u64,
    /// No request before this (`Retry-After`).
    blocked_until: Option<Instant>,
    limit: Option<u64>,
    /// Requests that may still go in the current window.
    budget: Option<u64>,
    window_end: Option<Instant>,
    /// The last reset an answer gave: how long a window is assumed to last
    /// when one starts without news.
    window_len: Duration,
    last_sent: Option<Instant>,
}

/// One target's rate limit.
#[derive(Debug)]
pub struct RateLimiter {
    from_headers: bool,
    inner: Mutex<(Option<Gcra>, Quota)>,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        let gcra = config
            .requests_per_second
            .map(|rps| Gcra::new(rps, config.burst.get()));
        Self {
            from_headers: config.from_headers,
            inner: Mutex::new((gcra, Quota::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Gcra>, Quota)> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot now, or says until when to wait.
    pub fn try_acquire(&self) -> Result<Ticket, Instant> {
        let now = Instant::now();
        let mut guard = self.lock();
        let (gcra, quota) = &mut *guard;
        let mut ready = gcra.as_ref().map_or(now, |g| g.ready_at(now));
        if let Some(until) = quota.blocked_until {
            if until > now {
                ready = ready.max(until);
            } else {
                quota.blocked_until = None;
            }
        }
        if let Some(end) = quota.window_end {
            if end <= now {
                // A new window: `limit` may go before an answer tells more,
                // in a window assumed as long as the longest seen (should no
                // answer come, the budget comes back after it).
                quota.window_end = Some(now + quota.window_len.max(Duration::from_secs(1)));
                quota.budget = quota.limit;
            }
        }
        match (quota.budget, quota.window_end) {
            (Some(0), Some(end)) => ready = ready.max(end),
            (Some(0), None) => ready = ready.max(now + Duration::from_secs(1)),
            (Some(b), Some(end)) => {
                // Below half the limit: spread what is left over the window.
                let limit = quota.limit.unwrap_or(b);
                if b.saturating_mul(2) < limit {
                    let spacing = (end - now) / u32::try_from(b).unwrap_or(u32::MAX);
                    if let Some(last) = quota.last_sent {
                        ready = ready.max(last + spacing);
                    }
                }
            }
            _ => {}
        }
        if ready > now {
            return Err(ready);
        }
        if let Some(g) = gcra.as_mut() {
            g.take(now);
        }
        if let Some(b) = quota.budget.as_mut() {
            *b -= 1;
        }
        quota.sent += 1;
        quota.last_sent = Some(now);
        Ok(Ticket { seq: quota.sent })
    }

    /// Waits for a slot.
    pub async fn acquire(&self) -> Ticket {
        loop {
            match self.try_acquire() {
                Ok(t) => return t,
                Err(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// Learns from the answer to the request that held `ticket`.
    pub fn observe(&self, ticket: Ticket, status: u16, headers: &HeaderMap) {
        if !self.from_headers {
            return;
        }
        let now = Instant::now();
        let mut guard = self.lock();
        let quota = &mut guard.1;
        if matches!(status, 429 | 503) {
            if let Some(wait) = super::retry::retry_after(headers) {
                let until = now + wait;
                quota.blocked_until = Some(quota.blocked_until.map_or(until, |u| u.max(until)));
            }
        }
        let a = Advertised::from_headers(headers);
        if a.limit.is_some() {
            quota.limit = a.limit;
        }
        if let Some(remaining) = a.remaining {
            // The API had not counted the requests sent after this one.
            let later = quota.sent.saturating_sub(ticket.seq);
            let budget = remaining.saturating_sub(later);
            quota.budget = Some(quota.budget.map_or(budget, |b| b.min(budget)));
            // Without a reset, the policy's window, else a second: the
            // budget must come back some time, or no request (and so no
            // answer) would ever go again.
            let reset = a.reset.or(a.window).unwrap_or(Duration::from_secs(1));
            quota.window_len = reset;
            let end = now + reset.max(Duration::from_secs(1));
            quota.window_end = Some(quota.window_end.map_or(end, |e| e.max(end)));
        }
        if status == 429 && a.remaining.is_none() && quota.blocked_until.is_none() {
            // Over the limit without saying how long: hold everything for a
            // second (the retry's backoff comes on top).
            quota.blocked_until = Some(now + Duration::from_secs(1));
        }
    }

    /// `(limit, remaining)` as last advertised, for the metrics.
    pub fn usage(&self) -> (Option<u64>, Option<u64>) {
        let guard = self.lock();
        (guard.1.limit, guard.1.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn limiter(rps: Option<f64>, burst: u32) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            requests_per_second: rps,
            burst: NonZeroU32::new(burst).expect("non-zero"),
            ..RateLimitConfig::default()
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_rate_lets_a_burst_go_then_spaces_requests() {
        let l = limiter(Some(10.0), 3);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..13 {
            l.acquire().await;
            at.push(Instant::now() - start);
        }
        assert!(at[..3].iter().all(|d| d.is_zero()), "{at:?}");
        // 13 requests at 10/s with a burst of 3: the last at 1 s.
        assert_eq!(at[12], Duration::from_secs(1));
        for w in at[3..].windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_millis(100));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_stops_every_request_until_its_time() {
        let l = limiter(None, 1);
        let t = l.acquire().await;
        l.observe(t, 429, &headers(&[("retry-after", "3")]));
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        // A Retry-After on a success is not a throttle.
        let t = l.acquire().await;
        l.observe(t, 200, &headers(&[("retry-after", "3")]));
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(Instant::now() - start, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_waits_for_the_reset() {
        let l = limiter(None, 1);
        let t = l.acquire().await;
        l.observe(
            t,
            200,
            &headers(&[
                ("x-ratelimit-limit", "5"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "2"),
            ]),
        );
        let start = Instant::now();
        l.acquire().await;
        let window = Instant::now();
        assert_eq!(window - start, Duration::from_secs(2));
        // No answer comes (the requests fail in transit, say): windows as
        // long as the last one advertised follow, each with the limit.
        let mut at = vec![Duration::ZERO];
        for _ in 0..14 {
            l.acquire().await;
            at.push(Instant::now() - window);
        }
        for k in 0..4u32 {
            let (from, to) = (Duration::from_secs(2) * k, Duration::from_secs(2) * (k + 1));
            let n = at.iter().filter(|d| **d >= from && **d < to).count();
            assert!(n <= 5, "{n} requests in window {k}: {at:?}");
        }
        assert!(
            at[14] < Duration::from_secs(8),
            "the budget came back each window: {at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_without_a_reset_comes_back_after_the_policy_window() {
        let l = limiter(None, 1);
        let t = l.acquire().await;
        l.observe(
            t,
            200,
            &headers(&[("x-ratelimit-limit", "3"), ("x-ratelimit-remaining", "0")]),
        );
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(
            Instant::now() - start,
            Duration::from_secs(1),
            "a second by default"
        );
        let t = l.acquire().await;
        l.observe(
            t,
            200,
            &headers(&[
                ("ratelimit", "\"q\";r=0"),
                ("ratelimit-policy", "\"q\";q=3;w=5"),
            ]),
        );
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(
            Instant::now() - start,
            Duration::from_secs(5),
            "the policy's window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_waits_are_capped_at_an_hour() {
        let l = limiter(None, 1);
        let t = l.acquire().await;
        l.observe(t, 429, &headers(&[("retry-after", "99999999999")]));
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(Instant::now() - start, MAX_ADVERTISED_WAIT);
        for reset in ["1e30", "18446744073709551615"] {
            let t = l.acquire().await;
            l.observe(
                t,
                200,
                &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset)]),
            );
            let start = Instant::now();
            l.acquire().await;
            assert!(Instant::now() - start <= MAX_ADVERTISED_WAIT, "{reset}");
        }
    }

    #[test]
    fn epoch_resets_in_seconds_and_in_milliseconds() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock");
        for value in [
            (now.as_secs() + 60).to_string(),
            (now.as_millis() + 60_000).to_string(),
        ] {
            let a = Advertised::from_headers(&headers(&[("x-ratelimit-reset", &value)]));
            let reset = a.reset.expect("reset");
            assert!(
                reset >= Duration::from_secs(58) && reset <= Duration::from_secs(60),
                "{value}: {reset:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_that_says_nothing_holds_requests_for_a_second() {
        let l = limiter(None, 1);
        let t = l.acquire().await;
        l.observe(t, 429, &HeaderMap::new());
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_are_taken_off_the_advertised_remaining() {
        let l = limiter(None, 1);
        let first = l.acquire().await;
        let _second = l.acquire().await;
        let _third = l.acquire().await;
        // The API counted only the first when it said 2 remain: the other
        // two use them up.
        l.observe(
            first,
            200,
            &headers(&[
                ("x-ratelimit-limit", "3"),
                ("x-ratelimit-remaining", "2"),
                ("x-ratelimit-reset", "10"),
            ]),
        );
        assert!(l.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn below_half_the_limit_what_is_left_is_spread_over_the_window() {
        let l = limiter(None, 1);
        let t = l.acquire().await;
        l.observe(
            t,
            200,
            &headers(&[("ratelimit", "limit=10, remaining=2, reset=4")]),
        );
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
        l.acquire().await;
        // Two left over 4 s: one every 2 s.
        assert_eq!(Instant::now() - start, Duration::from_secs(4));
    }

    #[test]
    fn every_header_style_is_read() {
        let x = Advertised::from_headers(&headers(&[
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "7"),
            ("x-ratelimit-reset", "30"),
        ]));
        assert_eq!(
            x,
            Advertised {
                limit: Some(100),
                remaining: Some(7),
                reset: Some(Duration::from_secs(30)),
                window: None,
            }
        );
        let d6 = Advertised::from_headers(&headers(&[
            ("ratelimit-limit", "100"),
            ("ratelimit-remaining", "7"),
            ("ratelimit-reset", "30"),
        ]));
        assert_eq!(d6, x);
        let d7 = Advertised::from_headers(&headers(&[
            ("ratelimit", "limit=100, remaining=7, reset=30"),
            ("ratelimit-policy", "100;w=60"),
        ]));
        assert_eq!(
            d7,
            Advertised {
                window: Some(Duration::from_secs(60)),
                ..x
            }
        );
        let d9 = Advertised::from_headers(&headers(&[
            ("ratelimit", "\"default\";r=7;t=30"),
            ("ratelimit-policy", "\"default\";q=100;w=60"),
        ]));
        assert_eq!(
            d9,
            Advertised {
                window: Some(Duration::from_secs(60)),
                ..x
            }
        );
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 60;
        let gh = Advertised::from_headers(&headers(&[
            ("x-ratelimit-remaining", "1"),
            ("x-ratelimit-reset", &epoch.to_string()),
        ]));
        let reset = gh.reset.expect("reset");
        assert!(
            reset >= Duration::from_secs(58) && reset <= Duration::from_secs(60),
            "{reset:?}"
        );
        assert_eq!(
            Advertised::from_headers(&headers(&[("x-ratelimit-remaining", "lots")])),
            Advertised::default()
        );
    }
}
