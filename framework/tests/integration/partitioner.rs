//! Ferry's producer puts a key on the partition the Java client (and Kafka
//! Streams, kafkajs, Kafka Connect) would: `toPositive(murmur2(key)) %
//! partitions`. Before, librdkafka's default `consistent_random` (CRC32)
//! applied, and a key written by Ferry and the same key written by a Java
//! service landed on different partitions: per-key order across the two
//! was lost, and a table keyed by it was split.

use ferry::config::TopicSpec;
use ferry::kafka::{
    BrokerStorage, DevBroker, KafkaAdmin, KafkaConfig, KafkaProducer, OutgoingRecord,
};
use std::collections::BTreeMap;
use std::num::NonZeroU32;

/// Kafka's `org.apache.kafka.common.utils.Utils.murmur2` (seed
/// `0x9747b28c`), in Java's 32-bit arithmetic.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = u32::try_from(data.len()).expect("key shorter than 4 GiB");
    let mut h = SEED ^ length;
    let blocks = data.chunks_exact(4);
    let tail = blocks.remainder();
    for b in blocks {
        let mut k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java's switch falls through: 3 takes the 2 and 1 steps too.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// Java's `Utils.toPositive`: clears the sign bit (not `abs`).
fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition the Java client's default partitioner picks for a key.
fn java_partition(key: &[u8], partitions: i32) -> i32 {
    to_positive(murmur2(key)) % partitions
}

/// CRC32 (IEEE), as librdkafka's `rd_crc32`.
fn crc32(key: &[u8]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for &byte in key {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// librdkafka's old default partitioner, `consistent_random`: CRC32 of the
/// key modulo the partition count.
fn crc32_partition(key: &[u8], partitions: i32) -> i32 {
    let n = u32::try_from(partitions).expect("positive");
    i32::try_from(crc32(key) % n).expect("below the partition count")
}

#[test]
fn murmur2_matches_kafkas_own_test_vectors() {
    // org.apache.kafka.common.utils.UtilsTest#testMurmur2.
    let cases: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        // `new byte[] {'a', 'b', 'c'}` in Kafka's test.
        (b"abc", 479_470_107),
    ];
    for (data, expected) in cases {
        assert_eq!(
            murmur2(data),
            expected,
            "murmur2({:?})",
            String::from_utf8_lossy(data)
        );
    }
    // CRC32's check value ("123456789" -> 0xCBF43926), so the comparison
    // with the old partitioner below is with the real thing.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

/// A few hundred distinct keys of every length class (the 4-byte blocks and
/// each tail length) and with bytes above 0x7f (Java's signed bytes are
/// masked with `& 0xff`).
fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..240)
        .map(|i| format!("customer-{i}").into_bytes())
        .collect();
    keys.extend((1..=40).map(|n| "x".repeat(n).into_bytes()));
    keys.extend(
        [
            "é",
            "ü-7",
            "日本",
            "Straße-42",
            "ключ",
            "🦀",
            "naïve-key",
            "Ωmega-ω",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec()),
    );
    keys.extend((0u8..12).map(|i| vec![0xff, i, 0x80, 0x7f, i.wrapping_mul(37)]));
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_on_the_partition_java_clients_choose() {
    const TOPIC: &str = "partitioner.keys";
    const PARTITIONS: i32 = 12;
    let dir = tempfile::tempdir().expect("dir");
    let broker = DevBroker::start(
        ferry_testkit::free_addr(),
        BrokerStorage::Sqlite(dir.path().join("broker.db")),
    )
    .await
    .expect("broker starts");
    let bootstrap = broker.bootstrap_servers();
    let kafka = KafkaConfig::default();
    KafkaAdmin::new(&kafka, &bootstrap)
        .expect("admin")
        .ensure_topic(&TopicSpec {
            name: TOPIC.to_owned(),
            partitions: NonZeroU32::new(12).expect("non-zero"),
            replication_factor: None,
            config: BTreeMap::new(),
            value_schema: None,
            key_schema: None,
        })
        .await
        .expect("topic");
    let producer = KafkaProducer::new(&kafka, &bootstrap).expect("producer");

    let keys = keys();
    let distinct: std::collections::BTreeSet<&Vec<u8>> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "keys are distinct");
    // The test can tell the partitioners apart: CRC32 would put most of
    // these keys elsewhere.
    let crc_elsewhere = keys
        .iter()
        .filter(|k| crc32_partition(k, PARTITIONS) != java_partition(k, PARTITIONS))
        .count();
    assert!(
        crc_elsewhere > keys.len() / 2,
        "only {crc_elsewhere} of {} keys differ between the partitioners",
        keys.len()
    );

    let sends = keys.iter().map(|k| {
        producer.send(OutgoingRecord {
            topic: TOPIC.to_owned(),
            key: Some(k.clone()),
            payload: Some(b"v".to_vec()),
            ..OutgoingRecord::default()
        })
    });
    let delivered = futures::future::join_all(sends).await;
    let mut wrong = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (key, d) in keys.iter().zip(delivered) {
        let d = d.expect("acknowledged");
        let expected = java_partition(key, PARTITIONS);
        used.insert(d.partition);
        if d.partition != expected {
            wrong.push((
                String::from_utf8_lossy(key).into_owned(),
                d.partition,
                expected,
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} keys landed elsewhere than a Java client puts them (key, got, expected): {:?}",
        wrong.len(),
        keys.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(used.len(), 12, "every partition got keys");
    drop(producer);
    broker.stop().await;
}
