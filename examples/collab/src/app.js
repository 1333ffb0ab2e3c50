// The collab page: a shared text (Yjs, through the official YjsProvider and this server's
// Yjs endpoints) with everyone's cursors, and a shared todo list (a State Protocol stream,
// through the official StreamDB). `?room=<name>` picks the room, `?name=<you>` your name.
import "./shims.js" // first: the libraries below need it
import * as Y from "yjs"
import { Awareness } from "y-protocols/awareness"
import { BrowserYjsProvider } from "./provider.js"
import * as encoding from "lib0/encoding"
import { Connection, retry } from "./connection.js"
import { BoundTextarea } from "./text.js"
import { TodoList } from "./todos.js"

const COLORS = ["#d94f4f", "#2f7ed8", "#2a9d5b", "#b5651d", "#8e44ad", "#c2185b", "#00838f"]
const $ = (selector) => document.querySelector(selector)

const query = new URLSearchParams(location.search)
const room = /^[A-Za-z0-9_-]{1,64}$/.test(query.get("room") ?? "") ? query.get("room") : "demo"
const name = (query.get("name") || `Guest ${100 + Math.floor(Math.random() * 900)}`).slice(0, 24)

const connection = new Connection()
connection.watch(location.origin)
const config = await retry(async () => {
  const response = await fetch("config.json")
  if (!response.ok) throw new Error(`config.json: ${response.status}`)
  return response.json()
})

// ---- the shared text ------------------------------------------------------------------
const doc = new Y.Doc()
const text = doc.getText("notes")
const awareness = new Awareness(doc)
const user = { name, color: COLORS[doc.clientID % COLORS.length] }
awareness.setLocalStateField("user", user)
const yjsBase = `${location.origin}${config.yjsBase}/collab`
const docUrl = `${yjsBase}/docs/${room}`
const provider = new BrowserYjsProvider({ doc, awareness, baseUrl: yjsBase, docId: room })
const editor = new BoundTextarea(text, $("#editor"), $("#backdrop"), awareness)

// The provider keeps reading through an outage (its reads retry from their offset), but a
// write that fails disconnects it, and a failed reconnect leaves it disconnected; while it
// is not connected it does not send local edits at all. So: connect it again, and once it
// has caught up, send the whole local document once (Yjs ignores what the server already
// has), so that nothing typed meanwhile is lost.
let leaving = false
let everSynced = false
let resendOnSync = false
let reconnectDelay = 250
provider.on("status", (status) => {
  if (status !== "disconnected" && awareness.getLocalState() === null) {
    awareness.setLocalState({ user }) // disconnecting cleared it
  }
  if (status === "connected") reconnectDelay = 250
  if (status === "disconnected" && !leaving) {
    resendOnSync = everSynced
    setTimeout(() => provider.connect(), reconnectDelay)
    reconnectDelay = Math.min(reconnectDelay * 2, 5000)
  }
  showStatus()
})
provider.on("synced", (synced) => {
  if (!synced || !provider.connected) return
  everSynced = true
  if (resendOnSync) {
    resendOnSync = false
    sendWholeDocument()
  }
  showStatus()
})
provider.on("error", (error) => console.warn("[collab] provider:", error.message))
// Awareness is read from "now", and the provider repeats a person's state only every 15 s:
// on its own, a newcomer would not see who is here for up to 15 s. So whoever sees a new
// face says again who they are (setting the same state sends it); the newcomer is no longer
// new to anyone once they have answered, so this stops.
awareness.on("update", ({ added }, origin) => {
  if (origin !== "local" && added.some((id) => id !== awareness.clientID)) {
    const state = awareness.getLocalState()
    if (state !== null) awareness.setLocalState(state)
  }
})
addEventListener("pagehide", () => {
  leaving = true
  provider.destroy() // tells the others this person left
})

async function sendWholeDocument() {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint8Array(encoder, Y.encodeStateAsUpdate(doc))
  const body = encoding.toUint8Array(encoder)
  await retry(async () => {
    const response = await fetch(docUrl, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body,
    })
    if (!response.ok) throw new Error(`sending the document: ${response.status}`)
  })
}

// ---- the shared todo list ---------------------------------------------------------------
const todos = new TodoList(`${location.origin}${config.streamBase}/collab/${room}/todos`)
todos.addEventListener("change", () => {
  showTodos()
  showStatus()
})
$("#add").addEventListener("submit", (event) => {
  event.preventDefault()
  const title = $("#title").value.trim()
  if (title) todos.add(title.slice(0, 200), name)
  $("#title").value = ""
})
$("#todos").addEventListener("click", (event) => {
  const id = event.target.closest("li")?.dataset.id
  if (!id) return
  if (event.target.matches(".toggle")) todos.toggle(id)
  if (event.target.matches(".remove")) todos.remove(id)
})
todos.open()

// ---- showing it -------------------------------------------------------------------------
function showStatus() {
  let status = connection.reachability
  if (status !== "reconnecting" && (!provider.connected || !todos.live)) {
    status = everSynced ? "reconnecting" : "connecting"
  }
  const element = $("#status")
  element.className = `status ${status}`
  element.textContent = status
  document.body.dataset.status = status
}

function showPeople() {
  const people = [...awareness.getStates()]
    .filter(([, state]) => state?.user)
    .map(([id, state]) => ({ ...state.user, me: id === awareness.clientID }))
    .sort((a, b) => Number(b.me) - Number(a.me) || a.name.localeCompare(b.name))
  $("#people").replaceChildren(
    ...people.map((person) => {
      const item = document.createElement("li")
      item.style.setProperty("--color", person.color)
      item.textContent = person.me ? `${person.name} (you)` : person.name
      return item
    })
  )
  $("#count").textContent = people.length === 1 ? "1 person here" : `${people.length} people here`
  $("#count").dataset.count = String(people.length)
}

function showTodos() {
  const rows = todos.rows()
  $("#todos").replaceChildren(
    ...rows.map((row) => {
      const item = document.createElement("li")
      item.dataset.id = row.id
      item.className = [row.done ? "done" : "", row.pending ? "pending" : ""].join(" ").trim()
      const toggle = document.createElement("input")
      toggle.type = "checkbox"
      toggle.className = "toggle"
      toggle.checked = row.done
      toggle.setAttribute("aria-label", `done: ${row.title}`)
      const title = document.createElement("span")
      title.className = "title"
      title.textContent = row.title
      const by = document.createElement("span")
      by.className = "by"
      by.textContent = row.by
      const remove = document.createElement("button")
      remove.className = "remove"
      remove.type = "button"
      remove.title = "delete"
      remove.textContent = "×"
      item.append(toggle, title, by, remove)
      return item
    })
  )
  const open = rows.filter((row) => !row.done).length
  $("#left").textContent = rows.length ? `${open} of ${rows.length} left` : "nothing to do"
}

$("#room").textContent = room
$("#me").textContent = name
awareness.on("change", showPeople)
connection.addEventListener("change", showStatus)
showPeople()
showTodos()
showStatus()
window.collab = { doc, text, awareness, provider, todos, editor, connection }
