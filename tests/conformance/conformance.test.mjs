// Runs the official conformance suite against the server at CONFORMANCE_TEST_URL.
// The package's own CLI finds no tests as published, so we call it from here.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.CONFORMANCE_TEST_URL
if (!baseUrl) throw new Error("CONFORMANCE_TEST_URL is required")

runConformanceTests({
  baseUrl,
  subscriptions: process.env.CONFORMANCE_SUBSCRIPTIONS === "1",
})
