"""The offline commands (`streams ls`, `streams export`, `streams import`): each runs a
registry and the stream actors in-process on a data directory no server holds, so every read
and write goes through the actors and the pure core, as a server's would (docs/operations.md,
"CLI")."""
