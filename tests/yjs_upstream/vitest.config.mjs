import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

// Which file runs, and over what, is chosen by the environment (tests/test_yjs_upstream.py):
// - YJS_SUITE=provider: provider.test.mjs, our YjsProvider test, at YJS_PROVIDER_URL.
// - otherwise upstream's suite (upstream/yjs-conformance.test.ts, a verbatim copy), with
//   - YJS_CONFORMANCE_URL: against that Yjs endpoint (upstream's own external mode);
//   - YJS_DS_URL: upstream's YjsServer in front of the durable streams server at that URL
//     (the suite's `new DurableStreamTestServer()` becomes ds-server-shim.mjs);
//   - neither: upstream's YjsServer in front of the Node reference server, as upstream runs it.
// The suite imports `../src` and `../src/server` (its package's sources); both resolve to
// the published package's entry points, unchanged.
const local = (path) => fileURLToPath(new URL(path, import.meta.url))
const alias = [
  { find: /^\.\.\/src$/, replacement: "@durable-streams/y-durable-streams" },
  { find: /^\.\.\/src\/server$/, replacement: "@durable-streams/y-durable-streams/server" },
]
if (process.env.YJS_DS_URL) {
  alias.push({ find: /^@durable-streams\/server$/, replacement: local("./ds-server-shim.mjs") })
}

export default defineConfig({
  resolve: { alias },
  test: {
    include: [
      process.env.YJS_SUITE === "provider"
        ? "provider.test.mjs"
        : "upstream/yjs-conformance.test.ts",
    ],
    testTimeout: 30_000,
    hookTimeout: 10_000,
  },
})
