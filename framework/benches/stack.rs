//! What the resilience stack costs per call, without I/O: `Outbound::call`
//! with an attempt that answers `200` at once, through the default layers
//! (breaker, header-driven limiter, timeout, retry policy), through every
//! layer (a fixed rate high enough never to wait, and a bulkhead), and the
//! same attempt called bare (the baseline the overhead is measured from).
//!
//! `cargo bench -p ferry --bench stack`

use criterion::{criterion_group, criterion_main, Criterion};
use ferry::error::ConnectorError;
use ferry::resilience::config::BulkheadConfig;
use ferry::resilience::{Answer, Outbound, ResilienceConfig, WhenOpen};
use reqwest::header::HeaderMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

struct Ok200(HeaderMap);

impl Answer for Ok200 {
    fn status(&self) -> u16 {
        200
    }
    fn headers(&self) -> &HeaderMap {
        &self.0
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let url = url::Url::parse("http://bench.invalid:8080/x").expect("url");
    let mut all = ResilienceConfig::default();
    all.rate_limit.requests_per_second = Some(1e9);
    all.rate_limit.burst = NonZeroU32::new(1_000_000).expect("non-zero");
    all.bulkhead = Some(BulkheadConfig {
        max_in_flight: NonZeroU32::new(64).expect("non-zero"),
        key: Default::default(),
    });
    let variants = [
        ("bare", Outbound::bare("bare", &ResilienceConfig::default())),
        (
            "default layers",
            Outbound::new("default", &ResilienceConfig::default()),
        ),
        ("every layer", Outbound::new("every", &all)),
    ];
    let mut group = c.benchmark_group("outbound call, ready answer");
    for (name, out) in &variants {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let answer = out
                            .call(&url, WhenOpen::Wait, || async {
                                Ok::<_, ConnectorError>(Ok200(HeaderMap::new()))
                            })
                            .await;
                        std::hint::black_box(answer.is_ok());
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
