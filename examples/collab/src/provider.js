// The official YjsProvider, with one change for browsers: how it finds the snapshot.
//
// It asks `?offset=snapshot` with `redirect: "manual"` and reads the 307's Location. In a
// browser a manual redirect is an opaque response (status 0, no headers), so the provider
// falls back to reading the whole document from -1, every time. Here the redirect is
// followed instead: the final URL tells where it led (`<o>_snapshot`, or `-1` for a document
// without one), and the body is used as it is: the snapshot, or the first updates.
import * as Y from "yjs"
import { YjsProvider } from "@durable-streams/y-durable-streams"

export class BrowserYjsProvider extends YjsProvider {
  /** Replaces the provider's own (same name, same contract: sets ctx.startOffset). */
  async discoverSnapshot(ctx) {
    const response = await fetch(`${this.docUrl()}?offset=snapshot`, {
      headers: this.headers,
      signal: ctx.controller.signal,
    })
    const data = new Uint8Array(await response.arrayBuffer())
    const next = response.headers.get("stream-next-offset")
    if (!response.ok || next === null) {
      ctx.startOffset = "-1" // e.g. a snapshot removed since the redirect: read it all
      return
    }
    if (new URL(response.url).searchParams.get("offset")?.endsWith("_snapshot")) {
      if (data.length > 0) Y.applyUpdate(this.doc, data, "server")
    } else {
      this.applyUpdates(data) // lib0-framed updates from the start
    }
    ctx.startOffset = next
  }

  applyUpdates(data) {
    try {
      super.applyUpdates(data)
    } catch (error) {
      console.error("[collab] updates not applied:", error, Array.from(data).join(","))
      throw error
    }
  }
}
