//! The `Contact` mapping of `examples/salesforce/ferry.yaml` (declared in
//! config, run by the mapping engine) beside the same mapping written by
//! hand in Rust (`transforms::salesforce`, the guide's `transformContact`),
//! on the same parsed payloads. Both produce the Avro value the topic's
//! codec then encodes; encoding is measured by `cargo bench -p ferry
//! --bench avro`.
//!
//! `cargo bench -p ferry-connectors --bench mapping` (env: `RECORDS`,
//! default 200000; `RUNS`, default 5).

use apache_avro::Schema;
use ferry::transform::{Mapping, MappingConfig, Transform};
use serde_json::Value as Json;
use std::hint::black_box;
use std::time::Instant;

#[path = "support/stats.rs"]
mod stats;
use stats::{median, spread};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Payloads shaped like the recorded Salesforce contact, each different.
fn payloads(n: usize) -> Vec<(Vec<u8>, Json)> {
    let first = ["Ada", "Grace", "Alan", "Edsger", "Barbara"];
    let last = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov"];
    (0..n)
        .map(|i| {
            let raw = format!(
                r#"{{"Id":"0035e{i:013}","FirstName":"{}","LastName":"{}","email_address":"  {}.{i}@Example.COM ","phone":"(650) 253-{:04}","LastModifiedDate":"2024-05-01T10:{:02}:{:02}.000+0000","attributes":{{"type":"Contact"}}}}"#,
                first[i % 5],
                last[(i / 5) % 5],
                first[i % 5],
                i % 10_000,
                (i / 60) % 60,
                i % 60,
            );
            let json = serde_json::from_str(&raw).expect("valid JSON");
            (raw.into_bytes(), json)
        })
        .collect()
}

fn declared(schema: &Schema) -> Mapping {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/salesforce/ferry.yaml"
    ))
    .expect("example config");
    let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let mut section = config["connectors"][0]["mapping"].clone();
    let map = section.as_mapping_mut().expect("a mapping section");
    map.remove("schema");
    map.remove("dead_letter_topic");
    let parsed: MappingConfig = serde_yaml::from_value(section).expect("mapping config");
    Mapping::compile(&parsed, schema).expect("the example compiles")
}

/// Records per second through `t`, one run.
fn rate(t: &dyn Transform, input: &[(Vec<u8>, Json)]) -> f64 {
    let start = Instant::now();
    let mut ok = 0usize;
    for (raw, json) in input {
        if black_box(t.apply(raw, json)).is_ok() {
            ok += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(ok, input.len(), "every payload maps");
    input.len() as f64 / secs
}

fn main() {
    let (records, runs) = (env("RECORDS", 200_000), env("RUNS", 5).max(1));
    let schema = Schema::parse_str(include_str!("../../schemas/contact.avsc")).expect("schema");
    let mapping = declared(&schema);
    let by_hand = ferry_connectors::transforms::salesforce::contact(&schema).expect("Contact");
    let input = payloads(records);
    // Warm up both (allocator, caches, lazily built phone metadata).
    rate(&mapping, &input[..records.min(10_000)]);
    rate(by_hand.as_ref(), &input[..records.min(10_000)]);
    let (mut declared_rates, mut hand_rates) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        declared_rates.push(rate(&mapping, &input));
        hand_rates.push(rate(by_hand.as_ref(), &input));
    }
    let (d, h) = (median(&declared_rates), median(&hand_rates));
    let (dmin, dmax) = spread(&declared_rates);
    let (hmin, hmax) = spread(&hand_rates);
    println!("Contact mapping, {records} payloads, median of {runs} runs");
    println!("| | records/s | spread |");
    println!("|---|---|---|");
    println!("| declared `mapping:` (engine) | {d:.0} | {dmin:.0}-{dmax:.0} |");
    println!("| hand-written Rust (`salesforce_contact`) | {h:.0} | {hmin:.0}-{hmax:.0} |");
    println!("| declared / hand-written | {:.2} | |", d / h);
}
