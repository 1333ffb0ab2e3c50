// Starts upstream's YjsServer (@durable-streams/y-durable-streams, pinned in package.json) in
// front of the Node reference server, both in this one process, for the Yjs benchmark:
//   node yjs-server.mjs --port 18437 [--data-dir DIR] [--compaction-threshold BYTES]
// The reference server listens on a free port of its own (in memory, or file-backed with
// --data-dir); the YjsServer on --port serves /v1/yjs/<service>/docs/<doc> and proxies the rest.
// Each compaction's start and end are logged ("compaction start|end <service/doc> <epoch ms>"),
// so that the benchmark can check the windows it derives from the protocol.
import { DurableStreamTestServer } from "@durable-streams/server"
import { YjsServer } from "@durable-streams/y-durable-streams/server"

const args = process.argv.slice(2)
function option(name, fallback) {
  const index = args.indexOf(name)
  return index >= 0 ? args[index + 1] : fallback
}

const storeOptions = { host: "127.0.0.1", port: 0, longPollTimeout: 20000 }
const dataDir = option("--data-dir", undefined)
if (dataDir) storeOptions.dataDir = dataDir
const store = new DurableStreamTestServer(storeOptions)
const storeUrl = await store.start()

const yjs = new YjsServer({
  host: "127.0.0.1",
  port: Number(option("--port", "4438")),
  dsServerUrl: storeUrl,
  compactionThreshold: Number(option("--compaction-threshold", String(1024 * 1024))),
})
const tryStart = yjs.tryStartCompaction.bind(yjs)
yjs.tryStartCompaction = (service, docPath) => {
  const started = tryStart(service, docPath)
  if (started) console.log(`compaction start ${service}/${docPath} ${Date.now()}`)
  return started
}
const setCompacting = yjs.setCompacting.bind(yjs)
yjs.setCompacting = (service, docPath, compacting) => {
  if (!compacting) console.log(`compaction end ${service}/${docPath} ${Date.now()}`)
  setCompacting(service, docPath, compacting)
}
const url = await yjs.start()
console.log(`ready ${url} over ${storeUrl}`)

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  // stop() waits for open keep-alive connections; do not let it hold the benchmark up
  setTimeout(() => process.exit(0), 3000).unref()
  await yjs.stop()
  await store.stop()
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
