// A Y.Text bound to a <textarea>, and the others' cursors drawn behind it.
//
// Local edits become one delete and one insert (the difference between the text before and
// after, anchored at the caret so that typing a repeated letter lands where it was typed).
// Remote edits keep the local selection where it was by moving it through the edit's delta.
// Cursors travel in awareness as Yjs relative positions, which stay on the same characters
// while others type before them.
import * as Y from "yjs"

const LOCAL = "textarea" // the origin of transactions made here

/** The one replacement that turns `before` into `after`, its end at `caret` in `after`. */
export function difference(before, after, caret) {
  let endBefore = before.length
  let endAfter = after.length
  while (
    endBefore > 0 &&
    endAfter > caret &&
    before[endBefore - 1] === after[endAfter - 1]
  ) {
    endBefore--
    endAfter--
  }
  let start = 0
  while (start < endBefore && start < endAfter && before[start] === after[start]) start++
  return { start, removed: endBefore - start, inserted: after.slice(start, endAfter) }
}

/** Where `index` is after a change given as a Yjs delta (it stays before text inserted at it). */
export function moved(index, delta) {
  let position = 0
  for (const op of delta) {
    if (op.retain !== undefined) position += op.retain
    else if (op.insert !== undefined) {
      const length = typeof op.insert === "string" ? op.insert.length : 1
      if (position < index) index += length
      position += length
    } else if (op.delete !== undefined && position < index) {
      index -= Math.min(op.delete, index - position)
    }
  }
  return index
}

export class BoundTextarea {
  /**
   * @param {Y.Text} text
   * @param {HTMLTextAreaElement} textarea
   * @param {HTMLElement} backdrop an element behind the textarea, styled like it
   * @param {import("y-protocols/awareness").Awareness} awareness
   */
  constructor(text, textarea, backdrop, awareness) {
    this.text = text
    this.textarea = textarea
    this.backdrop = backdrop
    this.awareness = awareness
    textarea.value = text.toString()
    textarea.addEventListener("input", () => this.#local())
    textarea.addEventListener("scroll", () => this.#syncScroll())
    document.addEventListener("selectionchange", () => this.#publishCursor())
    textarea.addEventListener("focus", () => this.#publishCursor())
    text.observe((event) => this.#remote(event))
    awareness.on("change", () => this.draw())
  }

  #local() {
    const { start, removed, inserted } = difference(
      this.text.toString(),
      this.textarea.value,
      this.textarea.selectionEnd
    )
    this.text.doc.transact(() => {
      if (removed > 0) this.text.delete(start, removed)
      if (inserted) this.text.insert(start, inserted)
    }, LOCAL)
    this.#publishCursor()
    this.draw()
  }

  #remote(event) {
    if (event.transaction.origin === LOCAL) return
    const { selectionStart, selectionEnd, selectionDirection } = this.textarea
    const focused = document.activeElement === this.textarea
    this.textarea.value = this.text.toString()
    if (focused) {
      this.textarea.setSelectionRange(
        moved(selectionStart, event.delta),
        moved(selectionEnd, event.delta),
        selectionDirection
      )
    }
    this.draw()
  }

  #publishCursor() {
    if (document.activeElement !== this.textarea) return
    const at = (index) =>
      Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(this.text, index))
    const { selectionStart, selectionEnd, selectionDirection } = this.textarea
    const [anchor, head] =
      selectionDirection === "backward"
        ? [selectionEnd, selectionStart]
        : [selectionStart, selectionEnd]
    const previous = this.awareness.getLocalState()?.cursor
    const cursor = { anchor: at(anchor), head: at(head) }
    if (JSON.stringify(previous) !== JSON.stringify(cursor)) {
      this.awareness.setLocalStateField("cursor", cursor)
    }
  }

  /** Where each other person's cursor is now: [{name, color, from, to, head}]. */
  cursors() {
    const doc = this.text.doc
    const found = []
    for (const [clientId, state] of this.awareness.getStates()) {
      if (clientId === this.awareness.clientID || !state?.cursor || !state.user) continue
      const index = (json) =>
        Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(json), doc)
          ?.index
      const anchor = index(state.cursor.anchor)
      const head = index(state.cursor.head)
      if (anchor === undefined || head === undefined) continue
      const { name, color } = state.user
      found.push({ name, color, from: Math.min(anchor, head), to: Math.max(anchor, head), head })
    }
    return found
  }

  /** Draws the text again behind the textarea, with others' selections and carets in it. */
  draw() {
    const value = this.textarea.value
    const cursors = this.cursors().sort((a, b) => a.head - b.head)
    const marks = [] // [index, kind, cursor] in text order
    for (const cursor of cursors) {
      if (cursor.to > cursor.from) {
        marks.push([cursor.from, "start", cursor], [cursor.to, "end", cursor])
      }
      marks.push([cursor.head, "caret", cursor])
    }
    marks.sort((a, b) => a[0] - b[0])
    const fragment = document.createDocumentFragment()
    const open = new Set()
    let at = 0
    const textUpTo = (index) => {
      if (index <= at) return
      const span = document.createElement("span")
      span.textContent = value.slice(at, index)
      const [selecting] = open
      if (selecting) span.style.background = `${selecting.color}40`
      fragment.append(span)
      at = index
    }
    for (const [index, kind, cursor] of marks) {
      textUpTo(Math.min(index, value.length))
      if (kind === "start") open.add(cursor)
      else if (kind === "end") open.delete(cursor)
      else {
        const caret = document.createElement("span")
        caret.className = "caret"
        caret.style.borderColor = cursor.color
        const label = document.createElement("span")
        label.className = "caret-label"
        label.style.background = cursor.color
        label.textContent = cursor.name
        caret.append(label)
        fragment.append(caret)
      }
    }
    textUpTo(value.length)
    fragment.append("\u200b") // keeps a trailing newline's line
    this.backdrop.replaceChildren(fragment)
    this.#syncScroll()
  }

  #syncScroll() {
    this.backdrop.scrollTop = this.textarea.scrollTop
  }
}
