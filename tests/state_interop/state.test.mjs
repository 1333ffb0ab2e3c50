// Interop with the official StreamDB (`@durable-streams/state/db` 0.3.1 on `@tanstack/db`):
// a StreamDB loaded through `params: {state: "snapshot"}` and one replaying the whole stream
// end in the same rows as a reference fold, before and after live appends, and after
// compactions. Runs against the server at STATE_INTEROP_URL (see tests/test_state_interop.py).
//
// Every update carries the whole row: TanStack applies a synced update as a shallow merge
// ({...old, ...new}) while the State Protocol replaces the value, and the two agree only
// when rows keep the same fields. Streams hold change messages only: StreamDB aborts on a
// JSON value without `headers` (its type guards evaluate `"operation" in event.headers`).
//
// Checks that only hold once the server answers `state=snapshot` and compacts are
// `expect.soft`, so the row comparisons after them still run and report.
import { randomUUID } from "node:crypto"
import { afterEach, describe, expect, it, vi } from "vitest"
import { createStateSchema, createStreamDB } from "@durable-streams/state/db"

const BASE_URL = process.env.STATE_INTEROP_URL
if (!BASE_URL) throw new Error("STATE_INTEROP_URL is required")

const SYNC_TIMEOUT_MS = 10_000
const COMPACTION_WAIT_MS = 5_000
const COMPACTION_BYTES = 4096
const MAX_READS = 1000

// StreamDB's sync path never validates rows; a pass-through Standard Schema is enough.
const anyRow = { "~standard": { version: 1, vendor: "interop", validate: (value) => ({ value }) } }
const schema = createStateSchema({
  todos: { schema: anyRow, type: "todo", primaryKey: "id" },
  users: { schema: anyRow, type: "user", primaryKey: "id" },
})
// Change type -> collection. The streams also carry type "tag", which is not in the schema:
// StreamDB drops it, the server's snapshot still lists it.
const COLLECTION_OF = { todo: "todos", user: "users" }
const SHARED_KEYS = [
  ...Array.from({ length: 10 }, (_, i) => ["todo", `t${i}`]),
  ...Array.from({ length: 4 }, (_, i) => ["user", `u${i}`]),
  ["tag", "g0"],
  ["tag", "g1"],
]

// ---------------------------------------------------------------------------------------
// Writing

/** A small seeded PRNG (mulberry32): a failing run's changes can be generated again. */
function seeded(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const pick = (rand, items) => items[Math.floor(rand() * items.length)]

let txids = 0

/** A change message; each carries a fresh txid, so any of them can be awaited. */
function change(type, key, operation, value) {
  const headers = { operation, txid: `tx-${++txids}`, timestamp: new Date().toISOString() }
  return operation === "delete" ? { type, key, headers } : { type, key, value, headers }
}

/** A whole row: always the same fields, with nesting and a null to check fidelity. */
function row(key, writer, n) {
  return {
    id: key,
    title: `${writer} #${n}`,
    done: n % 3 === 0,
    rev: n,
    meta: { by: writer, tags: [writer, `n${n % 4}`], note: n % 2 ? null : "even" },
  }
}

async function createStream(label, headers = {}) {
  const url = `${BASE_URL}/v1/stream/interop-${label}-${randomUUID()}`
  const response = await fetch(url, {
    method: "PUT",
    headers: { "content-type": "application/json", ...headers },
  })
  expect(response.status, await response.text()).toBe(201)
  return url
}

/** An idempotent producer; posts a single message as an object, several as an array. */
class Writer {
  constructor(url, id) {
    this.url = url
    this.id = id
    this.seq = 0
    this.sent = []
  }

  async append(messages) {
    const response = await fetch(this.url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "producer-id": this.id,
        "producer-epoch": "0",
        "producer-seq": String(this.seq),
      },
      body: JSON.stringify(messages.length === 1 ? messages[0] : messages),
    })
    expect(response.status, await response.text()).toBe(200)
    this.seq += 1
    this.sent.push(...messages)
    return response.headers.get("stream-next-offset")
  }

  /** Appends `messages` in random batches of 1..maxBatch; returns the last txid. */
  async appendInBatches(rand, messages, maxBatch) {
    for (let i = 0; i < messages.length; ) {
      const size = 1 + Math.floor(rand() * maxBatch)
      await this.append(messages.slice(i, i + size))
      i += size
    }
    return messages.at(-1).headers.txid
  }
}

/** Random inserts, updates, upserts and deletes over `keys`, present or not. */
function randomChanges(rand, writer, count, keys) {
  return Array.from({ length: count }, (_, n) => {
    const [type, key] = pick(rand, keys)
    const operation = pick(rand, ["insert", "update", "upsert", "delete"])
    return change(type, key, operation, row(key, writer, n))
  })
}

/** Several writers at once, each its own changes; returns each writer's last txid. */
function writeConcurrently(rand, writers, changesOf, maxBatch = 6) {
  return Promise.all(writers.map((w) => w.appendInBatches(rand, changesOf(w), maxBatch)))
}

// ---------------------------------------------------------------------------------------
// Reading and folding

/** The State Protocol fold (replace semantics), keeping each entity's last write. */
function fold(messages, state = new Map()) {
  for (const message of messages) {
    const headers = message?.headers
    if (!headers || !("operation" in headers)) continue
    const id = JSON.stringify([message.type, message.key])
    state.delete(id) // a rewrite moves the entity to the end: the order of last writes
    if (headers.operation !== "delete") {
      const { txid, timestamp } = headers
      state.set(id, { type: message.type, key: message.key, value: message.value, txid, timestamp })
    }
  }
  return state
}

/** The rows StreamDB should hold for a folded state: schema types only, id = key. */
function expectedRows(state) {
  const rows = Object.fromEntries(Object.values(COLLECTION_OF).map((name) => [name, {}]))
  for (const { type, key, value } of state.values()) {
    const name = COLLECTION_OF[type]
    if (name) rows[name][key] = { ...value, id: key }
  }
  return rows
}

/** A StreamDB's rows without its own bookkeeping (`_seq`, TanStack's `$` virtual props). */
function dbRows(db) {
  const rows = {}
  for (const [name, collection] of Object.entries(db.collections)) {
    rows[name] = {}
    for (const [key, value] of collection.entries()) {
      const fields = Object.entries(value).filter(([f]) => f !== "_seq" && !f.startsWith("$"))
      rows[name][key] = Object.fromEntries(fields)
    }
  }
  return rows
}

/** A plain catch-up read from `offset` until up to date, as any client does it. */
async function readAll(url, offset = "-1") {
  const items = []
  let bytes = 0
  for (let reads = 0; reads < MAX_READS; reads++) {
    const response = await fetch(`${url}?offset=${encodeURIComponent(offset)}`)
    const text = await response.text()
    expect(response.status, text).toBe(200)
    bytes += text.length
    items.push(...JSON.parse(text))
    offset = response.headers.get("stream-next-offset")
    if (response.headers.has("stream-up-to-date")) return { items, bytes, offset }
  }
  throw new Error(`${url} was not up to date after ${MAX_READS} reads`)
}

const isControl = (item, control) => item?.headers?.control === control

const opened = []
afterEach(() => {
  for (const db of opened.splice(0)) db.close()
})

/**
 * An official StreamDB on `url`, through a fetch that keeps the body of every read that
 * is not live (the preload's catch-up, which is where a snapshot has to show up) and
 * notes every refused read.
 */
function openDb(url, { snapshot, live }) {
  const catchUp = []
  const refused = []
  const tracingFetch = async (input, init) => {
    const response = await fetch(input, init)
    const requested = new URL(input instanceof Request ? input.url : String(input))
    if (!response.ok) refused.push(`${response.status} for ${requested.search}`)
    if (!requested.searchParams.has("live")) {
      const text = await response.clone().text()
      const offset = response.headers.get("stream-next-offset")
      catchUp.push({ params: requested.searchParams, offset, text })
    }
    return response
  }
  const db = createStreamDB({
    streamOptions: {
      url,
      contentType: "application/json",
      fetch: tracingFetch,
      ...(snapshot ? { params: { state: "snapshot" } } : {}),
    },
    live,
    state: schema,
  })
  opened.push(db)
  const items = () => catchUp.flatMap((read) => JSON.parse(read.text))
  const bytes = () => catchUp.reduce((sum, read) => sum + read.text.length, 0)
  return { db, catchUp, refused, items, bytes }
}

/** Waits until every db has committed every txid (each is the last of one writer). */
async function awaitAll(reads, txidList) {
  const waits = reads.flatMap(({ db }) =>
    txidList.map((txid) => db.utils.awaitTxId(txid, SYNC_TIMEOUT_MS)),
  )
  try {
    await Promise.all(waits)
  } catch (error) {
    // A StreamDB whose read failed is dead; say why rather than only "Timeout".
    const refused = reads.flatMap((read) => read.refused)
    throw new Error(`${error.message}; refused reads: ${refused.join("; ") || "none"}`)
  }
}

/**
 * The preload of `read` was the server's snapshot of `state`: one response from -1,
 * [snapshot-start T, one insert per live entity in the order of last writes with that
 * write's txid and timestamp, snapshot-end T], T = that response's Stream-Next-Offset.
 * `ordered: false` when `state` was folded in an order other than the log's.
 */
function expectSnapshot(read, state, { ordered = true } = {}) {
  const [first] = read.catchUp
  expect.soft(first.params.get("offset"), "the preload reads from -1").toBe("-1")
  expect.soft(read.catchUp, "the snapshot is one response").toHaveLength(1)
  const items = read.items()
  const marker = (control) => ({ headers: { control, offset: first.offset } })
  expect.soft(items[0], "first: snapshot-start at Next-Offset").toEqual(marker("snapshot-start"))
  expect.soft(items.at(-1), "last: snapshot-end at Next-Offset").toEqual(marker("snapshot-end"))
  const inserts = items.slice(1, -1)
  const operations = inserts.map((m) => m.headers?.operation)
  expect.soft(operations, "only inserts between the markers").toEqual(inserts.map(() => "insert"))
  const snapshot = fold(inserts)
  expect.soft(snapshot, "one insert per live entity: last value, txid, timestamp").toEqual(state)
  if (ordered) {
    const order = [...snapshot.keys()]
    expect.soft(order, "inserts in the order of last writes").toEqual([...state.keys()])
  }
}

/**
 * A stream that compacts past COMPACTION_BYTES, two writers on disjoint keys (so the
 * reference fold needs no interleaving order), and their churn: mostly updates of few
 * keys, each a whole row, with deletes and re-inserts.
 */
async function compactingStream(label, seed) {
  const url = await createStream(label, { "stream-state-compaction": String(COMPACTION_BYTES) })
  const random = seeded(seed)
  const writers = ["c0", "c1"].map((id) => new Writer(url, id))
  const keysOf = (w) => [0, 1, 2, 3].map((i) => ["todo", `${w.id}-k${i}`])
  const churn = (w, count) =>
    Array.from({ length: count }, (_, n) => {
      const [type, key] = pick(random, keysOf(w))
      const operation = pick(random, ["update", "update", "update", "upsert", "delete", "insert"])
      return change(type, key, operation, row(key, w.id, n))
    })
  const reference = () => fold(writers.flatMap((w) => w.sent))
  return { url, random, writers, churn, reference }
}

/**
 * Whether reads at `offset` became 410 Gone (the history before it was compacted away).
 * Compaction may run after the append that crossed the threshold, so this polls, bounded.
 */
function compactedPast(url, offset) {
  const gone = async () => {
    const response = await fetch(`${url}?offset=${encodeURIComponent(offset)}`)
    await response.body?.cancel()
    expect(response.status).toBe(410)
  }
  return vi.waitFor(gone, { timeout: COMPACTION_WAIT_MS, interval: 50 }).then(
    () => true,
    () => false,
  )
}

// ---------------------------------------------------------------------------------------

describe.each(["long-poll", "sse"])("StreamDB 0.3.1, live %s", (live) => {
  it("snapshot and full replay end in the same rows, before and after live appends", async () => {
    const url = await createStream(`rows-${live}`)
    const rand = seeded(live === "sse" ? 11 : 5)
    const writers = ["w0", "w1", "w2"].map((id) => new Writer(url, id))

    // The cases by name first, then racing writers over the same keys.
    await writers[0].append([change("todo", "t0", "insert", row("t0", "w0", 1))])
    await writers[0].append([
      change("todo", "t0", "insert", row("t0", "w0", 2)), // insert of an existing key
      change("todo", "t98", "update", row("t98", "w0", 3)), // update of a missing key
      change("todo", "t99", "delete"), // delete of a missing key
      change("user", "u0", "upsert", row("u0", "w0", 4)), // upsert, absent
      change("user", "u0", "upsert", row("u0", "w0", 5)), // upsert, present
      change("tag", "g0", "insert", row("g0", "w0", 6)), // a type StreamDB does not know
    ])
    await writers[1].append([change("todo", "t1", "insert", row("t1", "w1", 7))])
    await writers[1].append([change("todo", "t1", "delete")])
    await writeConcurrently(rand, writers, (w) => randomChanges(rand, w.id, 60, SHARED_KEYS))

    const log = await readAll(url)
    const state = fold(log.items)
    const snapshotted = openDb(url, { snapshot: true, live })
    const replayed = openDb(url, { snapshot: false, live })
    await Promise.all([snapshotted.db.preload(), replayed.db.preload()])

    expect(dbRows(replayed.db)).toEqual(expectedRows(state))
    expect(dbRows(snapshotted.db)).toEqual(expectedRows(state))
    expect(snapshotted.db.offset).toBe(log.offset)
    expect(replayed.db.offset).toBe(log.offset)
    expect(replayed.items()).toEqual(log.items)
    expectSnapshot(snapshotted, state)
    expect.soft(snapshotted.bytes(), "snapshot bytes vs replay").toBeLessThan(replayed.bytes())

    const last = await writeConcurrently(rand, writers, (w) =>
      randomChanges(rand, w.id, 40, SHARED_KEYS),
    )
    await awaitAll([snapshotted, replayed], last)
    const after = await readAll(url)
    expect(dbRows(replayed.db)).toEqual(expectedRows(fold(after.items)))
    expect(dbRows(snapshotted.db)).toEqual(expectedRows(fold(after.items)))
    expect(snapshotted.db.offset).toBe(after.offset)
    expect(replayed.db.offset).toBe(after.offset)
  })

  it("an empty snapshot makes a ready, empty StreamDB that then tails", async () => {
    const url = await createStream(`empty-${live}`)
    const writer = new Writer(url, "w0")
    await writer.append(["t0", "t1"].map((k) => change("todo", k, "insert", row(k, "w0", 1))))
    await writer.append(["t0", "t1", "t2"].map((k) => change("todo", k, "delete")))

    const snapshotted = openDb(url, { snapshot: true, live })
    const replayed = openDb(url, { snapshot: false, live })
    await Promise.all([snapshotted.db.preload(), replayed.db.preload()])
    expect(dbRows(snapshotted.db)).toEqual({ todos: {}, users: {} })
    expect(dbRows(replayed.db)).toEqual({ todos: {}, users: {} })
    expectSnapshot(snapshotted, new Map())

    const insert = change("todo", "t2", "insert", row("t2", "w0", 2))
    await writer.append([insert])
    await awaitAll([snapshotted, replayed], [insert.headers.txid])
    const expected = { todos: { t2: row("t2", "w0", 2) }, users: {} }
    expect(dbRows(snapshotted.db)).toEqual(expected)
    expect(dbRows(replayed.db)).toEqual(expected)
  })

  it("after a compaction both load the snapshot from -1, and live appends reach both", async () => {
    const stream = await compactingStream(`compacted-${live}`, 17)
    const { url, random, writers, churn, reference } = stream
    const first = change("todo", "c0-k0", "insert", row("c0-k0", "c0", 0))
    const early = await writers[0].append([first])
    await writeConcurrently(random, writers, (w) => churn(w, 150), 5)
    const written = JSON.stringify(writers.flatMap((w) => w.sent)).length
    expect(written).toBeGreaterThan(4 * COMPACTION_BYTES)
    expect.soft(await compactedPast(url, early), "a read below the compaction point").toBe(true)
    const fromStart = (await readAll(url)).items[0]
    expect.soft(isControl(fromStart, "snapshot-start"), "-1 after compaction").toBe(true)

    const snapshotted = openDb(url, { snapshot: true, live })
    const replayed = openDb(url, { snapshot: false, live })
    await Promise.all([snapshotted.db.preload(), replayed.db.preload()])
    expect(dbRows(snapshotted.db)).toEqual(expectedRows(reference()))
    expect(dbRows(replayed.db)).toEqual(expectedRows(reference()))
    expectSnapshot(snapshotted, reference(), { ordered: false })
    expectSnapshot(replayed, reference(), { ordered: false })

    // Few enough bytes that these need not cross the threshold again (the next test does).
    const last = await writeConcurrently(random, writers, (w) => churn(w, 2), 1)
    await awaitAll([snapshotted, replayed], last)
    expect(dbRows(snapshotted.db)).toEqual(expectedRows(reference()))
    expect(dbRows(replayed.db)).toEqual(expectedRows(reference()))
    const late = openDb(url, { snapshot: false, live })
    await late.db.preload()
    expect(dbRows(late.db)).toEqual(expectedRows(reference()))
    expectSnapshot(late, reference(), { ordered: false })
  })

  it("compactions while both tail live leave both tailing", async () => {
    const stream = await compactingStream(`tailing-${live}`, 29)
    const { url, random, writers, churn, reference } = stream
    await writeConcurrently(random, writers, (w) => churn(w, 4), 2)
    const snapshotted = openDb(url, { snapshot: true, live })
    const replayed = openDb(url, { snapshot: false, live })
    await Promise.all([snapshotted.db.preload(), replayed.db.preload()])
    expect(dbRows(snapshotted.db)).toEqual(expectedRows(reference()))
    expect(dbRows(replayed.db)).toEqual(expectedRows(reference()))
    expectSnapshot(snapshotted, reference(), { ordered: false })

    const tailed = await writers[0].append([
      change("todo", "c0-k0", "upsert", row("c0-k0", "c0", 0)),
    ])
    for (let round = 0; round < 3; round++) {
      // Each round passes the threshold by itself; the log switches under both tails.
      const last = await writeConcurrently(random, writers, (w) => churn(w, 20), 4)
      await awaitAll([snapshotted, replayed], last)
      expect(dbRows(snapshotted.db)).toEqual(expectedRows(reference()))
      expect(dbRows(replayed.db)).toEqual(expectedRows(reference()))
    }
    expect.soft(await compactedPast(url, tailed), "compacted while both were tailing").toBe(true)
    const late = openDb(url, { snapshot: false, live })
    await late.db.preload()
    expect(dbRows(late.db)).toEqual(expectedRows(reference()))
    expectSnapshot(late, reference(), { ordered: false })
  })
})
