// Starts the Node reference server (@durable-streams/server, pinned in package.json) for the
// benchmark: node server.mjs --port 18437 [--data-dir DIR] [--long-poll-ms 20000]
// Without --data-dir it uses the in-memory store; with it, the file-backed one (LMDB + logs).
import { DurableStreamTestServer } from "@durable-streams/server"

const args = process.argv.slice(2)
function option(name, fallback) {
  const index = args.indexOf(name)
  return index >= 0 ? args[index + 1] : fallback
}

const options = {
  host: "127.0.0.1",
  port: Number(option("--port", "4437")),
  longPollTimeout: Number(option("--long-poll-ms", "20000")),
}
const dataDir = option("--data-dir", undefined)
if (dataDir) options.dataDir = dataDir

const server = new DurableStreamTestServer(options)
const url = await server.start()
console.log(`ready ${url}`)

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  // stop() waits for open keep-alive connections; do not let it hold the benchmark up
  setTimeout(() => process.exit(0), 3000).unref()
  await server.stop()
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
