"""Settings: defaults, a TOML file, then the environment, under the Rust reference server's
names; one table (`KEYS`) for all of them, which the docs' reference is checked against."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from streams import config
from streams.config import KEYS, ConfigError, Settings
from streams.config_load import load_checked, settings_or_exit

ROOT = Path(__file__).resolve().parent.parent

SECRET = "a test secret of at least 32 bytes, never a real one"


def test_defaults_without_environment() -> None:
    assert Settings.from_env({}) == Settings()


def test_every_setting_has_its_name() -> None:
    settings = Settings.from_env(
        {
            "DS_STORAGE__MODE": "memory",
            "DS_STORAGE__DATA_DIR": "/srv/streams",
            "DS_STORAGE__POSTGRES_URL": "host=/run/postgresql dbname=streams",
            "DS_STORAGE__POSTGRES_POOL_MIN": "2",
            "DS_STORAGE__POSTGRES_POOL_MAX": "4",
            "DS_STORAGE__POSTGRES_CONNECT_TIMEOUT_SECS": "1.5",
            "DS_STORAGE__POSTGRES_LISTEN_RETRY_SECS": "0.25",
            "DS_STORAGE__POSTGRES_ACCESS_SECS": "2",
            "DS_STORAGE__POSTGRES_EXPIRY_SCAN_SECS": "30",
            "DS_SERVER__LONG_POLL_TIMEOUT_SECS": "2.5",
            "DS_SERVER__SSE_RECONNECT_INTERVAL_SECS": "30",
            "DS_SERVER__SEND_TIMEOUT_SECS": "7",
            "DS_LIMITS__MAX_APPEND_BYTES": "1000",
            "DS_LIMITS__READ_CHUNK_BYTES": "2000",
            "DS_LIMITS__READ_PIECE_BYTES": "500",
            "DS_LIMITS__TAIL_CACHE_BYTES": "3000",
            "DS_LIMITS__MAX_NAME_BYTES": "100",
            "DS_ACTORS__IDLE_TIMEOUT_SECS": "1",
            "DS_ACTORS__MAX_RESIDENT": "50",
            "DS_LIMITS__BODY_TIMEOUT_SECS": "5",
            "DS_LIMITS__MAX_BUFFERED_BODY_BYTES": "4000",
            "DS_SERVER__MAX_CONNECTIONS": "200",
            "DS_LIMITS__MAX_FORK_DEPTH": "10",
            "DS_SERVER__READER_WAKE_DELAY_SECS": "0.25",
            "DS_STATE__MAX_VIEW_ENTITIES": "20",
            "DS_STATE__MAX_VIEW_BYTES": "30",
            "DS_STATE__MAX_RESIDENT_VIEW_BYTES": "40",
            "DS_STATE__MAX_SNAPSHOT_ENTITIES": "50",
            "DS_LOG__FORMAT": "json",
            "DS_LOG__ACCESS": "false",
            "DS_METRICS__TOKEN": "s3cret",
            "DS_METRICS__DISK_SCAN_INTERVAL_SECS": "5",
            "DS_AUTH__MODE": "jwt",
            "DS_AUTH__JWT_SECRET": SECRET,
            "DS_AUTH__AUDIENCE": "streams",
            "DS_AUTH__ISSUER": "https://idp.example",
            "DS_AUTH__LEEWAY_SECS": "0",
            "DS_SERVER__HOST": "0.0.0.0",
            "DS_SERVER__PORT": "8080",
            "DS_SERVER__SHUTDOWN_GRACE_SECS": "3",
            "DS_HTTP__CORS_ORIGINS": "https://a.example, http://localhost:3000",
            "DS_HTTP__STREAM_BASE_PATH": "/api/streams/",
            "DS_LIMITS__MAX_STREAM_BYTES": "60",
            "DS_TLS__CERT_PATH": "/etc/cert.pem",
            "DS_TLS__KEY_PATH": "/etc/key.pem",
            "DS_LOG__LEVEL": "debug",
        }
    )
    assert settings == Settings(
        storage_mode="memory",
        data_dir=Path("/srv/streams"),
        postgres_url="host=/run/postgresql dbname=streams",
        postgres_pool_min=2,
        postgres_pool_max=4,
        postgres_connect_timeout=1.5,
        postgres_listen_retry=0.25,
        postgres_access_secs=2.0,
        postgres_expiry_scan_secs=30.0,
        long_poll_timeout=2.5,
        sse_reconnect_interval=30.0,
        send_timeout=7.0,
        max_append_bytes=1000,
        read_chunk_bytes=2000,
        read_piece_bytes=500,
        tail_cache_bytes=3000,
        max_name_bytes=100,
        actor_idle_timeout=1.0,
        max_resident_actors=50,
        body_timeout=5.0,
        max_buffered_body_bytes=4000,
        max_connections=200,
        max_fork_depth=10,
        reader_wake_delay=0.25,
        max_view_entities=20,
        max_view_bytes=30,
        max_resident_view_bytes=40,
        max_snapshot_entities=50,
        log_format="json",
        access_log=False,
        metrics_token="s3cret",
        disk_scan_interval=5.0,
        auth_mode="jwt",
        auth_jwt_secret=SECRET,
        auth_audience="streams",
        auth_issuer="https://idp.example",
        auth_leeway=0.0,
        host="0.0.0.0",
        port=8080,
        shutdown_grace=3.0,
        cors_origins=("https://a.example", "http://localhost:3000"),
        stream_base_path="/api/streams",
        max_stream_bytes=60,
        tls_cert_path=Path("/etc/cert.pem"),
        tls_key_path=Path("/etc/key.pem"),
        log_level="debug",
    )


def test_the_body_budget_holds_at_least_one_largest_append() -> None:
    raised = Settings.from_env({"DS_LIMITS__MAX_APPEND_BYTES": str(512 << 20)})
    assert raised.max_buffered_body_bytes == 512 << 20  # the default follows the append limit
    with pytest.raises(ValueError, match="DS_LIMITS__MAX_BUFFERED_BODY_BYTES"):
        Settings.from_env(
            {"DS_LIMITS__MAX_APPEND_BYTES": "1000", "DS_LIMITS__MAX_BUFFERED_BODY_BYTES": "999"}
        )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DS_STORAGE__MODE", "disk"),
        ("DS_SERVER__LONG_POLL_TIMEOUT_SECS", "soon"),
        ("DS_ACTORS__MAX_RESIDENT", "0"),
        ("DS_LIMITS__MAX_APPEND_BYTES", "-1"),
        ("DS_SERVER__MAX_CONNECTIONS", "0"),
        ("DS_LIMITS__BODY_TIMEOUT_SECS", "never"),
        ("DS_LOG__FORMAT", "xml"),
        ("DS_LOG__ACCESS", "sometimes"),
        ("DS_METRICS__DISK_SCAN_INTERVAL_SECS", "0"),
        ("DS_AUTH__MODE", "basic"),
        ("DS_AUTH__LEEWAY_SECS", "-1"),
        ("DS_AUTH__LEEWAY_SECS", "nan"),
        ("DS_AUTH__LEEWAY_SECS", "soon"),
        ("DS_SERVER__PORT", "70000"),
        ("DS_SERVER__PORT", "http"),
        ("DS_SERVER__SHUTDOWN_GRACE_SECS", "inf"),
        ("DS_HTTP__CORS_ORIGINS", "app.example"),
        ("DS_HTTP__STREAM_BASE_PATH", "v1/stream"),
        ("DS_HTTP__STREAM_BASE_PATH", "/"),
        ("DS_LIMITS__MAX_STREAM_BYTES", "1.5"),
        ("DS_LOG__LEVEL", "loud"),
        ("DS_STORAGE__DATA_DIR", " "),
        ("DS_STORAGE__POSTGRES_POOL_MAX", "0"),
        ("DS_STORAGE__POSTGRES_CONNECT_TIMEOUT_SECS", "0"),
        ("DS_SERVER__BOGUS", "1"),  # an unknown key of a known section
        ("DS_AUTH__BOGUS", "1"),  # an unknown key of the auth section
    ],
)
def test_bad_values_name_the_setting(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        Settings.from_env({key: value})


@pytest.mark.parametrize(
    ("raw", "on"), [("true", True), ("1", True), ("OFF", False), ("no", False)]
)
def test_the_access_log_switch(raw: str, on: bool) -> None:
    assert Settings.from_env({"DS_LOG__ACCESS": raw}).access_log is on


def test_the_metrics_token_is_not_shown() -> None:
    settings = Settings.from_env({"DS_METRICS__TOKEN": "s3cret"})
    assert "s3cret" not in repr(settings)
    assert Settings.from_env({"DS_METRICS__TOKEN": ""}).metrics_token is None


def ed25519_jwk(**fields: Any) -> dict[str, Any]:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    assert isinstance(jwk, dict)
    return {**jwk, **fields}


def test_auth_reads_public_keys_from_a_jwks_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ed25519_jwk(kid="a"), ed25519_jwk(kid="b")]}))
    settings = Settings.from_env({"DS_AUTH__MODE": "jwt", "DS_AUTH__JWKS_PATH": str(path)})
    assert (settings.auth_mode, settings.auth_jwks_path) == ("jwt", path)
    assert Settings.from_env({"DS_AUTH__JWKS_PATH": str(path)}).auth_mode == "off"


def test_the_secret_is_never_printed() -> None:
    settings = Settings.from_env({"DS_AUTH__MODE": "jwt", "DS_AUTH__JWT_SECRET": SECRET})
    assert SECRET not in repr(settings) and SECRET not in str(settings)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "DS_AUTH__JWT_SECRET"),
        ({"DS_AUTH__JWT_SECRET": SECRET, "DS_AUTH__JWKS_PATH": "jwks.json"}, "exactly one"),
        ({"DS_AUTH__JWT_SECRET": "short"}, "DS_AUTH__JWT_SECRET must be at least 32 bytes"),
    ],
)
def test_jwt_mode_needs_one_good_key_source(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env({"DS_AUTH__MODE": "jwt", **environ})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot be read"),
        ("{not json", "is not JSON"),
        ("[]", "is not a JWKS"),
        ('{"keys": {}}', "is not a JWKS"),
        ('{"keys": []}', "holds no signature keys"),
        (json.dumps({"keys": [ed25519_jwk(use="enc")]}), "holds no signature keys"),
        ('{"keys": [1]}', "key 0 is not a JSON object"),
        ('{"keys": [{"kty": "nope"}]}', "key 0 is not a usable key"),
        (json.dumps({"keys": [ed25519_jwk(d="c2VjcmV0")]}), "key 0 is a private key"),
        (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}), "HS256 is not a public-key"),
        (json.dumps({"keys": [ed25519_jwk(alg="HS256")]}), "key 0 is not a usable key"),
        (json.dumps({"keys": [ed25519_jwk(kid=7)]}), "kid must be a string"),
        (json.dumps({"keys": [ed25519_jwk(kid="a"), ed25519_jwk(kid="a")]}), "used twice"),
        (json.dumps({"keys": [ed25519_jwk(), ed25519_jwk(kid="a")]}), "each needs a kid"),
    ],
)
def test_a_bad_jwks_file_is_an_error_at_start(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="DS_AUTH__JWKS_PATH") as raised:
        Settings.from_env({"DS_AUTH__MODE": "jwt", "DS_AUTH__JWKS_PATH": str(path)})
    assert reason in str(raised.value)


def test_an_error_names_the_setting_and_its_source() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"DS_STORAGE__MODE": "bogus"})
    assert str(raised.value) == (
        "DS_STORAGE__MODE (environment): must be one of file-durable, file-fast, memory,"
        " postgres, got 'bogus'"
    )


def test_other_environment_variables_are_left_alone() -> None:
    other = {"DS_CONFIGURE": "x", "DS_OTHER__KEY": "1", "DSX__Y": "2", "PATH": "/bin"}
    assert Settings.from_env(other) == Settings()


# ---- the TOML file ---------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_file_is_layered_under_the_environment(tmp_path: Path) -> None:
    file = write(
        tmp_path / "streams.toml",
        """
        [server]
        port = 5000
        long_poll_timeout_secs = 5
        [storage]
        mode = "memory"
        data_dir = "/srv/a"
        [http]
        cors_origins = ["https://a.example", "https://b.example"]
        [limits]
        max_append_bytes = 1e6
        """,
    )
    env = {"DS_SERVER__PORT": "6000", "DS_STORAGE__DATA_DIR": "/srv/b"}
    settings = Settings.load(env, file)
    assert settings == Settings(
        port=6000,  # the environment wins
        long_poll_timeout=5.0,
        storage_mode="memory",
        data_dir=Path("/srv/b"),
        cors_origins=("https://a.example", "https://b.example"),
        max_append_bytes=1_000_000,
    )
    assert Settings.load({"DS_CONFIG": str(file)}) == Settings(
        port=5000,
        long_poll_timeout=5.0,
        storage_mode="memory",
        data_dir=Path("/srv/a"),
        cors_origins=("https://a.example", "https://b.example"),
        max_append_bytes=1_000_000,
    )
    assert Settings.load({}) == Settings()  # no file: the defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 'x'\n", "server.port (config {file}): must be a port number"),
        ("[server]\nport = true\n", "server.port (config {file}): must be a port number"),
        ("[server]\nbogus = 1\n", "server.bogus (config {file}): unknown setting"),
        ("[servers]\nport = 1\n", "[servers] (config {file}): unknown section"),
        ("port = 1\n", "port (config {file}): settings go in a section"),
        ("[server]\nport = {a = 1}\n", "server.port (config {file}): must be a string or"),
        ("[server\n", "config {file}: not valid TOML"),
        (
            "[limits]\nmax_append_bytes = 10\nmax_buffered_body_bytes = 5\n",
            "limits.max_buffered_body_bytes (config {file}): must be at least",
        ),
        ("[tls]\ncert_path = 'c.pem'\n", "tls.cert_path (config {file}): needs DS_TLS__KEY_PATH"),
    ],
)
def test_file_errors_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    file = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as raised:
        Settings.load({}, file)
    assert str(raised.value).startswith(message.format(file=file))


def test_a_missing_file_is_an_error_naming_where_it_was_given(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"^DS_CONFIG \(environment\): no such file"):
        Settings.load({"DS_CONFIG": str(missing)})
    with pytest.raises(ConfigError, match=r"^--config \(command line\): no such file"):
        Settings.load({}, missing)


# ---- checked at start: the data directory and the TLS files ---------------------------------


def test_a_data_dir_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    file = write(tmp_path / "file", "")
    with pytest.raises(ConfigError) as raised:
        load_checked({"DS_STORAGE__DATA_DIR": str(file / "data")})
    assert str(raised.value).startswith("DS_STORAGE__DATA_DIR (environment): cannot create")
    with pytest.raises(ConfigError, match="is not a directory"):
        load_checked({"DS_STORAGE__DATA_DIR": str(file)})
    toml = write(tmp_path / "c.toml", f"[storage]\ndata_dir = '{file}/data'\n")
    with pytest.raises(ConfigError, match=r"^storage.data_dir \(config "):
        load_checked({}, toml)
    # Fine: one to create (nothing is created by the check), or memory mode (none is used).
    assert load_checked({"DS_STORAGE__DATA_DIR": str(tmp_path / "new" / "data")})
    assert not (tmp_path / "new").exists()
    assert load_checked({"DS_STORAGE__MODE": "memory", "DS_STORAGE__DATA_DIR": str(file)})


def test_tls_files_must_exist_and_hold_a_key_pair(tmp_path: Path) -> None:
    env = {"DS_TLS__CERT_PATH": str(tmp_path / "c.pem"), "DS_TLS__KEY_PATH": "k.pem"}
    with pytest.raises(ConfigError, match=r"^DS_TLS__CERT_PATH \(environment\): no such file"):
        load_checked({**env, "DS_STORAGE__MODE": "memory"})
    write(tmp_path / "c.pem", "not a certificate")
    write(tmp_path / "k.pem", "not a key")
    env["DS_TLS__KEY_PATH"] = str(tmp_path / "k.pem")
    with pytest.raises(ConfigError, match=r"^DS_TLS__CERT_PATH \(environment\): cannot load"):
        load_checked({**env, "DS_STORAGE__MODE": "memory"})


def test_invalid_settings_exit_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        settings_or_exit({"DS_STORAGE__MODE": "bogus"})
    assert exited.value.code == config.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("streams: invalid configuration: DS_STORAGE__MODE (environment)")


# ---- one table, and the docs checked against it ------------------------------------------------


def test_every_setting_is_in_the_table_once() -> None:
    fields = {field.name for field in attrs.fields(Settings)}
    assert sorted(key.field for key in KEYS) == sorted(fields)
    assert len({key.env for key in KEYS}) == len(KEYS)
    for key in KEYS:
        assert re.fullmatch(r"DS_[A-Z]+__[A-Z0-9_]+", key.env)
        assert key.section in config.SECTIONS
        # Each default reads back as itself (when it is not derived at start).
        if key.shown is None:
            default = getattr(Settings(), key.field)
            assert key.parse(key.default) == default


def reference_rows() -> dict[str, tuple[str, str]]:
    """docs/operations.md's configuration reference: env name -> (TOML key, default)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    text = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(DS_[A-Z0-9_]+)` \| `([a-z_.]+)` \| ([^|]+) \|", text, re.M)
    return {env: (toml, default.strip()) for env, toml, default in rows}


def test_the_docs_reference_lists_every_setting_as_the_table_does() -> None:
    rows = reference_rows()
    assert sorted(rows) == sorted(key.env for key in KEYS)
    for key in KEYS:
        assert rows[key.env] == (key.toml, f"`{key.default}`"), key.env


def test_the_readme_points_to_the_reference_and_names_only_real_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/operations.md#configuration" in readme
    known = {key.env for key in KEYS}
    for name in re.findall(r"DS_[A-Z]+__[A-Z0-9_]+", readme):
        assert name in known, name
