#!/usr/bin/env node
// Reads Ferry's normalized contacts as another team's Node service would.
//
// Each record on `ferry.quickstart.normalized-contacts` is a `Contact`
// (schemas/contact.avsc) in Avro, in the Confluent wire format (a zero byte,
// the 4-byte schema id, the Avro body), LZ4-compressed by librdkafka. The
// registry client fetches the writer's schema by the id in each record, so
// no `.avsc` file is needed here.
//
// Prints one JSON object per record on stdout (key, schema id, Ferry's
// headers, the Contact's fields) and drops repeats by `ferry-event-id`.
//
//   npm ci
//   node consumer.js --bootstrap 127.0.0.1:9092 --registry http://127.0.0.1:8081
//
// Every option can also come from the environment (see --help).

'use strict'

const { parseArgs } = require('node:util')
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const { SchemaRegistry } = require('@kafkajs/confluent-schema-registry')
const lz4 = require('lz4-napi')

const EVENT_ID = 'ferry-event-id'
const CORRELATION_ID = 'ferry-correlation-id'

// kafkajs ships no LZ4 codec; Ferry's producer (librdkafka) compresses with
// LZ4 by default. `lz4-napi`'s frame decoder (lz4_flex) reads librdkafka's
// frames. `kafkajs-lz4` 1.x does NOT: it reads a small batch (one LZ4
// block), but a batch of more than 64 KiB fails with "Invalid data block"
// and the consumer stalls on it for good, so it passes a demo and breaks
// once the topic is busy.
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  compress: (encoder) => lz4.compressFrame(encoder.buffer),
  decompress: (buffer) => lz4.decompressFrame(buffer),
})

const USAGE = `usage: node consumer.js [options]
  --bootstrap HOST:PORT   Kafka bootstrap servers   (env BOOTSTRAP_SERVERS, 127.0.0.1:9092)
  --registry URL          schema registry           (env SCHEMA_REGISTRY_URL, http://127.0.0.1:8081)
  --topic NAME            topic to read             (env TOPIC, ferry.quickstart.normalized-contacts)
  --group ID              consumer group            (env GROUP_ID, contacts-example-node)
  --max-records N         stop after printing N; 0 = never          (env MAX_RECORDS)
  --idle-timeout SECS     stop after SECS without a record; 0 = never (env IDLE_TIMEOUT)
  --dedupe-window N       how many recent event ids to remember     (env DEDUPE_WINDOW, 100000)`

function options () {
  const env = process.env
  const { values } = parseArgs({
    options: {
      bootstrap: { type: 'string', default: env.BOOTSTRAP_SERVERS || '127.0.0.1:9092' },
      registry: { type: 'string', default: env.SCHEMA_REGISTRY_URL || 'http://127.0.0.1:8081' },
      topic: { type: 'string', default: env.TOPIC || 'ferry.quickstart.normalized-contacts' },
      group: { type: 'string', default: env.GROUP_ID || 'contacts-example-node' },
      'max-records': { type: 'string', default: env.MAX_RECORDS || '0' },
      'idle-timeout': { type: 'string', default: env.IDLE_TIMEOUT || '0' },
      'dedupe-window': { type: 'string', default: env.DEDUPE_WINDOW || '100000' },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }
  return {
    bootstrap: values.bootstrap.split(','),
    registry: values.registry,
    topic: values.topic,
    group: values.group,
    maxRecords: Number(values['max-records']),
    idleTimeoutMs: Number(values['idle-timeout']) * 1000,
    dedupeWindow: Math.max(1, Number(values['dedupe-window']))
  }
}

// The last `capacity` event ids seen, oldest forgotten first (a Map keeps
// insertion order).
//
// Why the event id and not the offset or the key: Ferry delivers at least
// once. After a crash, a rebalance or a dead-letter replay, the same source
// event can be mapped and written again, at a new offset, and the key (the
// contact id) is shared by every change of that contact. What a repeat keeps
// is the id of the event it was made from (the envelope id, carried in the
// `ferry-event-id` header), so that is what says "seen it". A bounded window
// is enough because repeats arrive close to the original (a restart re-reads
// from the last committed offset); a service that must never apply a change
// twice keeps the ids in its own database instead.
class RecentIds {
  constructor (capacity) {
    this.capacity = capacity
    this.ids = new Map()
  }

  // True if `id` was seen before; remembers it otherwise.
  seen (id) {
    if (this.ids.has(id)) {
      this.ids.delete(id)
      this.ids.set(id, true) // most recent again
      return true
    }
    this.ids.set(id, true)
    if (this.ids.size > this.capacity) {
      this.ids.delete(this.ids.keys().next().value)
    }
    return false
  }
}

function header (message, name) {
  const v = message.headers && message.headers[name]
  if (v === undefined || v === null) return null
  return Buffer.isBuffer(v) ? v.toString('utf8') : String(Array.isArray(v) ? v[0] : v)
}

// The schema id of a Confluent-framed value: magic byte 0, then 4 bytes.
function schemaId (value) {
  if (!value || value.length < 5 || value[0] !== 0) return null
  return value.readUInt32BE(1)
}

// A big-endian two's-complement integer with `scale` decimals, as text.
function decimal (bytes, scale) {
  if (bytes.length === 0) return '0'
  let n = BigInt('0x' + bytes.toString('hex'))
  if (bytes[0] & 0x80) n -= 1n << BigInt(bytes.length * 8)
  const sign = n < 0n ? '-' : ''
  const digits = (n < 0n ? -n : n).toString().padStart(scale + 1, '0')
  return scale ? `${sign}${digits.slice(0, -scale)}.${digits.slice(-scale)}` : sign + digits
}

// A decoded Contact as plain JSON: `raw` as the source's JSON text, the
// timestamp as epoch millis (avsc gives the long), the decimal as text.
function toJson (contact) {
  const out = {}
  for (const [name, v] of Object.entries(contact)) {
    if (name === 'raw' && Buffer.isBuffer(v)) out[name] = v.toString('utf8')
    else if (name === 'lifetime_value' && Buffer.isBuffer(v)) out[name] = decimal(v, 2)
    else if (Buffer.isBuffer(v)) out[name] = v.toString('hex')
    else if (v instanceof Date) out[name] = v.getTime()
    else out[name] = v
  }
  return out
}

async function main () {
  const opts = options()
  const registry = new SchemaRegistry({ host: opts.registry })
  const kafka = new Kafka({
    clientId: 'contacts-example-node',
    brokers: opts.bootstrap,
    // kafkajs logs to stdout by default; keep stdout for the records.
    logLevel: logLevel.WARN,
    logCreator: () => ({ level, log }) => {
      const { message, ...extra } = log
      console.error(JSON.stringify({ level, message, ...extra }))
    }
  })
  const consumer = kafka.consumer({ groupId: opts.group })
  const recent = new RecentIds(opts.dedupeWindow)
  let printed = 0
  let duplicates = 0
  let lastSeen = Date.now()
  let finish
  const finished = new Promise((resolve) => { finish = resolve })

  // The idle clock starts over when the group is joined: joining is not
  // idleness.
  consumer.on(consumer.events.GROUP_JOIN, () => { lastSeen = Date.now() })
  await consumer.connect()
  await consumer.subscribe({ topics: [opts.topic], fromBeginning: true })
  // At least once: kafkajs commits an offset only after eachMessage
  // returned for it.
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      lastSeen = Date.now()
      if (opts.maxRecords && printed >= opts.maxRecords) return
      const eventId = header(message, EVENT_ID)
      if (eventId !== null && recent.seen(eventId)) {
        duplicates += 1
        return
      }
      const contact = message.value ? await registry.decode(message.value) : null
      process.stdout.write(JSON.stringify({
        topic,
        partition,
        offset: Number(message.offset),
        key: message.key ? message.key.toString('utf8') : null,
        schema_id: schemaId(message.value),
        event_id: eventId,
        correlation_id: header(message, CORRELATION_ID),
        value: contact ? toJson(contact) : null
      }) + '\n')
      printed += 1
      if (opts.maxRecords && printed >= opts.maxRecords) finish()
    }
  })

  // Stopping is done here, not inside eachMessage: disconnect waits for the
  // running eachMessage to return.
  const idle = opts.idleTimeoutMs
    ? setInterval(() => { if (Date.now() - lastSeen > opts.idleTimeoutMs) finish() }, 200)
    : null
  process.once('SIGINT', () => finish())
  process.once('SIGTERM', () => finish())
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    if (!payload.restart) finish(payload.error)
  })
  const error = await finished
  if (idle) clearInterval(idle)
  await consumer.disconnect() // commits what was handled, leaves the group
  console.error(JSON.stringify({ printed, duplicates_dropped: duplicates }))
  if (error) throw error
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
