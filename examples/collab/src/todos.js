// The shared todo list: a State Protocol stream on this server, read by the official
// StreamDB and written as change messages by an idempotent producer.
//
// StreamDB always reads from -1 but sends its `params` with every request, so
// `{state: "snapshot"}` makes its first read the server's folded snapshot of the list
// instead of the list's whole history; later reads are ordinary live reads from the
// offset the snapshot ended at.
//
// Writes go to an outbox, sent one at a time with Producer-Id/Epoch/Seq: a write whose
// answer was lost (the server went away) is sent again with the same sequence number and
// the server keeps it once. Until StreamDB has read a write back, the list shows it
// (marked pending) from the outbox, so the list works while the server is away.
import { createStateSchema, createStreamDB } from "@durable-streams/state/db"
import { retry } from "./connection.js"

// StreamDB never validates rows it syncs; a pass-through Standard Schema is enough.
const anyRow = { "~standard": { version: 1, vendor: "collab", validate: (value) => ({ value }) } }
const schema = createStateSchema({ todos: { schema: anyRow, type: "todo", primaryKey: "id" } })

/** Rows: {id, title, done, created, by}; every write carries the whole row. */
export class TodoList extends EventTarget {
  /** @param {string} url the stream's URL */
  constructor(url) {
    super()
    this.url = url
    this.producer = crypto.randomUUID()
    this.seq = 0
    this.outbox = [] // [{seq, change, sent}] in order, until StreamDB has read them back
    this.sending = false
    this.live = false // StreamDB has caught up at least once
    this.db = createStreamDB({
      streamOptions: { url, contentType: "application/json", params: { state: "snapshot" } },
      state: schema,
      onBatch: (batch) => {
        if (batch.upToDate && !this.live) {
          this.live = true
          this.#changed()
        }
      },
    })
  }

  /** Creates the stream if needed and loads it (through the snapshot). */
  async open() {
    await retry(async () => {
      const response = await fetch(this.url, {
        method: "PUT",
        headers: { "content-type": "application/json" },
      })
      if (response.status !== 201 && response.status !== 200) {
        throw new Error(`creating the list: ${response.status}`)
      }
    })
    this.db.collections.todos.subscribeChanges(() => this.#changed(), {
      includeInitialState: true,
    })
    await this.db.preload()
  }

  /** The rows as StreamDB has them, with the outbox's writes on top, oldest first. */
  rows() {
    const rows = new Map()
    for (const [id, value] of this.db.collections.todos.entries()) {
      const { title, done, created, by } = value
      rows.set(String(id), { id: String(id), title, done, created, by, pending: false })
    }
    for (const { change } of this.outbox) {
      if (change.headers.operation === "delete") rows.delete(change.key)
      else rows.set(change.key, { ...change.value, pending: true })
    }
    return [...rows.values()].sort(
      (a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id)
    )
  }

  add(title, by) {
    const id = crypto.randomUUID()
    const row = { id, title, done: false, created: new Date().toISOString(), by }
    this.#write("insert", id, row)
  }

  toggle(id) {
    const row = this.rows().find((r) => r.id === id)
    if (!row) return
    const { pending, ...value } = row
    this.#write("update", id, { ...value, done: !value.done })
  }

  remove(id) {
    this.#write("delete", id)
  }

  #write(operation, key, value) {
    const headers = { operation, txid: `${this.producer}-${this.seq}` }
    const change =
      value === undefined ? { type: "todo", key, headers } : { type: "todo", key, value, headers }
    this.outbox.push({ seq: this.seq++, change, sent: false })
    this.#changed()
    if (!this.sending) this.#send()
  }

  /** Sends the outbox in order, each write until the server has it. */
  async #send() {
    this.sending = true
    for (let entry; (entry = this.outbox.find((e) => !e.sent)); ) {
      const { seq, change } = entry
      await retry(async () => {
        const response = await fetch(this.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "producer-id": this.producer,
            "producer-epoch": "0",
            "producer-seq": String(seq),
          },
          body: JSON.stringify(change),
        })
        await response.arrayBuffer()
        if (!response.ok) throw new Error(`writing to the list: ${response.status}`)
      })
      entry.sent = true
      // Shown from the outbox until StreamDB has read it back, so it never blinks out.
      this.db.utils
        .awaitTxId(change.headers.txid, 60_000)
        .catch(() => {})
        .then(() => {
          this.outbox.splice(this.outbox.indexOf(entry), 1)
          this.#changed()
        })
    }
    this.sending = false
  }

  #changed() {
    this.dispatchEvent(new Event("change"))
  }
}
