"""What State Protocol views may hold: each one, and all resident ones together."""

from __future__ import annotations

from collections import OrderedDict

import attrs


@attrs.frozen
class ViewLimits:
    """What one view, and all resident views together, may hold (docs/limits.md)."""

    max_entities: int = 1_000_000
    max_bytes: int = 256 << 20
    max_resident_bytes: int = 1 << 30


class ViewBudget:
    """The sizes of the resident views of a process, least recently used first: beyond the
    budget the oldest are dropped (their actors checkpoint them first), never truncated."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.total = 0

    def note(self, name: str, size: int) -> list[str]:
        """`name`'s view now holds `size` bytes; returns the views to drop."""
        self.total += size - self._sizes.get(name, 0)
        self._sizes[name] = size
        self._sizes.move_to_end(name)
        victims, excess = [], self.total - self.max_bytes
        for other, held in self._sizes.items():
            if excess <= 0:
                break
            if other != name:
                victims.append(other)
                excess -= held
        return victims

    def forget(self, name: str) -> None:
        self.total -= self._sizes.pop(name, 0)
