"""What settings there are: `Settings`, and `KEYS`, the table that names each one, in the
environment as in the Rust reference server (`DS_<SECTION>__<KEY>`) and in a TOML file.
Where values come from, and what is wrong with them, is `streams.config_load`.

`KEYS` is the one table of every setting: its environment name (whose lower case is its TOML
section and key), its `Settings` field and how a value is read; the default is the field's own.
Validation and the reference in docs/operations.md (checked by tests/test_config.py) both come
from it, so adding a setting is a field and one line there. Anything wrong is a `ConfigError`
naming the setting and where its value came from, found before the server binds a port.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from streams.config_values import (
    base_path,
    boolean,
    count,
    leeway,
    one_of,
    optional,
    origins,
    path,
    port,
    seconds,
    text,
)

StorageMode = Literal["file-durable", "file-fast", "memory", "postgres"]
MODES: tuple[StorageMode, ...] = ("file-durable", "file-fast", "memory", "postgres")
FILE_MODES = ("file-durable", "file-fast")
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
AuthMode = Literal["off", "jwt"]
AUTH_MODES: tuple[AuthMode, ...] = ("off", "jwt")
DEFAULT_APPEND_BYTES = 64 * 1024 * 1024
DEFAULT_BUFFERED_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_BASE_PATH = "/v1/stream"
DEFAULT_YJS_BASE_PATH = "/v1/yjs"
SECTIONS = (
    "server",
    "yjs",
    "subscriptions",
    "storage",
    "limits",
    "actors",
    "state",
    "auth",
    "tls",
    "log",
    "http",
    "metrics",
    "examples",
)
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: a service manager need not restart into it again


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and where its value came from."""


@attrs.frozen
class Settings:
    storage_mode: StorageMode = "file-durable"
    data_dir: Path = Path("./data")
    postgres_url: str | None = attrs.field(default=None, repr=False)  # may hold a password
    postgres_pool_min: int = 1
    postgres_pool_max: int = 10
    postgres_connect_timeout: float = 10.0
    postgres_listen_retry: float = 1.0
    postgres_access_secs: float = 1.0
    postgres_expiry_scan_secs: float = 60.0
    long_poll_timeout: float = 20.0
    sse_reconnect_interval: float = 60.0
    send_timeout: float = 30.0
    max_append_bytes: int = DEFAULT_APPEND_BYTES
    read_chunk_bytes: int = 1024 * 1024
    read_piece_bytes: int = 64 * 1024
    tail_cache_bytes: int = 1024 * 1024
    max_name_bytes: int = 1024
    actor_idle_timeout: float = 10.0
    max_resident_actors: int = 1000
    body_timeout: float = 30.0
    max_buffered_body_bytes: int = DEFAULT_BUFFERED_BODY_BYTES  # and >= max_append_bytes
    max_connections: int | None = None  # None: derived from the descriptor limit at start
    max_fork_depth: int = 100
    reader_wake_delay: float = 0.1  # the most an append's response holds its live readers
    max_view_entities: int = 1_000_000  # State Protocol views (docs/state.md)
    max_view_bytes: int = 256 << 20
    max_resident_view_bytes: int = 1 << 30
    max_snapshot_entities: int = 10_000_000  # held by snapshots being sent, all together
    host: str = "127.0.0.1"  # where `streams serve` listens
    port: int = 4437
    shutdown_grace: float = 10.0
    cors_origins: tuple[str, ...] = ("*",)
    stream_base_path: str = DEFAULT_BASE_PATH
    max_stream_bytes: int | None = None  # None: unlimited
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    log_level: str = "info"
    auth_mode: AuthMode = "off"  # docs/operations.md, Auth
    auth_jwt_secret: str | None = attrs.field(default=None, repr=False)  # never printed
    auth_jwks_path: Path | None = None
    auth_audience: str | None = None
    auth_issuer: str | None = None
    auth_leeway: float = 30.0  # clock skew allowed for exp and nbf
    log_format: LogFormat = "text"  # the access log's lines (docs/operations.md, "Logs")
    access_log: bool = True
    metrics_token: str | None = attrs.field(default=None, repr=False)  # bearer for /metrics
    disk_scan_interval: float = 60.0  # streams on disk are counted at most this often
    yjs_base_path: str = DEFAULT_YJS_BASE_PATH  # Yjs documents (docs/yjs.md)
    yjs_compaction_threshold: int = 1 << 20  # update bytes since the snapshot that compact
    yjs_snapshot_keep: float = 5.0  # a replaced snapshot stays this long (the 307's max-age)
    yjs_awareness_ttl: int = 3600  # an awareness stream expires this long after its last use
    yjs_merge_workers: int = 1  # worker processes that run compactions' merges
    subscription_max_subscriptions: int = 1000  # docs/subscriptions.md
    subscription_max_links: int = 10_000
    subscription_token_ttl: float = 3600.0
    subscription_webhook_timeout: float = 10.0
    subscription_webhook_max_reply_bytes: int = 64 * 1024
    subscription_webhook_concurrency: int = 32
    subscription_allow_localhost_http: bool = True
    subscription_public_url: str = ""
    subscription_key_max_age: float = 0.0  # 0: the signing key is never rotated
    subscription_key_publish: float = 86_400.0
    example_collab: bool = False  # serve examples/collab/ under /examples/collab/

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Defaults and the environment only (no file)."""
        from streams.config_load import from_env  # it builds on this module

        return from_env(environ)

    @classmethod
    def load(cls, environ: Mapping[str, str] = os.environ, path: Path | None = None) -> Settings:
        """Defaults, then the TOML file at `path` (else `DS_CONFIG`'s, if set), then the
        environment."""
        from streams.config_load import load

        return load(environ, path)


@attrs.frozen
class Key:
    """One setting: `env` names it (`DS_SECTION__KEY`; TOML: `[section] key`), `field` is
    its `Settings` attribute, `parse` reads a value; `shown` is the default as documented,
    when it is not simply the field's."""

    env: str
    field: str
    parse: Callable[[str], Any]
    shown: str | None = None

    @property
    def toml(self) -> str:
        section, _, key = self.env.removeprefix("DS_").partition("__")
        return f"{section.lower()}.{key.lower()}"

    @property
    def section(self) -> str:
        return self.toml.partition(".")[0]

    @property
    def default(self) -> str:
        if self.shown is not None:
            return self.shown
        value = attrs.fields_dict(Settings)[self.field].default
        if isinstance(value, tuple):
            return ",".join(value)
        return f"{value:g}" if isinstance(value, float) else str(value)


KEYS: tuple[Key, ...] = (
    Key("DS_SERVER__HOST", "host", text),
    Key("DS_SERVER__PORT", "port", port),
    Key("DS_SERVER__SHUTDOWN_GRACE_SECS", "shutdown_grace", seconds),
    Key("DS_SERVER__LONG_POLL_TIMEOUT_SECS", "long_poll_timeout", seconds),
    Key("DS_SERVER__SSE_RECONNECT_INTERVAL_SECS", "sse_reconnect_interval", seconds),
    Key("DS_SERVER__SEND_TIMEOUT_SECS", "send_timeout", seconds),
    Key("DS_SERVER__MAX_CONNECTIONS", "max_connections", count, "(descriptor limit - 64) / 2"),
    Key("DS_SERVER__READER_WAKE_DELAY_SECS", "reader_wake_delay", seconds),
    Key("DS_STORAGE__MODE", "storage_mode", one_of(*MODES)),
    Key("DS_STORAGE__DATA_DIR", "data_dir", path, "./data"),
    Key("DS_STORAGE__POSTGRES_URL", "postgres_url", text, "unset"),
    Key("DS_STORAGE__POSTGRES_POOL_MIN", "postgres_pool_min", count),
    Key("DS_STORAGE__POSTGRES_POOL_MAX", "postgres_pool_max", count),
    Key("DS_STORAGE__POSTGRES_CONNECT_TIMEOUT_SECS", "postgres_connect_timeout", seconds),
    Key("DS_STORAGE__POSTGRES_LISTEN_RETRY_SECS", "postgres_listen_retry", seconds),
    Key("DS_STORAGE__POSTGRES_ACCESS_SECS", "postgres_access_secs", seconds),
    Key("DS_STORAGE__POSTGRES_EXPIRY_SCAN_SECS", "postgres_expiry_scan_secs", seconds),
    Key("DS_LIMITS__MAX_APPEND_BYTES", "max_append_bytes", count),
    Key("DS_LIMITS__MAX_STREAM_BYTES", "max_stream_bytes", count, "unlimited"),
    Key("DS_LIMITS__READ_CHUNK_BYTES", "read_chunk_bytes", count),
    Key("DS_LIMITS__READ_PIECE_BYTES", "read_piece_bytes", count),
    Key("DS_LIMITS__MAX_NAME_BYTES", "max_name_bytes", count),
    Key("DS_LIMITS__TAIL_CACHE_BYTES", "tail_cache_bytes", count),
    Key("DS_LIMITS__BODY_TIMEOUT_SECS", "body_timeout", seconds),
    Key(
        "DS_LIMITS__MAX_BUFFERED_BODY_BYTES",
        "max_buffered_body_bytes",
        count,
        f"{DEFAULT_BUFFERED_BODY_BYTES} (and at least DS_LIMITS__MAX_APPEND_BYTES)",
    ),
    Key("DS_LIMITS__MAX_FORK_DEPTH", "max_fork_depth", count),
    Key("DS_ACTORS__IDLE_TIMEOUT_SECS", "actor_idle_timeout", seconds),
    Key("DS_ACTORS__MAX_RESIDENT", "max_resident_actors", count),
    Key("DS_STATE__MAX_VIEW_ENTITIES", "max_view_entities", count),
    Key("DS_STATE__MAX_VIEW_BYTES", "max_view_bytes", count),
    Key("DS_STATE__MAX_RESIDENT_VIEW_BYTES", "max_resident_view_bytes", count),
    Key("DS_STATE__MAX_SNAPSHOT_ENTITIES", "max_snapshot_entities", count),
    Key("DS_HTTP__CORS_ORIGINS", "cors_origins", origins),
    Key("DS_HTTP__STREAM_BASE_PATH", "stream_base_path", base_path),
    Key("DS_TLS__CERT_PATH", "tls_cert_path", path, "unset (plain HTTP)"),
    Key("DS_TLS__KEY_PATH", "tls_key_path", path, "unset (plain HTTP)"),
    Key("DS_LOG__LEVEL", "log_level", one_of(*LOG_LEVELS)),
    Key("DS_LOG__FORMAT", "log_format", one_of(*LOG_FORMATS)),
    Key("DS_LOG__ACCESS", "access_log", boolean, "true"),
    Key("DS_METRICS__TOKEN", "metrics_token", optional, "unset (/metrics open)"),
    Key("DS_METRICS__DISK_SCAN_INTERVAL_SECS", "disk_scan_interval", seconds),
    Key("DS_AUTH__MODE", "auth_mode", one_of(*AUTH_MODES)),
    Key("DS_AUTH__JWT_SECRET", "auth_jwt_secret", text, "unset"),
    Key("DS_AUTH__JWKS_PATH", "auth_jwks_path", path, "unset"),
    Key("DS_AUTH__AUDIENCE", "auth_audience", text, "unset (not checked)"),
    Key("DS_AUTH__ISSUER", "auth_issuer", text, "unset (not checked)"),
    Key("DS_AUTH__LEEWAY_SECS", "auth_leeway", leeway),
    Key("DS_YJS__BASE_PATH", "yjs_base_path", base_path),
    Key("DS_YJS__COMPACTION_THRESHOLD_BYTES", "yjs_compaction_threshold", count),
    Key("DS_YJS__SNAPSHOT_KEEP_SECS", "yjs_snapshot_keep", seconds),
    Key("DS_YJS__AWARENESS_TTL_SECS", "yjs_awareness_ttl", count),
    Key("DS_YJS__MERGE_WORKERS", "yjs_merge_workers", count),
    Key("DS_SUBSCRIPTIONS__MAX_SUBSCRIPTIONS", "subscription_max_subscriptions", count),
    Key("DS_SUBSCRIPTIONS__MAX_LINKS", "subscription_max_links", count),
    Key("DS_SUBSCRIPTIONS__TOKEN_TTL_SECS", "subscription_token_ttl", seconds),
    Key("DS_SUBSCRIPTIONS__WEBHOOK_TIMEOUT_SECS", "subscription_webhook_timeout", seconds),
    Key("DS_SUBSCRIPTIONS__WEBHOOK_MAX_REPLY_BYTES", "subscription_webhook_max_reply_bytes", count),
    Key("DS_SUBSCRIPTIONS__WEBHOOK_CONCURRENCY", "subscription_webhook_concurrency", count),
    Key(
        "DS_SUBSCRIPTIONS__ALLOW_LOCALHOST_HTTP",
        "subscription_allow_localhost_http",
        boolean,
        "true",
    ),
    Key(
        "DS_SUBSCRIPTIONS__PUBLIC_URL",
        "subscription_public_url",
        text,
        "unset (as each request addressed the server)",
    ),
    Key(
        "DS_SUBSCRIPTIONS__KEY_MAX_AGE_SECS",
        "subscription_key_max_age",
        leeway,
        "0 (never rotated)",
    ),
    Key("DS_SUBSCRIPTIONS__KEY_PUBLISH_SECS", "subscription_key_publish", seconds),
    Key("DS_EXAMPLES__COLLAB", "example_collab", boolean, "false"),
)
BY_ENV = {key.env: key for key in KEYS}
BY_TOML = {key.toml: key for key in KEYS}
BY_FIELD = {key.field: key for key in KEYS}
