import { defineConfig } from "vitest/config"

// One file, its tests in order; each test is bounded well below these limits.
export default defineConfig({
  test: {
    include: ["state.test.mjs"],
    testTimeout: 30_000,
    hookTimeout: 10_000,
  },
})
