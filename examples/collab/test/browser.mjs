// The collab page in a real browser (Debian's Chromium through puppeteer-core), against the
// server at COLLAB_URL; tests/test_collab_browser.py runs it and restarts that server when
// asked. Each person is a browser context of their own (separate windows, as two people).
//
//   1. Ann and Bob type into the text at the same time, keystroke for keystroke: both end
//      with the same text, holding every keystroke in order.
//   2. Both add, complete and delete todos at the same time: both end with the same list,
//      equal to the server's ?state=snapshot of the stream. A screenshot of the two windows
//      side by side goes to COLLAB_SCREENSHOT.
//   3. Cid opens the page later: it loads the todo list through the snapshot and the text
//      through the Yjs snapshot (the bytes and requests it made say so), then sees live edits.
//   4. The server stops (`{"stop": true}` on stdout, answered by a line on stdin): every page
//      says it is reconnecting; Ann types and Bob adds a todo while it is away. It starts
//      again (`{"start": true}`): every page resumes without a reload, the offline edits
//      reach everyone once, and further edits from each reach the others.
//
// Waits are for conditions, each bounded (TIMEOUT_MS); the last stdout line is a summary.
import { createInterface } from "node:readline"
import puppeteer from "puppeteer-core"
import * as Y from "yjs"
import * as decoding from "lib0/decoding"

const BASE = process.env.COLLAB_URL
const CHROMIUM = process.env.COLLAB_CHROMIUM ?? "/usr/bin/chromium"
const SCREENSHOT = process.env.COLLAB_SCREENSHOT
if (!BASE) throw new Error("COLLAB_URL is required")
const TIMEOUT_MS = 20_000
const ROOM = `room-${Date.now()}`
const TODOS_URL = `${BASE}/v1/stream/collab/${ROOM}/todos`
const DOC_URL = `${BASE}/v1/yjs/collab/docs/${ROOM}`
const began = Date.now()
const timings = {}
const errors = []

setTimeout(() => {
  console.error("the browser test ran out of time")
  process.exit(2)
}, 240_000).unref()

// ---- talking to the test that runs the server -------------------------------------------
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
async function ask(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`)
  const { value, done } = await lines.next()
  if (done) throw new Error(`no answer to ${JSON.stringify(message)}`)
  return value
}

// ---- people ---------------------------------------------------------------------------
const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--no-first-run", "--font-render-hinting=none"],
})

async function open(name) {
  const context = await browser.createBrowserContext()
  const page = await context.newPage()
  await page.setViewport({ width: 860, height: 640 })
  page.on("pageerror", (error) => errors.push(`${name}: ${error.message}`))
  page.on("response", (response) => {
    if (response.status() >= 400) console.error(`[${name}] ${response.status()} ${response.request().method()} ${response.url()}`)
  })
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warn") console.error(`[${name}] ${message.type()} ${message.text()}`)
  })
  // Every response's bytes as they arrive (streaming reads included), by request.
  const traffic = new Map()
  const cdp = await page.createCDPSession()
  await cdp.send("Network.enable")
  cdp.on("Network.requestWillBeSent", ({ requestId, request }) => {
    traffic.set(requestId, { url: new URL(request.url), method: request.method, bytes: 0 })
  })
  cdp.on("Network.dataReceived", ({ requestId, dataLength }) => {
    const seen = traffic.get(requestId)
    if (seen) seen.bytes += dataLength
  })
  await page.goto(`${BASE}/examples/collab/?room=${ROOM}&name=${name}`)
  return { name, page, traffic }
}

async function until(person, label, condition, ...args) {
  try {
    await person.page.waitForFunction(condition, { timeout: TIMEOUT_MS, polling: 50 }, ...args)
  } catch (error) {
    throw new Error(`${person.name}: waiting for ${label}: ${error.message}`)
  }
}

const status = (person, wanted) =>
  until(person, `status ${wanted}`, (s) => document.body.dataset.status === s, wanted)
const present = (person, count) =>
  until(person, `${count} present`, (n) => document.querySelector("#count").dataset.count === String(n), count)
/** The server's document as a fresh Y.Doc folds it: its text, and whether updates are missing. */
async function serverText() {
  const doc = new Y.Doc()
  const bytes = new Uint8Array(await (await fetch(`${DOC_URL}?offset=-1`)).arrayBuffer())
  const decoder = decoding.createDecoder(bytes)
  while (decoding.hasContent(decoder)) Y.applyUpdate(doc, decoding.readVarUint8Array(decoder))
  return JSON.stringify([doc.getText("notes").toString(), doc.store.pendingStructs !== null])
}

async function textIs(person, expected) {
  try {
    await until(person, "the text", (t) => document.querySelector("#editor").value === t, expected)
  } catch (error) {
    const [want, have] = [expected, await text(person)].map((t) => JSON.stringify(t))
    const head = await fetch(DOC_URL, { method: "HEAD" })
    const served = head.headers.get("stream-next-offset")
    const ydoc = await person.page.evaluate(() => {
      const { text, provider, doc } = window.collab
      return JSON.stringify([text.toString(), provider.connected, provider.synced, doc.store.pendingStructs !== null])
    })
    const server = await serverText()
    const reads = [...person.traffic.values()].filter((r) => r.url.search.includes("live")).map((r) => `${r.url.search} ${r.bytes}`)
    throw new Error(
      `${error.message}: want ${want}, have ${have}; the Y.Text, connected, synced, waiting for` +
        ` missing updates: ${ydoc}; the server's document: ${server} (to ${served});` +
        ` live reads: ${reads.join(" | ")}`
    )
  }
}
const text = (person) => person.page.$eval("#editor", (area) => area.value)

/** Types `keys` one keystroke at a time, where the caret is. */
async function type(person, keys) {
  for (const key of keys) await person.page.keyboard.type(key)
}

/** Ann and Bob type at the same time, one keystroke each in turn. */
async function typeTogether(first, firstKeys, second, secondKeys) {
  for (let i = 0; i < Math.max(firstKeys.length, secondKeys.length); i++) {
    await Promise.all([
      i < firstKeys.length ? first.page.keyboard.type(firstKeys[i]) : null,
      i < secondKeys.length ? second.page.keyboard.type(secondKeys[i]) : null,
    ])
  }
}

async function caretTo(person, where) {
  await person.page.focus("#editor")
  await person.page.keyboard.down("Control")
  await person.page.keyboard.press(where === "start" ? "Home" : "End")
  await person.page.keyboard.up("Control")
}

// ---- todos ----------------------------------------------------------------------------
const rows = (person) =>
  person.page.$$eval("#todos li", (items) =>
    items.map((li) => ({
      id: li.dataset.id,
      title: li.querySelector(".title").textContent,
      done: li.querySelector(".toggle").checked,
      pending: li.classList.contains("pending"),
    }))
  )

async function addTodos(person, titles) {
  for (const title of titles) {
    await person.page.type("#title", title)
    await person.page.keyboard.press("Enter")
  }
}

/** Clicks a row's checkbox or delete button, found by its title when it is shown. */
async function clickRow(person, title, selector) {
  await until(
    person,
    `a row ${title} to click`,
    (t, s) => {
      const row = [...document.querySelectorAll("#todos li:not(.pending)")].find(
        (li) => li.querySelector(".title").textContent === t
      )
      row?.querySelector(s).click() // found and clicked in one go: rows are redrawn often
      return Boolean(row)
    },
    title,
    selector
  )
}

/** Waits until the person's list (settled: nothing pending) is `expected` [{title, done}]. */
async function listIs(person, expected) {
  const want = JSON.stringify([...expected].sort((a, b) => a.title.localeCompare(b.title)))
  await until(
    person,
    `the list ${want}`,
    (w) => {
      const items = [...document.querySelectorAll("#todos li")]
      const have = items
        .map((li) => ({
          title: li.querySelector(".title").textContent,
          done: li.querySelector(".toggle").checked,
        }))
        .sort((a, b) => a.title.localeCompare(b.title))
      return !items.some((li) => li.classList.contains("pending")) && JSON.stringify(have) === w
    },
    want
  )
}

/** The server's folded todo list: [{id, title, done}]. */
async function snapshotRows() {
  const response = await fetch(`${TODOS_URL}?state=snapshot`)
  if (response.status !== 200) throw new Error(`snapshot: ${response.status}`)
  const messages = await response.json()
  return messages
    .filter((m) => m.type === "todo")
    .map(({ key, value }) => ({ id: key, title: value.title, done: value.done }))
}

function same(a, b, label) {
  const norm = (list) =>
    JSON.stringify(list.map(({ id, title, done }) => ({ id, title, done })).sort((x, y) => x.id.localeCompare(y.id)))
  if (norm(a) !== norm(b)) throw new Error(`${label}: ${norm(a)} != ${norm(b)}`)
}

function check(condition, message) {
  if (!condition) throw new Error(message)
}

function lap(name) {
  timings[name] = Date.now() - began
}

// ---- the scenario -----------------------------------------------------------------------
try {
  const ann = await open("Ann")
  const bob = await open("Bob")
  await Promise.all([status(ann, "connected"), status(bob, "connected")])
  await Promise.all([present(ann, 2), present(bob, 2)])
  lap("connected")

  // 1. The text, typed at the same time from both windows.
  await caretTo(ann, "end")
  await type(ann, "Saturday\n")
  await textIs(bob, "Saturday\n")
  await caretTo(ann, "start")
  await caretTo(bob, "end")
  const annKeys = "Plans for the weekend\n\n"
  const bobKeys = "- farmers market at 9\n- lunch with Sam"
  await typeTogether(ann, annKeys, bob, bobKeys)
  const together = `${annKeys}Saturday\n${bobKeys}`
  await Promise.all([textIs(ann, together), textIs(bob, together)])
  lap("text")

  // 2. Todos, added, completed and deleted from both windows at the same time.
  await Promise.all([
    addTodos(ann, ["Buy bread", "Call the plumber", "Water the plants"]),
    addTodos(bob, ["Book train tickets", "Pay rent", "Fix the bike"]),
  ])
  const six = ["Buy bread", "Call the plumber", "Water the plants", "Book train tickets", "Pay rent", "Fix the bike"]
  await Promise.all([ann, bob].map((p) => listIs(p, six.map((title) => ({ title, done: false })))))
  await Promise.all([
    (async () => {
      await clickRow(ann, "Book train tickets", ".toggle")
      await clickRow(ann, "Water the plants", ".remove")
    })(),
    (async () => {
      await clickRow(bob, "Buy bread", ".toggle")
      await clickRow(bob, "Fix the bike", ".remove")
    })(),
  ])
  const four = [
    { title: "Buy bread", done: true },
    { title: "Call the plumber", done: false },
    { title: "Book train tickets", done: true },
    { title: "Pay rent", done: false },
  ]
  await Promise.all([listIs(ann, four), listIs(bob, four)])
  const served = await snapshotRows()
  same(await rows(ann), served, "Ann's list and the server's snapshot")
  same(await rows(bob), served, "Bob's list and the server's snapshot")
  lap("todos")

  if (SCREENSHOT) {
    // Both carets drawn in the other's window, then the two windows side by side.
    await caretTo(bob, "end")
    await until(ann, "Bob's caret", () => document.querySelectorAll(".caret").length === 1)
    await caretTo(ann, "start")
    await until(bob, "Ann's caret", () => document.querySelectorAll(".caret").length === 1)
    const shots = await Promise.all(
      [ann, bob].map(async (p) => (await p.page.screenshot({ encoding: "base64" })).toString())
    )
    const board = await browser.newPage()
    await board.setViewport({ width: 860 * 2 + 48, height: 640 + 32 })
    await board.setContent(
      `<body style="margin:0;padding:16px;display:flex;gap:16px;background:#c9ced6">${shots
        .map((s) => `<img style="box-shadow:0 2px 8px #0004" src="data:image/png;base64,${s}">`)
        .join("")}</body>`
    )
    await board.screenshot({ path: SCREENSHOT })
    await board.close()
  }

  // 3. A late joiner: a long history first, so that replaying it would show.
  const [pay] = served.filter((row) => row.title === "Pay rent")
  const payRow = (await (await fetch(`${TODOS_URL}?state=snapshot`)).json()).find((m) => m.key === pay.id).value
  const churn = Array.from({ length: 200 }, (_, i) => ({
    type: "todo",
    key: pay.id,
    value: { ...payRow, done: i % 2 === 0 && i < 199 ? !payRow.done : payRow.done },
    headers: { operation: "update", txid: `churn-${i}` },
  }))
  const posted = await fetch(TODOS_URL, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(churn),
  })
  check(posted.ok, `writing the history: ${posted.status}`)
  const history = (await (await fetch(`${TODOS_URL}?offset=-1`)).arrayBuffer()).byteLength
  let location = ""
  for (let tries = 0; !location.includes("_snapshot") && tries < 200; tries++) {
    const found = await fetch(`${DOC_URL}?offset=snapshot`, { redirect: "manual" })
    location = found.headers.get("location") ?? ""
    if (!location.includes("_snapshot")) await new Promise((r) => setTimeout(r, 50)) // the server compacts in the background
  }
  check(location.includes("_snapshot"), `the document was not compacted: ${location}`)

  const cid = await open("Cid")
  await status(cid, "connected")
  await textIs(cid, together)
  await listIs(cid, four)
  await Promise.all([ann, bob, cid].map((p) => present(p, 3)))
  const reads = [...cid.traffic.values()].filter((r) => r.method === "GET")
  const todoReads = reads.filter((r) => r.url.pathname.endsWith("/todos"))
  const first = todoReads[0]
  check(first?.url.searchParams.get("state") === "snapshot", `Cid's first list read: ${first?.url}`)
  const todoBytes = todoReads.reduce((sum, r) => sum + r.bytes, 0)
  check(todoBytes * 4 < history, `Cid read ${todoBytes} bytes of the list; its history is ${history}`)
  const docReads = reads.filter((r) => r.url.pathname.endsWith(`/docs/${ROOM}`) && !r.url.searchParams.has("awareness"))
  const offsets = docReads.map((r) => r.url.searchParams.get("offset"))
  check(offsets.some((o) => o?.endsWith("_snapshot")), `Cid's document reads: ${offsets}`)
  check(!offsets.includes("-1"), `Cid replayed the document from -1: ${docReads.map((r) => `${r.url.search} ${r.bytes}`)}`)
  // ...and then sees the others' edits live.
  await caretTo(ann, "end")
  await type(ann, "\n- dinner at 8")
  await addTodos(bob, ["Bring wine"])
  const withDinner = `${together}\n- dinner at 8`
  await Promise.all([textIs(cid, withDinner), textIs(bob, withDinner)])
  const five = [...four, { title: "Bring wine", done: false }]
  await Promise.all([ann, bob, cid].map((p) => listIs(p, five)))
  lap("late joiner")

  // 4. The server goes away and comes back.
  await ask({ stop: true })
  await Promise.all([ann, bob, cid].map((p) => status(p, "reconnecting")))
  lap("stopped")
  await caretTo(ann, "end")
  await type(ann, "\n- offline note")
  await addTodos(bob, ["Offline todo"])
  await until(bob, "the offline todo, pending", () =>
    [...document.querySelectorAll("#todos li.pending .title")].some((t) => t.textContent === "Offline todo")
  )
  await ask({ start: true })
  await Promise.all([ann, bob, cid].map((p) => status(p, "connected")))
  lap("reconnected")
  const offline = `${withDinner}\n- offline note`
  const six2 = [...five, { title: "Offline todo", done: false }]
  await Promise.all([ann, bob, cid].map((p) => textIs(p, offline)))
  await Promise.all([ann, bob, cid].map((p) => listIs(p, six2)))
  // Further edits from each reach the others.
  await caretTo(bob, "end")
  await type(bob, "\n- back online")
  await addTodos(ann, ["After the restart"])
  const final = `${offline}\n- back online`
  const seven = [...six2, { title: "After the restart", done: false }]
  await Promise.all([ann, bob, cid].map((p) => textIs(p, final)))
  await Promise.all([ann, bob, cid].map((p) => listIs(p, seven)))
  const servedAfter = await snapshotRows()
  for (const p of [ann, bob, cid]) same(await rows(p), servedAfter, `${p.name}'s list after the restart`)
  lap("resumed")
  check(errors.length === 0, `errors in the pages: ${errors.join("; ")}`)
  process.stdout.write(`${JSON.stringify({ done: true, timings, history, todoBytes })}\n`)
} catch (error) {
  process.stdout.write(`${JSON.stringify({ done: false, error: String(error?.stack ?? error), timings })}\n`)
  process.exitCode = 1
} finally {
  await browser.close()
  process.stdin.destroy()
}
