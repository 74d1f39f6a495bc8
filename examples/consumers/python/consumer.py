#!/usr/bin/env python3
"""Reads Ferry's normalized contacts as another team's service would.

Each record on `ferry.quickstart.normalized-contacts` is a `Contact`
(schemas/contact.avsc) in Avro, in the Confluent wire format (a zero byte,
the 4-byte schema id, the Avro body), LZ4-compressed by the producer. This
consumer knows none of that up front: librdkafka decompresses, and the
registry's `AvroDeserializer` fetches the writer's schema by the id in each
record, so no `.avsc` file is needed here.

Prints one JSON object per record on stdout (key, schema id, Ferry's
headers, the Contact's fields) and drops repeats by `ferry-event-id`.

    pip install 'confluent-kafka[avro]==2.16.1'
    python consumer.py --bootstrap 127.0.0.1:9092 --registry http://127.0.0.1:8081

Every option can also come from the environment (see --help).
"""

import argparse
import json
import os
import signal
import struct
import sys
import time
from collections import OrderedDict

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

EVENT_ID = "ferry-event-id"
CORRELATION_ID = "ferry-correlation-id"


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", default=env("BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                   help="Kafka bootstrap servers (env BOOTSTRAP_SERVERS)")
    p.add_argument("--registry", default=env("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
                   help="schema registry URL (env SCHEMA_REGISTRY_URL)")
    p.add_argument("--topic", default=env("TOPIC", "ferry.quickstart.normalized-contacts"),
                   help="topic to read (env TOPIC)")
    p.add_argument("--group", default=env("GROUP_ID", "contacts-example-python"),
                   help="consumer group (env GROUP_ID)")
    p.add_argument("--max-records", type=int, default=int(env("MAX_RECORDS", "0")),
                   help="stop after printing this many records; 0 = never (env MAX_RECORDS)")
    p.add_argument("--idle-timeout", type=float, default=float(env("IDLE_TIMEOUT", "0")),
                   help="stop after this many seconds without a record; 0 = never "
                        "(env IDLE_TIMEOUT)")
    p.add_argument("--dedupe-window", type=int, default=int(env("DEDUPE_WINDOW", "100000")),
                   help="how many recent event ids to remember (env DEDUPE_WINDOW)")
    return p.parse_args()


class RecentIds:
    """The last `capacity` event ids seen, oldest forgotten first.

    Why the event id and not the offset or the key: Ferry delivers at least
    once. After a crash, a rebalance or a dead-letter replay, the same source
    event can be mapped and written again, at a new offset, and the key (the
    contact id) is shared by every change of that contact. What a repeat
    keeps is the id of the event it was made from (the envelope id, carried
    in the `ferry-event-id` header), so that is what says "seen it".
    A bounded window is enough because repeats arrive close to the original
    (a restart re-reads from the last committed offset); a service that must
    never apply a change twice keeps the ids in its own database instead.
    """

    def __init__(self, capacity):
        self.capacity = max(1, capacity)
        self.ids = OrderedDict()

    def seen(self, event_id):
        """True if `event_id` was seen before; remembers it otherwise."""
        if event_id in self.ids:
            self.ids.move_to_end(event_id)
            return True
        self.ids[event_id] = None
        if len(self.ids) > self.capacity:
            self.ids.popitem(last=False)
        return False


def header(msg, name):
    for k, v in msg.headers() or []:
        if k == name and v is not None:
            return v.decode("utf-8", "replace")
    return None


def schema_id(value):
    """The schema id of a Confluent-framed value: magic byte 0, then 4 bytes."""
    if value is None or len(value) < 5 or value[0] != 0:
        return None
    return struct.unpack(">I", value[1:5])[0]


def to_json(contact):
    """A decoded Contact as plain JSON: bytes as text, times as epoch millis."""
    out = {}
    for name, v in contact.items():
        if name == "raw" and isinstance(v, bytes):
            v = v.decode("utf-8", "replace")  # the source's JSON, as it sent it
        elif hasattr(v, "timestamp"):  # timestamp-millis -> datetime
            v = int(round(v.timestamp() * 1000))
        elif isinstance(v, bytes):
            v = v.hex()
        elif v is not None and not isinstance(v, (str, int, float, bool, list, dict)):
            v = str(v)  # decimal.Decimal (lifetime_value)
        out[name] = v
    return out


def main():
    args = parse_args()
    registry = SchemaRegistryClient({"url": args.registry})
    # No schema given: the deserializer uses the writer's schema, looked up by
    # the id in each record (and cached).
    deserialize = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        # At least once: an offset is stored only after its record was
        # handled (printed here), and committed in the background.
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
    })
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    # The idle clock starts over when partitions are assigned: joining the
    # group is not idleness.
    last_seen = time.monotonic()

    def on_assign(_consumer, _partitions):
        nonlocal last_seen
        last_seen = time.monotonic()

    consumer.subscribe([args.topic], on_assign=on_assign)

    recent = RecentIds(args.dedupe_window)
    printed = duplicates = 0
    try:
        while not stop:
            if args.max_records and printed >= args.max_records:
                break
            if args.idle_timeout and time.monotonic() - last_seen > args.idle_timeout:
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            last_seen = time.monotonic()
            if msg.error():
                if msg.error().fatal():
                    raise KafkaException(msg.error())
                print(f"consumer error: {msg.error()}", file=sys.stderr)
                continue
            event_id = header(msg, EVENT_ID)
            if event_id is not None and recent.seen(event_id):
                duplicates += 1
                consumer.store_offsets(message=msg)
                continue
            ctx = SerializationContext(msg.topic(), MessageField.VALUE, msg.headers())
            contact = deserialize(msg.value(), ctx)
            key = msg.key()
            print(json.dumps({
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": key.decode("utf-8", "replace") if key is not None else None,
                "schema_id": schema_id(msg.value()),
                "event_id": event_id,
                "correlation_id": header(msg, CORRELATION_ID),
                "value": to_json(contact) if contact is not None else None,
            }), flush=True)
            consumer.store_offsets(message=msg)
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()  # commits the stored offsets, leaves the group
    print(json.dumps({"printed": printed, "duplicates_dropped": duplicates}), file=sys.stderr)


if __name__ == "__main__":
    main()
