"""Reading one setting's value from text (an environment value, or a TOML value as text):
each parser returns the value or raises ValueError with what it must be; streams.config
adds which setting it was and where it came from."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path


def _number(raw: str, expected: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be {expected}, got {raw!r}") from None


def seconds(raw: str) -> float:
    value = _number(raw, "a number of seconds")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"must be positive, got {raw!r}")
    return value


def leeway(raw: str) -> float:
    value = _number(raw, "a number >= 0")
    if not 0 <= value < math.inf:
        raise ValueError(f"must be a number >= 0, got {raw!r}")
    return value


def count(raw: str) -> int:
    value = _number(raw, "a whole number")
    if not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"must be a whole number, got {raw!r}")
    if value <= 0:
        raise ValueError(f"must be positive, got {raw!r}")
    return int(value)


def port(raw: str) -> int:
    value = int(raw) if raw.strip().isdigit() else 0
    if not 0 < value < 65536:
        raise ValueError(f"must be a port number (1-65535), got {raw!r}")
    return value


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return parse


def text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def optional(raw: str) -> str | None:
    """Text, or unset when empty (`DS_METRICS__TOKEN=` leaves /metrics open)."""
    return raw.strip() or None


def boolean(raw: str) -> bool:
    if raw.lower() in ("true", "1", "yes", "on"):
        return True
    if raw.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def path(raw: str) -> Path:
    return Path(text(raw))


def origins(raw: str) -> tuple[str, ...]:
    """`*`, or a comma list of origins (`scheme://host[:port]`) browsers may read from."""
    values = tuple(item.strip().lower() for item in raw.split(",") if item.strip())
    if values == ("*",):
        return values
    for value in values:
        if not re.fullmatch(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?", value):
            raise ValueError(f"must be * or origins like https://app.example, got {value!r}")
    if not values:
        raise ValueError("must be * or a comma list of origins, got nothing")
    return values


def base_path(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
        raise ValueError(f"must be a path like /v1/stream, got {raw!r}")
    return value
