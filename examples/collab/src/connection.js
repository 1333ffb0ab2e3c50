// Whether the server can be reached, as the page's own requests find it. The official
// clients retry on their own (the stream readers back off and resume from their offsets),
// and none of them says so, so every request this page makes to its server goes through
// `watch`: a network failure or a 5xx means "reconnecting" until a request gets through.

/** @typedef {"connecting" | "connected" | "reconnecting"} Reachability */

export class Connection extends EventTarget {
  /** @type {Reachability} */
  reachability = "connecting"
  failures = 0 // requests that failed since the last one that got through

  /** Wraps `globalThis.fetch` for requests to `origin`; others pass untouched. */
  watch(origin) {
    const original = globalThis.fetch.bind(globalThis)
    globalThis.fetch = async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input), location.href)
      if (url.origin !== origin) return original(input, init)
      try {
        const response = await original(input, init)
        if (response.status >= 500) this.#set("reconnecting")
        else this.#set("connected")
        return response
      } catch (error) {
        if (error?.name !== "AbortError") this.#set("reconnecting")
        throw error
      }
    }
  }

  /** @param {Reachability} reachability */
  #set(reachability) {
    this.failures = reachability === "reconnecting" ? this.failures + 1 : 0
    if (this.reachability === reachability) return
    this.reachability = reachability
    this.dispatchEvent(new Event("change"))
  }
}

/** Calls `attempt` until it resolves: 250 ms after a failure, doubling up to 5 s. */
export async function retry(attempt, signal) {
  for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
    try {
      return await attempt()
    } catch (error) {
      if (signal?.aborted) throw error
      await new Promise((resolve) => setTimeout(resolve, delay))
    }
  }
}
