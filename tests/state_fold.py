"""What a State Protocol stream should read as, computed from the changes a test sent: the
reference the HTTP and kill tests compare the server's snapshots with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RESET = {"headers": {"control": "reset"}}


def change(
    key: str, value: Any = None, operation: str = "upsert", kind: str = "todo", **headers: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {"type": kind, "key": key, "headers": {"operation": operation}}
    if operation != "delete":
        message["value"] = value
    message["headers"].update(headers)
    return message


def marker(control: str, offset: str) -> dict[str, Any]:
    return {"headers": {"control": control, "offset": offset}}


class Fold:
    """The live entities in order of last write, each as a snapshot's insert message
    (keeping that write's txid and timestamp); anything not a change or a reset is skipped."""

    def __init__(self, messages: Iterable[Any] = ()) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.apply(*messages)

    def apply(self, *messages: Any) -> None:
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
                continue
            headers = message["headers"]
            if headers.get("control") == "reset":
                self.rows.clear()
            operation = headers.get("operation")
            if operation not in ("insert", "update", "upsert", "delete"):
                continue
            key = (message["type"], message["key"])
            self.rows.pop(key, None)  # a write moves the entity to the end
            if operation != "delete":
                kept = {k: headers[k] for k in ("txid", "timestamp") if k in headers}
                self.rows[key] = {
                    "type": key[0],
                    "key": key[1],
                    "value": message["value"],
                    "headers": {"operation": "insert", **kept},
                }

    def snapshot(self, offset: str, types: set[str] | None = None) -> list[Any]:
        rows = [row for (kind, _), row in self.rows.items() if types is None or kind in types]
        return [marker("snapshot-start", offset), *rows, marker("snapshot-end", offset)]
