//! The resilience keys every connector that calls a third party accepts,
//! beside its own settings (`retry`, `circuit_breaker`, `rate_limit`,
//! `bulkhead`, `timeout`, `dead_letter`, `fallback`, `ordering`). Every key
//! is optional; the defaults are the documented ones. `validate` checks
//! them without I/O.

use serde::Deserialize;
use std::num::NonZeroU32;
use std::time::Duration;

/// The resilience settings of one connector.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    /// Retries of a failed call: exponential backoff with full jitter.
    pub retry: RetryConfig,
    /// Stops calling a target that keeps failing, then probes it.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Requests per second to a target; obeys the API's own advertised limits.
    pub rate_limit: RateLimitConfig,
    /// At most this many calls at once to a target. Unset: no bound.
    pub bulkhead: Option<BulkheadConfig>,
    /// Each attempt of a call (request sent, answer read) takes at most this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Where records that cannot be delivered go (sinks).
    pub dead_letter: DeadLetterConfig,
    /// What to do instead when the target stays unavailable. Unset: wait for it.
    pub fallback: Option<FallbackConfig>,
    /// Whether a partition waits for a failing record (`strict`) or flows on
    /// past it (`relaxed`). See the README's "Ordering" section.
    pub ordering: Ordering,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            retry: RetryConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            rate_limit: RateLimitConfig::default(),
            bulkhead: None,
            timeout: Duration::from_secs(30),
            dead_letter: DeadLetterConfig::default(),
            fallback: None,
            ordering: Ordering::Strict,
        }
    }
}

/// Retries of one call.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per call, the first included.
    pub max_attempts: NonZeroU32,
    /// The first backoff's cap; each next one doubles, up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A call stops retrying once this long has passed since its first
    /// attempt. With `ordering: relaxed` a sink's record then leaves its
    /// partition's way (dead-letter topic); with `strict` the partition keeps
    /// waiting for it.
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Duration,
    /// HTTP statuses worth retrying. Connection failures and timeouts are
    /// always retried; other 4xx and 3xx never are.
    pub retry_on: Vec<u16>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: NonZeroU32::new(8).unwrap_or(NonZeroU32::MIN),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(600),
            retry_on: vec![408, 429, 500, 502, 503, 504],
        }
    }
}

/// What a breaker, a limit or a bulkhead is kept per.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TargetKeyKind {
    /// The target URL's host and port (`api.example.com:443`).
    #[default]
    Host,
    /// A name of your own: every connector naming it shares one breaker,
    /// limit or bulkhead (one API quota across several hosts).
    Named(String),
}

impl<'de> Deserialize<'de> for TargetKeyKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom(
                "`key` is `host` or a name of your own",
            ));
        }
        Ok(if s == "host" {
            Self::Host
        } else {
            Self::Named(s)
        })
    }
}

/// A circuit breaker per target key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Opens when at least this share of the calls in `window` failed
    /// (connection failures, timeouts, `retry_on` statuses). `0 < x <= 1`.
    pub failure_rate: f64,
    /// ... and at least this many calls were made in `window`.
    pub min_calls: NonZeroU32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long it stays open (no call goes out) before probing.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Calls let through while half-open; all must succeed to close again.
    pub half_open_probes: NonZeroU32,
    /// `host` (the target's host and port) or a name of your own.
    pub key: TargetKeyKind,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_calls: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(30),
            half_open_probes: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            key: TargetKeyKind::Host,
        }
    }
}

/// A rate limit per target key (GCRA), shared by every task of the process
/// calling the same target.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// A fixed rate. Unset: none (the API's advertised limits still apply
    /// with `from_headers`).
    pub requests_per_second: Option<f64>,
    /// Requests that may go at once above the steady rate.
    pub burst: NonZeroU32,
    /// Obey the API's advertised limits: `X-RateLimit-Limit/Remaining/Reset`,
    /// IETF `RateLimit`/`RateLimit-Policy`, and `Retry-After`.
    pub from_headers: bool,
    /// `host` (the target's host and port) or a name of your own.
    pub key: TargetKeyKind,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: None,
            burst: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            from_headers: true,
            key: TargetKeyKind::Host,
        }
    }
}

/// At most `max_in_flight` calls at once per target key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BulkheadConfig {
    pub max_in_flight: NonZeroU32,
    /// `host` (the target's host and port) or a name of your own.
    #[serde(default)]
    pub key: TargetKeyKind,
}

/// The dead-letter topic, and the retry topics before it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// Unset: `<connector>.dlq`. Created at startup (as many partitions as
    /// the consumed topic, not compacted).
    pub topic: Option<String>,
    /// With `ordering: relaxed`: a record still failing `retry.max_elapsed`
    /// after its first failure waits in `<connector>.retry.<delay>` for each
    /// delay in turn (tried again once each delay has passed), and only
    /// then goes to the dead-letter topic. `[]`: straight to it.
    pub retry_topics: Vec<humantime_serde::Serde<Duration>>,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            topic: None,
            retry_topics: [60, 600, 3600]
                .into_iter()
                .map(|s| Duration::from_secs(s).into())
                .collect(),
        }
    }
}

/// What to do when the target stays unavailable.
#[derive(Debug, Clone, PartialEq)]
pub enum FallbackConfig {
    /// Park the records in this topic (sinks).
    Topic(String),
    /// Send to this URL instead (HTTP connectors): a template like the
    /// connector's `url`, which may hold secret references; the connector's
    /// headers and auth go with the request.
    Url(String),
    /// Skip the cycle and keep the last position (sources).
    Skip,
}

impl<'de> Deserialize<'de> for FallbackConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Topic {
            topic: String,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Url {
            url: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Topic(Topic),
            Url(Url),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected `{ topic: NAME }`, `{ url: URL }` or `skip`")
        })? {
            Raw::Word(w) if w == "skip" => Ok(Self::Skip),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "`{w}`: expected `{{ topic: NAME }}`, `{{ url: URL }}` or `skip`"
            ))),
            Raw::Topic(t) => Ok(Self::Topic(t.topic)),
            Raw::Url(u) => {
                // As the main `url`: secret references resolved, the
                // credentials in it registered for redaction.
                let url = crate::config::secret::resolve_embedded(&u.url)
                    .map_err(serde::de::Error::custom)?;
                crate::config::secret::register_url_credentials(&url);
                Ok(Self::Url(url))
            }
        }
    }
}

/// Whether a failing record holds its partition.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// A record that keeps failing in a way that may pass is retried until
    /// the target recovers; its partition waits (key order holds, nothing
    /// is dropped).
    #[default]
    Strict,
    /// After `retry.max_elapsed` the record goes to the dead-letter topic
    /// and its partition flows on (order per key is no longer guaranteed).
    Relaxed,
}

/// A delay as a topic-name-safe word in its largest whole unit: `1h`,
/// `10m`, `90s`, `1500ms`.
fn delay_name(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl ResilienceConfig {
    /// Checks across fields; `err(key, message)` builds the caller's error
    /// (the caller knows the file and the connector's index).
    pub fn validate<E>(&self, err: impl Fn(&str, String) -> E) -> Result<(), E> {
        let r = &self.retry;
        if r.initial_backoff.is_zero() {
            return Err(err("retry.initial_backoff", "must be more than 0".into()));
        }
        if r.max_backoff < r.initial_backoff {
            return Err(err(
                "retry.max_backoff",
                format!(
                    "{:?} is less than `initial_backoff` ({:?})",
                    r.max_backoff, r.initial_backoff
                ),
            ));
        }
        if let Some(s) = r.retry_on.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(err("retry.retry_on", format!("{s} is not an HTTP status")));
        }
        if let Some(s) = r.retry_on.iter().find(|s| (200..400).contains(*s)) {
            return Err(err(
                "retry.retry_on",
                format!("{s} is a success or a redirect; only failures can be retried"),
            ));
        }
        let b = &self.circuit_breaker;
        if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
            return Err(err(
                "circuit_breaker.failure_rate",
                format!("{} is not in (0, 1]", b.failure_rate),
            ));
        }
        for (key, d) in [
            ("circuit_breaker.window", b.window),
            ("circuit_breaker.open_for", b.open_for),
            ("timeout", self.timeout),
        ] {
            if d.is_zero() {
                return Err(err(key, "must be more than 0".into()));
            }
        }
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let mut bounded = vec![
            ("retry.initial_backoff", r.initial_backoff, DAY),
            ("retry.max_backoff", r.max_backoff, DAY),
            ("retry.max_elapsed", r.max_elapsed, DAY * 30),
            ("circuit_breaker.window", b.window, DAY),
            ("circuit_breaker.open_for", b.open_for, DAY),
            ("timeout", self.timeout, DAY),
        ];
        for d in &self.dead_letter.retry_topics {
            bounded.push(("dead_letter.retry_topics", **d, DAY * 30));
        }
        for (key, d, max) in bounded {
            if d > max {
                return Err(err(
                    key,
                    format!("{d:?} is more than the most allowed, {max:?}"),
                ));
            }
        }
        if let Some(rps) = self.rate_limit.requests_per_second {
            if !(rps.is_finite() && (0.001..=1_000_000.0).contains(&rps)) {
                return Err(err(
                    "rate_limit.requests_per_second",
                    format!("{rps} is not a rate between 0.001 and 1000000 per second"),
                ));
            }
        }
        if self.rate_limit.burst.get() > 1_000_000 {
            return Err(err("rate_limit.burst", "at most 1000000".into()));
        }
        if let Some(d) = self.dead_letter.retry_topics.iter().find(|d| d.is_zero()) {
            return Err(err(
                "dead_letter.retry_topics",
                format!("{:?}: a retry topic's delay must be more than 0", **d),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for d in &self.dead_letter.retry_topics {
            if !names.insert(delay_name(**d)) {
                return Err(err(
                    "dead_letter.retry_topics",
                    format!("{} is listed twice", delay_name(**d)),
                ));
            }
        }
        if let Some(topic) = &self.dead_letter.topic {
            crate::config::validate_topic_name(topic).map_err(|m| err("dead_letter.topic", m))?;
        }
        match &self.fallback {
            Some(FallbackConfig::Topic(t)) => {
                crate::config::validate_topic_name(t).map_err(|m| err("fallback.topic", m))?;
            }
            Some(FallbackConfig::Url(u)) => {
                url::Url::parse(u).map_err(|e| err("fallback.url", format!("`{u}`: {e}")))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The retry topics of connector `name` with their delays, in order
    /// (none with `ordering: strict`).
    pub fn retry_topics(&self, name: &str) -> Vec<(String, Duration)> {
        if self.ordering == Ordering::Strict {
            return Vec::new();
        }
        self.dead_letter
            .retry_topics
            .iter()
            .map(|d| (format!("{name}.retry.{}", delay_name(**d)), **d))
            .collect()
    }

    /// The parking topic (`fallback: { topic }`), if set.
    pub fn parking_topic(&self) -> Option<String> {
        match &self.fallback {
            Some(FallbackConfig::Topic(t)) => Some(t.clone()),
            _ => None,
        }
    }

    /// The dead-letter topic of connector `name`.
    pub fn dead_letter_topic(&self, name: &str) -> String {
        self.dead_letter
            .topic
            .clone()
            .unwrap_or_else(|| format!("{name}.dlq"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ResilienceConfig, String> {
        let value: serde_json::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        let cfg: ResilienceConfig = serde_json::from_value(value).map_err(|e| e.to_string())?;
        cfg.validate(|k, m| format!("{k}: {m}"))?;
        Ok(cfg)
    }

    #[test]
    fn every_key_is_optional_and_defaults_are_the_documented_ones() {
        let cfg = parse("{}").expect("empty config");
        assert_eq!(cfg, ResilienceConfig::default());
        assert_eq!(cfg.retry.max_attempts.get(), 8);
        assert_eq!(cfg.retry.retry_on, vec![408, 429, 500, 502, 503, 504]);
        assert_eq!(cfg.circuit_breaker.min_calls.get(), 20);
        assert!(cfg.rate_limit.from_headers);
        assert!(cfg.rate_limit.requests_per_second.is_none());
        assert!(cfg.bulkhead.is_none());
        assert_eq!(cfg.timeout, Duration::from_secs(30));
        assert_eq!(cfg.ordering, Ordering::Strict);
        assert_eq!(cfg.dead_letter_topic("crm"), "crm.dlq");
        assert!(
            cfg.retry_topics("crm").is_empty(),
            "strict: no retry topics"
        );
        let relaxed = ResilienceConfig {
            ordering: Ordering::Relaxed,
            ..cfg
        };
        assert_eq!(
            relaxed.retry_topics("crm"),
            vec![
                ("crm.retry.1m".to_owned(), Duration::from_secs(60)),
                ("crm.retry.10m".to_owned(), Duration::from_secs(600)),
                ("crm.retry.1h".to_owned(), Duration::from_secs(3600)),
            ]
        );
    }

    #[test]
    fn the_documented_example_parses() {
        let cfg = parse(
            r#"
retry:            { max_attempts: 8, initial_backoff: 200ms, max_backoff: 30s, max_elapsed: 10m, retry_on: [408, 429, 500, 502, 503, 504] }
circuit_breaker:  { failure_rate: 0.5, min_calls: 20, window: 30s, open_for: 30s, half_open_probes: 3, key: host }
rate_limit:       { requests_per_second: 50, burst: 10, from_headers: true }
bulkhead:         { max_in_flight: 64, key: crm }
timeout: 30s
dead_letter:      { topic: crm.dlq }
fallback:         skip
ordering:         relaxed
"#,
        )
        .expect("example");
        assert_eq!(cfg.rate_limit.requests_per_second, Some(50.0));
        assert_eq!(
            cfg.bulkhead.map(|b| (b.max_in_flight.get(), b.key)),
            Some((64, TargetKeyKind::Named("crm".into())))
        );
        assert_eq!(cfg.fallback, Some(FallbackConfig::Skip));
        assert_eq!(cfg.ordering, Ordering::Relaxed);
        let t = parse("fallback: { topic: parked }").expect("topic");
        assert_eq!(t.fallback, Some(FallbackConfig::Topic("parked".into())));
        let u = parse("fallback: { url: 'http://b.example/x' }").expect("url");
        assert_eq!(
            u.fallback,
            Some(FallbackConfig::Url("http://b.example/x".into()))
        );
    }

    #[test]
    fn retry_topic_names_are_valid_topic_names() {
        let cfg: ResilienceConfig = serde_json::from_value(serde_json::json!({
            "ordering": "relaxed",
            "dead_letter": { "retry_topics": ["90s", "1500ms", "2h", "1d"] }
        }))
        .expect("parses");
        let names: Vec<String> = cfg.retry_topics("c").into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["c.retry.90s", "c.retry.1500ms", "c.retry.2h", "c.retry.1d"]
        );
        for n in &names {
            crate::config::validate_topic_name(n).expect("a valid topic name");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, key) in [
            ("retry: { retry_on: [200] }", "retry.retry_on"),
            ("retry: { retry_on: [999] }", "retry.retry_on"),
            (
                "retry: { initial_backoff: 2s, max_backoff: 1s }",
                "retry.max_backoff",
            ),
            (
                "circuit_breaker: { failure_rate: 1.5 }",
                "circuit_breaker.failure_rate",
            ),
            (
                "rate_limit: { requests_per_second: 0 }",
                "rate_limit.requests_per_second",
            ),
            ("timeout: 0s", "timeout"),
            (
                "dead_letter: { retry_topics: [1s, 0s] }",
                "dead_letter.retry_topics",
            ),
            (
                "dead_letter: { retry_topics: [1m, 60s] }",
                "dead_letter.retry_topics",
            ),
            (
                "circuit_breaker: { open_for: 1000d }",
                "circuit_breaker.open_for",
            ),
            (
                "rate_limit: { requests_per_second: 1e-30 }",
                "rate_limit.requests_per_second",
            ),
            ("dead_letter: { topic: 'a b' }", "dead_letter.topic"),
            ("fallback: { url: 'not a url' }", "fallback.url"),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.starts_with(key), "{yaml}: {e}");
        }
        for yaml in [
            "fallback: later",
            "ordering: loose",
            "retry: { attempts: 3 }",
            "retry: { max_attempts: 0 }",
        ] {
            assert!(parse(yaml).is_err(), "{yaml} accepted");
        }
    }
}
