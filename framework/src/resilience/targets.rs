//! The process's targets: one circuit breaker, one rate limiter and one
//! bulkhead per target key, shared by every connector that calls the same
//! target (so a poll source and a sink on one API share its budget and its
//! breaker). The first connector to use a key sets its policy; a later one
//! configuring the same key differently is warned about and shares the
//! first's.

use super::bulkhead::Bulkhead;
use super::circuit_breaker::{CircuitBreaker, CircuitState};
use super::config::{ResilienceConfig, TargetKeyKind};
use super::rate_limit::RateLimiter;
use crate::telemetry::metrics as m;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

/// `host:port` of `url` (the port the scheme implies when unset).
pub fn host_key(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("unknown");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn key_of(kind: &TargetKeyKind, host: &str) -> String {
    match kind {
        TargetKeyKind::Host => host.to_owned(),
        TargetKeyKind::Named(n) => n.clone(),
    }
}

/// What one call to one target goes through.
#[derive(Debug, Clone)]
pub struct Target {
    pub breaker_key: String,
    pub breaker: Arc<CircuitBreaker>,
    pub limiter_key: String,
    pub limiter: Arc<RateLimiter>,
    pub bulkhead: Option<Arc<Bulkhead>>,
}

#[derive(Default)]
struct Registry {
    breakers: BTreeMap<String, Arc<CircuitBreaker>>,
    limiters: BTreeMap<String, (crate::resilience::config::RateLimitConfig, Arc<RateLimiter>)>,
    bulkheads: BTreeMap<String, Arc<Bulkhead>>,
    /// Connector name to the breaker keys it called.
    used_by: BTreeMap<String, BTreeSet<String>>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

fn lock() -> std::sync::MutexGuard<'static, Registry> {
    registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The target for a call by `connector` to `host` (`host:port`).
pub fn target(connector: &str, config: &ResilienceConfig, host: &str) -> Target {
    let mut r = lock();
    let breaker_key = key_of(&config.circuit_breaker.key, host);
    let breaker = Arc::clone(
        r.breakers
            .entry(breaker_key.clone())
            .and_modify(|b| {
                if b.config() != &config.circuit_breaker {
                    tracing::warn!(connector, target = %breaker_key, "another connector set up this target's circuit breaker differently; its settings apply");
                }
            })
            .or_insert_with(|| {
                metrics::gauge!(m::CIRCUIT_STATE, "target" => breaker_key.clone()).set(0.0);
                Arc::new(CircuitBreaker::new(config.circuit_breaker.clone()))
            }),
    );
    let limiter_key = key_of(&config.rate_limit.key, host);
    let limiter = Arc::clone(
        &r.limiters
            .entry(limiter_key.clone())
            .and_modify(|(c, _)| {
                if c != &config.rate_limit {
                    tracing::warn!(connector, target = %limiter_key, "another connector set up this target's rate limit differently; its settings apply");
                }
            })
            .or_insert_with(|| {
                (
                    config.rate_limit.clone(),
                    Arc::new(RateLimiter::new(&config.rate_limit)),
                )
            })
            .1,
    );
    let bulkhead = config.bulkhead.as_ref().map(|b| {
        let key = key_of(&b.key, host);
        Arc::clone(
            r.bulkheads
                .entry(key.clone())
                .and_modify(|existing| {
                    if existing.max() != b.max_in_flight.get() {
                        tracing::warn!(connector, target = %key, "another connector set up this target's bulkhead differently; its settings apply");
                    }
                })
                .or_insert_with(|| Arc::new(Bulkhead::new(b.max_in_flight.get()))),
        )
    });
    r.used_by
        .entry(connector.to_owned())
        .or_default()
        .insert(breaker_key.clone());
    Target {
        breaker_key,
        breaker,
        limiter_key,
        limiter,
        bulkhead,
    }
}

/// The worst state of the breakers `connector` has called through (`None`
/// before its first call).
pub fn circuit_of(connector: &str) -> Option<CircuitState> {
    let r = lock();
    let keys = r.used_by.get(connector)?;
    keys.iter()
        .filter_map(|k| r.breakers.get(k))
        .map(|b| b.state())
        .max_by_key(|s| match s {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::config::TargetKeyKind;

    #[test]
    fn connectors_calling_one_host_share_its_breaker_and_limiter() {
        let cfg = ResilienceConfig::default();
        let source = target("shared-source", &cfg, "crm.test:443");
        let sink = target("shared-sink", &cfg, "crm.test:443");
        assert!(Arc::ptr_eq(&source.breaker, &sink.breaker));
        assert!(Arc::ptr_eq(&source.limiter, &sink.limiter));
        let other = target("shared-sink", &cfg, "mail.test:443");
        assert!(!Arc::ptr_eq(&other.limiter, &sink.limiter));
    }

    #[test]
    fn a_named_key_shares_one_budget_across_hosts() {
        let mut cfg = ResilienceConfig::default();
        cfg.rate_limit.key = TargetKeyKind::Named("one-quota".into());
        let a = target("named", &cfg, "a.quota.test:443");
        let b = target("named", &cfg, "b.quota.test:443");
        assert!(Arc::ptr_eq(&a.limiter, &b.limiter));
        assert!(
            !Arc::ptr_eq(&a.breaker, &b.breaker),
            "breakers stay per host"
        );
        assert_eq!(a.limiter_key, "one-quota");
    }

    #[test]
    fn host_keys_carry_the_port_the_scheme_implies() {
        let u = |s: &str| url::Url::parse(s).expect("url");
        assert_eq!(host_key(&u("https://api.test/x")), "api.test:443");
        assert_eq!(host_key(&u("http://api.test:8080/x")), "api.test:8080");
    }
}
