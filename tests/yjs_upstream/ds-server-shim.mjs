// Stands in for `@durable-streams/server` when the suite runs over our server: the suite's
// `new DurableStreamTestServer({port: 0})` and `start()` then name the server at YJS_DS_URL
// (started by tests/test_yjs_upstream.py) instead of starting the Node reference server, so
// upstream's YjsServer (dsServerUrl: dsServer.url) and the tests that fetch dsServer.url
// directly both talk to it.
export class DurableStreamTestServer {
  constructor(_options) {
    const url = process.env.YJS_DS_URL
    if (!url) throw new Error("YJS_DS_URL is required")
    this.url = url.replace(/\/+$/, "")
  }

  async start() {
    return this.url
  }

  async stop() {}
}
