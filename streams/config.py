"""Settings from the environment, named as in the Rust reference server (`DS_<SECTION>__<KEY>`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs

StorageMode = Literal["file-durable", "file-fast", "memory"]
MODES: tuple[StorageMode, ...] = ("file-durable", "file-fast", "memory")


@attrs.frozen
class Settings:
    storage_mode: StorageMode = "file-durable"
    data_dir: Path = Path("./data")
    long_poll_timeout: float = 20.0
    sse_reconnect_interval: float = 60.0
    send_timeout: float = 30.0
    max_append_bytes: int = 64 * 1024 * 1024
    read_chunk_bytes: int = 1024 * 1024
    read_piece_bytes: int = 64 * 1024
    tail_cache_bytes: int = 1024 * 1024
    max_name_bytes: int = 1024
    actor_idle_timeout: float = 10.0
    max_resident_actors: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        def number(key: str, default: float) -> float:
            raw = environ.get(key)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{key} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{key} must be positive, got {raw!r}")
            return value

        mode = environ.get("DS_STORAGE__MODE", "file-durable")
        if mode not in MODES:
            raise ValueError(f"DS_STORAGE__MODE must be one of {', '.join(MODES)}, got {mode!r}")
        return cls(
            storage_mode=mode,
            data_dir=Path(environ.get("DS_STORAGE__DATA_DIR", "./data")),
            long_poll_timeout=number("DS_SERVER__LONG_POLL_TIMEOUT_SECS", 20.0),
            sse_reconnect_interval=number("DS_SERVER__SSE_RECONNECT_INTERVAL_SECS", 60.0),
            send_timeout=number("DS_SERVER__SEND_TIMEOUT_SECS", 30.0),
            max_append_bytes=int(number("DS_LIMITS__MAX_APPEND_BYTES", 64 * 1024 * 1024)),
            read_chunk_bytes=int(number("DS_LIMITS__READ_CHUNK_BYTES", 1024 * 1024)),
            read_piece_bytes=int(number("DS_LIMITS__READ_PIECE_BYTES", 64 * 1024)),
            tail_cache_bytes=int(number("DS_LIMITS__TAIL_CACHE_BYTES", 1024 * 1024)),
            max_name_bytes=int(number("DS_LIMITS__MAX_NAME_BYTES", 1024)),
            actor_idle_timeout=number("DS_ACTORS__IDLE_TIMEOUT_SECS", 10.0),
            max_resident_actors=int(number("DS_ACTORS__MAX_RESIDENT", 1000)),
        )
