// `process.nextTick` for browsers, before anything else runs.
//
// The official client's IdempotentProducer (@durable-streams/client 0.2.6, through the
// provider) queues its batches with fastq, whose `drained()` calls `process.nextTick`. In a
// browser there is no `process`: that promise rejects, and every batch the producer holds
// back until its first write is answered is dropped without a word (edits typed in the first
// few milliseconds never reach anyone). A microtask is what nextTick means here.
globalThis.process ??= { env: {} }
globalThis.process.nextTick ??= (callback, ...args) => queueMicrotask(() => callback(...args))
