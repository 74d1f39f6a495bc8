//! Generates `Contact` from the repository's `schemas/contact.avsc` with
//! `rsgen-avro`, as a service would from the `.avsc` files it consumes
//! (copied into its own repository, or fetched from the registry).

use rsgen_avro::{Generator, Source};
use std::path::PathBuf;

fn main() {
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../schemas/contact.avsc");
    println!("cargo:rerun-if-changed={}", schema.display());
    let text = std::fs::read_to_string(&schema)
        .unwrap_or_else(|e| panic!("read {}: {e}", schema.display()));
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("contact.rs");
    let mut file =
        std::fs::File::create(&out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    Generator::new()
        .expect("rsgen-avro's templates")
        .generate(&Source::SchemaStr(&text), &mut file)
        .unwrap_or_else(|e| panic!("generate Rust types from {}: {e}", schema.display()));
}
