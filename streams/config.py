"""Settings from the environment, named as in the Rust reference server (`DS_<SECTION>__<KEY>`)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs

from streams.auth import authenticator

StorageMode = Literal["file-durable", "file-fast", "memory"]
MODES: tuple[StorageMode, ...] = ("file-durable", "file-fast", "memory")
AuthMode = Literal["off", "jwt"]
AUTH_MODES: tuple[AuthMode, ...] = ("off", "jwt")
DEFAULT_BUFFERED_BODY_BYTES = 256 * 1024 * 1024


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
    body_timeout: float = 30.0
    max_buffered_body_bytes: int = DEFAULT_BUFFERED_BODY_BYTES
    max_connections: int | None = None  # None: derived from the descriptor limit at start
    max_fork_depth: int = 100
    reader_wake_delay: float = 0.1  # the most an append's response holds its live readers
    max_view_entities: int = 1_000_000  # State Protocol views (docs/state.md)
    max_view_bytes: int = 256 << 20
    max_resident_view_bytes: int = 1 << 30
    max_snapshot_entities: int = 10_000_000  # held by snapshots being sent, all together
    auth_mode: AuthMode = "off"  # docs/operations.md, Auth
    auth_jwt_secret: str | None = attrs.field(default=None, repr=False)  # never printed
    auth_jwks_path: Path | None = None
    auth_audience: str | None = None
    auth_issuer: str | None = None
    auth_leeway: float = 30.0  # clock skew allowed for exp and nbf

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
        max_append = int(number("DS_LIMITS__MAX_APPEND_BYTES", 64 * 1024 * 1024))
        default_buffered = max(DEFAULT_BUFFERED_BODY_BYTES, max_append)
        buffered = int(number("DS_LIMITS__MAX_BUFFERED_BODY_BYTES", default_buffered))
        if buffered < max_append:
            raise ValueError(
                "DS_LIMITS__MAX_BUFFERED_BODY_BYTES must be at least DS_LIMITS__MAX_APPEND_BYTES"
                f" ({max_append}), got {buffered}"
            )
        auth_mode = environ.get("DS_AUTH__MODE", "off")
        if auth_mode not in AUTH_MODES:
            raise ValueError(f"DS_AUTH__MODE must be one of off, jwt, got {auth_mode!r}")
        leeway = environ.get("DS_AUTH__LEEWAY_SECS", "30")
        try:
            auth_leeway = float(leeway)
        except ValueError:
            auth_leeway = math.nan
        if not 0 <= auth_leeway < math.inf:
            raise ValueError(f"DS_AUTH__LEEWAY_SECS must be a number >= 0, got {leeway!r}")
        jwks_path = environ.get("DS_AUTH__JWKS_PATH")
        settings = cls(
            storage_mode=mode,
            data_dir=Path(environ.get("DS_STORAGE__DATA_DIR", "./data")),
            long_poll_timeout=number("DS_SERVER__LONG_POLL_TIMEOUT_SECS", 20.0),
            sse_reconnect_interval=number("DS_SERVER__SSE_RECONNECT_INTERVAL_SECS", 60.0),
            send_timeout=number("DS_SERVER__SEND_TIMEOUT_SECS", 30.0),
            max_append_bytes=max_append,
            read_chunk_bytes=int(number("DS_LIMITS__READ_CHUNK_BYTES", 1024 * 1024)),
            read_piece_bytes=int(number("DS_LIMITS__READ_PIECE_BYTES", 64 * 1024)),
            tail_cache_bytes=int(number("DS_LIMITS__TAIL_CACHE_BYTES", 1024 * 1024)),
            max_name_bytes=int(number("DS_LIMITS__MAX_NAME_BYTES", 1024)),
            actor_idle_timeout=number("DS_ACTORS__IDLE_TIMEOUT_SECS", 10.0),
            max_resident_actors=int(number("DS_ACTORS__MAX_RESIDENT", 1000)),
            body_timeout=number("DS_LIMITS__BODY_TIMEOUT_SECS", 30.0),
            max_buffered_body_bytes=buffered,
            max_connections=int(number("DS_SERVER__MAX_CONNECTIONS", 0)) or None,
            max_fork_depth=int(number("DS_LIMITS__MAX_FORK_DEPTH", 100)),
            reader_wake_delay=number("DS_SERVER__READER_WAKE_DELAY_SECS", 0.1),
            max_view_entities=int(number("DS_STATE__MAX_VIEW_ENTITIES", 1_000_000)),
            max_view_bytes=int(number("DS_STATE__MAX_VIEW_BYTES", 256 << 20)),
            max_resident_view_bytes=int(number("DS_STATE__MAX_RESIDENT_VIEW_BYTES", 1 << 30)),
            max_snapshot_entities=int(number("DS_STATE__MAX_SNAPSHOT_ENTITIES", 10_000_000)),
            auth_mode=auth_mode,
            auth_jwt_secret=environ.get("DS_AUTH__JWT_SECRET") or None,
            auth_jwks_path=Path(jwks_path) if jwks_path else None,
            auth_audience=environ.get("DS_AUTH__AUDIENCE") or None,
            auth_issuer=environ.get("DS_AUTH__ISSUER") or None,
            auth_leeway=auth_leeway,
        )
        authenticator(settings)  # at start: a missing key or a bad JWKS file is a ValueError
        return settings
