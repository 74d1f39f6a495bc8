//! `accept_rate`: how many requests a connector's endpoint takes per second,
//! per sender IP or overall, before answering 429 with `Retry-After`. This
//! protects Ferry and Kafka from a flood; it is not the outbound
//! `rate_limit` of the resilience layers, which protects a third party.

use crate::resilience::rate_limit::Gcra;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// `accept_rate:` of a push connector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptRate {
    /// Requests accepted per second on average.
    pub requests_per_second: f64,
    /// Requests accepted at once above the steady rate.
    #[serde(default = "default_burst")]
    pub burst: NonZeroU32,
    /// `ip`: a budget per sender address; `all`: one for every sender.
    #[serde(default)]
    pub per: Per,
}

fn default_burst() -> NonZeroU32 {
    NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN)
}

/// Whom a budget is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    #[default]
    Ip,
    All,
}

impl AcceptRate {
    /// The message when it cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.requests_per_second.is_finite()
            && self.requests_per_second >= 0.001
            && self.requests_per_second <= 1_000_000.0)
        {
            return Err(format!(
                "requests_per_second: {} is not between 0.001 and 1000000",
                self.requests_per_second
            ));
        }
        Ok(())
    }
}

/// Budgets kept for at most this many sender addresses; past it, those
/// that have recovered their whole burst are forgotten (a fresh budget is
/// the same), so a scan from many addresses cannot grow memory for good.
const MAX_TRACKED: usize = 10_000;

/// The admission control of one endpoint.
#[derive(Debug)]
pub struct Admission {
    rate: AcceptRate,
    budgets: Mutex<HashMap<Option<IpAddr>, Gcra>>,
}

impl Admission {
    pub fn new(rate: AcceptRate) -> Self {
        Self {
            rate,
            budgets: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` to take the request from `peer`, else how long to wait.
    pub fn admit(&self, peer: IpAddr) -> Result<(), Duration> {
        let key = (self.rate.per == Per::Ip).then_some(peer);
        let now = Instant::now();
        let mut budgets = self
            .budgets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if budgets.len() >= MAX_TRACKED && !budgets.contains_key(&key) {
            budgets.retain(|_, g| !g.idle(now));
        }
        let gcra = budgets
            .entry(key)
            .or_insert_with(|| Gcra::new(self.rate.requests_per_second, self.rate.burst.get()));
        gcra.try_take(now).map_err(|at| at - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per: Per) -> AcceptRate {
        AcceptRate {
            requests_per_second: 10.0,
            burst: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            per,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_steady_rate_per_sender() {
        let a = Admission::new(rate(Per::Ip));
        let (one, two): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        for _ in 0..3 {
            assert!(a.admit(one).is_ok());
        }
        let wait = a.admit(one).err();
        assert!(
            wait.is_some_and(|w| w > Duration::ZERO && w <= Duration::from_millis(100)),
            "{wait:?}"
        );
        // Another sender has its own budget.
        assert!(a.admit(two).is_ok());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(a.admit(one).is_ok());
        assert!(a.admit(one).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn one_budget_for_all_senders() {
        let a = Admission::new(rate(Per::All));
        for i in 0..3u8 {
            assert!(a.admit([10, 0, 0, i].into()).is_ok());
        }
        assert!(a.admit([10, 0, 0, 9].into()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn many_senders_do_not_grow_memory_for_good() {
        let a = Admission::new(rate(Per::Ip));
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let _ = a.admit(IpAddr::from(i.to_be_bytes()));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let _ = a.admit([1, 1, 1, 1].into());
        let tracked = a.budgets.lock().map(|b| b.len()).unwrap_or(usize::MAX);
        assert!(tracked <= MAX_TRACKED, "{tracked}");
    }
}
