"""Where settings come from, layered (later wins): built-in defaults, a TOML file
(`--config PATH` or `DS_CONFIG`), then `DS_<SECTION>__<KEY>` environment variables; the checks
that need the whole picture (data directory, TLS files, the example's paths); and the one
line and exit status when anything is wrong (`streams.config` says what settings there are).
"""

from __future__ import annotations

import os
import ssl
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs

from streams import examples
from streams.auth import authenticator
from streams.config import (
    BY_ENV,
    BY_FIELD,
    BY_TOML,
    DEFAULT_APPEND_BYTES,
    DEFAULT_BASE_PATH,
    DEFAULT_BUFFERED_BODY_BYTES,
    DEFAULT_YJS_BASE_PATH,
    EXIT_CONFIG,
    FILE_MODES,
    KEYS,
    SECTIONS,
    ConfigError,
    Settings,
)

# ---- layering --------------------------------------------------------------------------------


@attrs.frozen
class Given:
    """A value as given (text), the name it was given under, and where."""

    text: str
    name: str
    source: str  # "environment", "config /path/to.toml", "default"

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.name} ({self.source}): {problem}")


Layers = dict[str, Given]  # by Settings field


def _from_env(environ: Mapping[str, str]) -> Layers:
    given: Layers = {}
    for name in sorted(environ):
        section, separator, _ = name.removeprefix("DS_").partition("__")
        if not name.startswith("DS_") or not separator or section.lower() not in SECTIONS:
            continue
        key = BY_ENV.get(name)
        if key is None:
            known = ", ".join(k.env for k in KEYS if k.section == section.lower()) or "none yet"
            raise ConfigError(f"{name} (environment): unknown setting (known: {known})")
        given[key.field] = Given(environ[name], name, "environment")
    return given


def _as_text(value: object, name: str, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ",".join(value)
    raise ConfigError(f"{name} ({where}): must be a string or a number")


def _from_file(file: Path, origin: str) -> Layers:
    where = f"config {file}"
    try:
        data = tomllib.loads(file.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{origin}: no such file {str(file)!r}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{origin}: cannot read {str(file)!r}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{where}: not valid TOML: {error}") from None
    given: Layers = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section} ({where}): settings go in a section, e.g. [server]")
        if section not in SECTIONS:
            raise ConfigError(f"[{section}] ({where}): unknown section")
        for name, value in table.items():
            key = BY_TOML.get(f"{section}.{name}")
            if key is None:
                raise ConfigError(f"{section}.{name} ({where}): unknown setting")
            given[key.field] = Given(_as_text(value, key.toml, where), key.toml, where)
    return given


def _build(given: Layers) -> tuple[Settings, Layers]:
    values: dict[str, Any] = {}
    for field, value in given.items():
        try:
            values[field] = BY_FIELD[field].parse(value.text)
        except ValueError as error:
            raise value.error(str(error)) from None
    append = values.get("max_append_bytes", DEFAULT_APPEND_BYTES)
    buffered = values.setdefault(
        "max_buffered_body_bytes", max(DEFAULT_BUFFERED_BODY_BYTES, append)
    )
    if buffered < append:
        raise given["max_buffered_body_bytes"].error(
            f"must be at least DS_LIMITS__MAX_APPEND_BYTES ({append}), got {buffered}"
        )
    cert, key = given.get("tls_cert_path"), given.get("tls_key_path")
    if cert is None and key is not None:
        raise key.error("needs DS_TLS__CERT_PATH (tls.cert_path) too")
    if key is None and cert is not None:
        raise cert.error("needs DS_TLS__KEY_PATH (tls.key_path) too")
    if values.get("storage_mode") == "postgres" and not values.get("postgres_url"):
        raise given["storage_mode"].error(
            "postgres needs DS_STORAGE__POSTGRES_URL (storage.postgres_url)"
        )
    pool_min = values.get("postgres_pool_min", 1)
    if pool_min > values.get("postgres_pool_max", 10):
        where = given.get("postgres_pool_min") or given["postgres_pool_max"]
        raise where.error(
            "DS_STORAGE__POSTGRES_POOL_MIN must not exceed DS_STORAGE__POSTGRES_POOL_MAX"
        )
    stream_base = values.get("stream_base_path", DEFAULT_BASE_PATH) + "/"
    yjs_base = values.get("yjs_base_path", DEFAULT_YJS_BASE_PATH) + "/"
    if stream_base.startswith(yjs_base) or yjs_base.startswith(stream_base):
        where = given.get("yjs_base_path") or given["stream_base_path"]
        raise where.error("DS_YJS__BASE_PATH and DS_HTTP__STREAM_BASE_PATH must not overlap")
    if values.get("example_collab"):
        _check_example(given["example_collab"], stream_base, yjs_base)
    settings = Settings(**values)
    try:
        authenticator(settings)  # a missing key or a bad JWKS file, named, at start
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return settings, given


def _check_example(given: Given, *bases: str) -> None:
    """The collab example is built, and no stream or document path hides under its path."""
    problem = examples.missing()
    if problem is not None:
        raise given.error(problem)
    prefix = examples.PREFIX.decode() + "/"
    if any(base.startswith(prefix) or prefix.startswith(base) for base in bases):
        raise given.error(f"{prefix} overlaps DS_HTTP__STREAM_BASE_PATH or DS_YJS__BASE_PATH")


def _load(environ: Mapping[str, str], file: Path | None) -> tuple[Settings, Layers]:
    given: Layers = {}
    if file is not None:
        given.update(_from_file(file, "--config (command line)"))
    elif environ.get("DS_CONFIG"):
        given.update(_from_file(Path(environ["DS_CONFIG"]), "DS_CONFIG (environment)"))
    given.update(_from_env(environ))
    return _build(given)


# ---- at start: what the settings point at, checked before any port is bound --------------------


def origin(given: Layers, field: str) -> Given:
    return given.get(field) or Given("", BY_FIELD[field].env, "default")


def _check_data_dir(data_dir: Path, given: Given) -> None:
    """A data directory must exist or be creatable. One that refuses writes is served for
    reads (docs/durability.md), so writability itself is not required."""
    if data_dir.exists():
        if not data_dir.is_dir():
            raise given.error(f"{str(data_dir)!r} is not a directory")
        return
    parent = data_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise given.error(f"cannot create {str(data_dir)!r}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise given.error(f"cannot create {str(data_dir)!r}: {str(parent)!r} is not writable")


def _check_tls(settings: Settings, given: Layers) -> None:
    if settings.tls_cert_path is None or settings.tls_key_path is None:
        return
    for field in ("tls_cert_path", "tls_key_path"):
        file: Path = getattr(settings, field)
        if not file.is_file():
            raise origin(given, field).error(f"no such file {str(file)!r}")
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert_path, settings.tls_key_path)
    except (ssl.SSLError, OSError) as error:
        raise origin(given, "tls_cert_path").error(
            f"cannot load the certificate with DS_TLS__KEY_PATH's key: {error}"
        ) from None


def from_env(environ: Mapping[str, str]) -> Settings:
    return _build(_from_env(environ))[0]


def load(environ: Mapping[str, str], file: Path | None) -> Settings:
    return _load(environ, file)[0]


def load_checked(environ: Mapping[str, str] = os.environ, file: Path | None = None) -> Settings:
    """`Settings.load`, and the data directory and TLS files it names checked."""
    settings, given = _load(environ, file)
    if settings.storage_mode in FILE_MODES:
        _check_data_dir(settings.data_dir, origin(given, "data_dir"))
    _check_tls(settings, given)
    return settings


def exit_invalid(error: ConfigError) -> NoReturn:
    """One line on stderr, and the exit status a service manager reads as bad configuration."""
    message = " ".join(str(error).split("\n"))
    print(f"streams: invalid configuration: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)


def settings_or_exit(environ: Mapping[str, str] = os.environ, file: Path | None = None) -> Settings:
    """The settings to serve with, or, when anything is wrong, `exit_invalid`."""
    try:
        return load_checked(environ, file)
    except ConfigError as error:
        exit_invalid(error)
