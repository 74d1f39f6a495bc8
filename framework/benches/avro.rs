//! Avro encode and decode rates for the `Contact` schema (Confluent-framed,
//! through Ferry's `AvroCodec`), beside `serde_json` on the same records.
//!
//! `cargo bench -p ferry --bench avro` (env: `RECORDS`, default 200000).
//!
//! The headline encode rate is `AvroCodec::encode` on prebuilt `Value`s (what
//! a mapping hands the runtime); serde_json writes from the derived struct.
//! Two more lines say where time goes: apache-avro's own writer
//! (`GenericDatumWriter`, validate then encode) on the same values, and the
//! struct-to-bytes path (building the `Value` tree, then `AvroCodec`).

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use ferry::schema::AvroCodec;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::time::Instant;

#[derive(Serialize, Deserialize)]
struct Contact {
    id: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    source: String,
    updated_at: Option<i64>,
    lifetime_value: Option<String>,
    raw: String,
}

fn contact(i: usize) -> Contact {
    Contact {
        id: format!("c-{i}"),
        name: Some(format!("Person {i}")),
        email: Some(format!("person{i}@example.com")),
        phone: i.is_multiple_of(2).then(|| format!("+4420{i:08}")),
        source: "crm".into(),
        updated_at: Some(1_764_000_000_000 + i as i64),
        lifetime_value: None,
        raw: format!(r#"{{"id":"c-{i}","name":"Person {i}","email":"person{i}@example.com"}}"#),
    }
}

fn opt(s: &Option<String>) -> Value {
    match s {
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn to_avro(c: &Contact) -> Value {
    Value::Record(vec![
        ("id".into(), Value::String(c.id.clone())),
        ("name".into(), opt(&c.name)),
        ("email".into(), opt(&c.email)),
        ("phone".into(), opt(&c.phone)),
        ("source".into(), Value::String(c.source.clone())),
        (
            "updated_at".into(),
            c.updated_at
                .map_or(Value::Union(0, Box::new(Value::Null)), |t| {
                    Value::Union(1, Box::new(Value::TimestampMillis(t)))
                }),
        ),
        (
            "lifetime_value".into(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        ("raw".into(), Value::Bytes(c.raw.as_bytes().to_vec())),
    ])
}

fn rate(n: usize, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/contact.avsc"
    ))
    .expect("schemas/contact.avsc");
    let schema = Schema::parse_str(&text).expect("schema");
    let codec = AvroCodec::new(schema.clone(), 1).expect("resolves");
    let writer = GenericDatumWriter::builder(&schema)
        .build()
        .expect("resolves");
    let contacts: Vec<Contact> = (0..n).map(contact).collect();
    let values: Vec<Value> = contacts.iter().map(to_avro).collect();

    // Every encode loop keeps its outputs, as a producer batch does.
    let mut avro_bytes = Vec::with_capacity(n);
    let avro_enc = rate(n, || {
        for v in &values {
            avro_bytes.push(codec.encode(v).expect("encodes"));
        }
    });
    let mut kept = Vec::with_capacity(n);
    let apache_enc = rate(n, || {
        for v in &values {
            let mut out = Vec::with_capacity(64);
            out.extend_from_slice(&[0, 0, 0, 0, 1]);
            writer.write_value_ref(&mut out, v).expect("encodes");
            kept.push(out);
        }
    });
    assert_eq!(kept, avro_bytes, "apache-avro writes the same bytes");
    kept.clear();
    let struct_enc = rate(n, || {
        for c in &contacts {
            kept.push(codec.encode(&to_avro(c)).expect("encodes"));
        }
    });
    drop(kept);
    let avro_dec = rate(n, || {
        for b in &avro_bytes {
            black_box(codec.decode(b).expect("decodes"));
        }
    });
    let mut json_bytes = Vec::with_capacity(n);
    let json_enc = rate(n, || {
        for c in &contacts {
            json_bytes.push(serde_json::to_vec(c).expect("encodes"));
        }
    });
    let json_dec = rate(n, || {
        for b in &json_bytes {
            black_box(serde_json::from_slice::<Contact>(b).expect("decodes"));
        }
    });
    let avg = |v: &Vec<Vec<u8>>| v.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!("records: {n} Contact records");
    println!(
        "encode: Avro {avro_enc:>10.0} rec/s | serde_json {json_enc:>10.0} rec/s | Avro/JSON {:.2}",
        avro_enc / json_enc
    );
    println!(
        "        apache-avro writer {apache_enc:>10.0} rec/s | struct -> Value -> AvroCodec {struct_enc:>10.0} rec/s ({:.2} of serde_json)",
        struct_enc / json_enc
    );
    println!(
        "decode: Avro {avro_dec:>10.0} rec/s | serde_json {json_dec:>10.0} rec/s | Avro/JSON {:.2}",
        avro_dec / json_dec
    );
    println!(
        "size:   Avro {:.0} B/record (framed) | JSON {:.0} B/record",
        avg(&avro_bytes),
        avg(&json_bytes)
    );
}
