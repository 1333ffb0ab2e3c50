"""The table shape the feature sections of docs/benchmarks.md share (State Protocol, Yjs):
one row per measurement, one column per server, a cell drawn from that server's entry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Results = dict[str, dict[str, Any]]
Cell = Callable[[dict[str, Any], Results, str], str]  # (entry, all results, server) -> text
Row = tuple[str, str, Cell]  # label, results key, cell


def entry(results: Results, server: str, key: str) -> dict[str, Any] | None:
    value = results.get(server, {}).get(key)
    return value if isinstance(value, dict) else None


def grid(
    columns: Sequence[tuple[str, str]], rows: Sequence[Row], results: Results, skeleton: bool
) -> str:
    """The rows something was measured for (every row with `skeleton`), "—" where a server
    has no entry."""
    lines = [
        "| Scenario | " + " | ".join(label for _, label in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, key, cell in rows:
        entries = [(server, entry(results, server, key)) for server, _ in columns]
        if skeleton or any(found for _, found in entries):
            cells = [cell(e, results, s) if e is not None else "—" for s, e in entries]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
