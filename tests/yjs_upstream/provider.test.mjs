// The official YjsProvider (@durable-streams/y-durable-streams 0.2.7, unchanged) against our
// server's own Yjs endpoints at YJS_PROVIDER_URL (e.g. http://127.0.0.1:8787/v1/yjs/test),
// with no Node server in between: two providers edit one document concurrently and converge,
// and a provider that joins late loads the same document (from a snapshot once the server has
// compacted, when YJS_PROVIDER_SNAPSHOT=1) and keeps editing with the others.
import { afterEach, describe, expect, it } from "vitest"
import * as Y from "yjs"
import { YjsProvider } from "@durable-streams/y-durable-streams"

const baseUrl = process.env.YJS_PROVIDER_URL
if (!baseUrl) throw new Error("YJS_PROVIDER_URL is required")
const expectSnapshot = process.env.YJS_PROVIDER_SNAPSHOT === "1"
const TIMEOUT_MS = 10_000
const EDITS = 20 // per provider; ~3 KB of updates in all, past a small compaction threshold

async function waitFor(label, condition) {
  const deadline = Date.now() + TIMEOUT_MS
  while (Date.now() < deadline) {
    if (await condition()) return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(`timed out waiting for ${label}`)
}

async function createDocument(docId) {
  const response = await fetch(`${baseUrl}/docs/${docId}`, { method: "PUT" })
  expect([200, 201]).toContain(response.status)
}

async function snapshotLocation(docId) {
  const response = await fetch(`${baseUrl}/docs/${docId}?offset=snapshot`, {
    redirect: "manual",
  })
  await response.arrayBuffer()
  expect(response.status).toBe(307)
  return response.headers.get("location") ?? ""
}

function state(doc) {
  return {
    text: doc.getText("text").toString(),
    map: Object.entries(doc.getMap("map").toJSON()).sort(), // key order depends on arrival
    list: doc.getArray("list").toArray(),
  }
}

describe.each(["sse", "long-poll"])("YjsProvider over live=%s", (liveMode) => {
  const providers = []
  afterEach(() => {
    for (const provider of providers.splice(0)) provider.destroy()
  })

  function join(docId) {
    const doc = new Y.Doc()
    const provider = new YjsProvider({ doc, baseUrl, docId, liveMode })
    providers.push(provider)
    return { doc, provider }
  }

  async function synced(provider) {
    await waitFor("the provider to sync", () => provider.synced)
  }

  it("two providers converge and a late joiner loads the same document", async () => {
    const docId = `provider-${liveMode}-${Date.now()}/nested`
    await createDocument(docId)
    const a = join(docId)
    const b = join(docId)
    await Promise.all([synced(a.provider), synced(b.provider)])

    // Concurrent edits from both sides, in all three shared types.
    for (let i = 0; i < EDITS; i++) {
      a.doc.getText("text").insert(0, `a${i} `.padEnd(40, "."))
      b.doc.getText("text").insert(b.doc.getText("text").length, `b${i} `.padEnd(40, "."))
      a.doc.getMap("map").set(`a${i}`, i)
      b.doc.getMap("map").set("shared", `b${i}`)
      b.doc.getArray("list").push([i])
    }
    await waitFor("a and b to converge", () =>
      JSON.stringify(state(a.doc)) === JSON.stringify(state(b.doc)) &&
      a.doc.getArray("list").length === EDITS &&
      a.doc.getMap("map").size === EDITS + 1
    )
    expect(a.doc.getText("text").toString()).toContain("a0 ")
    expect(a.doc.getText("text").toString()).toContain(`b${EDITS - 1} `)
    expect(a.doc.getMap("map").get("shared")).toBe(`b${EDITS - 1}`)

    if (expectSnapshot) {
      await waitFor("a snapshot", async () =>
        (await snapshotLocation(docId)).includes("_snapshot")
      )
    }

    // A late joiner loads everything so far, then edits with the others.
    const c = join(docId)
    await synced(c.provider)
    await waitFor("the late joiner to load the document", () =>
      JSON.stringify(state(c.doc)) === JSON.stringify(state(a.doc))
    )
    c.doc.getText("text").insert(0, "late ")
    a.doc.getMap("map").set("after", "join")
    await waitFor("all three to converge", () => {
      const [sa, sb, sc] = [a, b, c].map(({ doc }) => JSON.stringify(state(doc)))
      return sa === sb && sb === sc && sc.includes("late ") && sc.includes("join")
    })
  })
})
