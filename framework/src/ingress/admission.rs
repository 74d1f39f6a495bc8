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

/// Budgets kept for at most this many senders. At the cap, budgets that
/// have recovered their whole burst are forgotten (a fresh one is the
/// same; at most once a second, the scan being linear); senders that still
/// find no room share one overflow budget. Memory stays bounded whatever
/// addresses a flood comes from.
const MAX_TRACKED: usize = 10_000;

/// Whose budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Whose {
    /// `per: all`.
    Everyone,
    /// An IPv4 address, or an IPv6 /64 (one host's usual allocation).
    Sender(IpAddr),
    /// New senders while the table is full.
    Overflow,
}

#[derive(Debug)]
struct Budgets {
    table: HashMap<Whose, Gcra>,
    swept: Option<Instant>,
}

/// The admission control of one endpoint.
#[derive(Debug)]
pub struct Admission {
    rate: AcceptRate,
    budgets: Mutex<Budgets>,
}

impl Admission {
    pub fn new(rate: AcceptRate) -> Self {
        Self {
            rate,
            budgets: Mutex::new(Budgets {
                table: HashMap::new(),
                swept: None,
            }),
        }
    }

    /// `Ok` to take the request from `peer`, else how long to wait.
    pub fn admit(&self, peer: IpAddr) -> Result<(), Duration> {
        let mut key = match self.rate.per {
            Per::All => Whose::Everyone,
            Per::Ip => Whose::Sender(match peer {
                // A dual-stack listener sees IPv4 senders as `::ffff:a.b.c.d`:
                // each keeps its own budget, not one for all of IPv4.
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => {
                        let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                        IpAddr::V6(prefix.into())
                    }
                },
                v4 => v4,
            }),
        };
        let now = Instant::now();
        let mut budgets = self
            .budgets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if budgets.table.len() >= MAX_TRACKED && !budgets.table.contains_key(&key) {
            if budgets
                .swept
                .is_none_or(|t| now >= t + Duration::from_secs(1))
            {
                budgets.table.retain(|_, g| !g.idle(now));
                budgets.swept = Some(now);
            }
            if budgets.table.len() >= MAX_TRACKED {
                key = Whose::Overflow;
            }
        }
        let gcra = budgets
            .table
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
    async fn a_flood_from_many_addresses_is_bounded_and_shares_one_budget() {
        let a = Admission::new(rate(Per::Ip));
        let tracked = |a: &Admission| {
            a.budgets
                .lock()
                .map(|b| b.table.len())
                .unwrap_or(usize::MAX)
        };
        // No budget recovers during the flood (time stands still).
        for i in 0..(MAX_TRACKED as u32 * 2) {
            let _ = a.admit(IpAddr::from(i.to_be_bytes()));
        }
        assert!(tracked(&a) <= MAX_TRACKED + 1, "{}", tracked(&a));
        // Past the cap, new senders draw on one overflow budget: its burst,
        // then refusals.
        let fresh = |n: u32| IpAddr::from((0xC000_0000 + n).to_be_bytes());
        let admitted = (0..10).filter(|&n| a.admit(fresh(n)).is_ok()).count();
        assert_eq!(admitted, 0, "the overflow budget was spent by the flood");
        // Once budgets have recovered, a new sender gets its own again.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(a.admit(fresh(99)).is_ok());
        assert!(tracked(&a) < 10, "idle budgets forgotten: {}", tracked(&a));
    }

    #[tokio::test(start_paused = true)]
    async fn one_ipv6_host_is_one_sender() {
        let a = Admission::new(rate(Per::Ip));
        for i in 0..3u16 {
            assert!(a
                .admit(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, 0, 0, 1).into())
                .is_ok());
        }
        let other_address_same_64 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 9, 9, 9, 9);
        assert!(a.admit(other_address_same_64.into()).is_err());
        assert!(a
            .admit(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1).into())
            .is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn ipv4_senders_on_a_dual_stack_socket_are_not_one_sender() {
        let a = Admission::new(rate(Per::Ip));
        let mapped = |last| IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, last).to_ipv6_mapped());
        let burst = (0..10).take_while(|_| a.admit(mapped(1)).is_ok()).count();
        assert!(burst < 10, "the first sender's budget runs out");
        assert!(
            a.admit(mapped(2)).is_ok(),
            "another IPv4 sender seen as ::ffff:a.b.c.d has its own budget"
        );
        assert!(
            a.admit(IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, 1)))
                .is_err(),
            "the same sender, whichever way it is seen, shares one budget"
        );
    }
}
