"""Starting the server as the README does: `streams serve`, and hypercorn's own command with
this server's hypercorn settings. Invalid settings stop either before a port is bound, with one
line on stderr; `streams serve` listens with its own backlog, and serves HTTPS when given a
certificate."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streams import serve
from streams.config import EXIT_CONFIG
from tests.server import free_port, listen_backlog, serve_command, serve_env, wait_ready

ROOT = Path(__file__).resolve().parent.parent


def hypercorn_config_command(*options: str) -> list[str]:
    """The README's hypercorn form (bound from DS_SERVER__HOST/PORT, like `streams serve`)."""
    return [
        sys.executable, "-m", "hypercorn", "--config", "python:streams.hypercorn_config",
        "streams.app:app", *options,
    ]  # fmt: skip


COMMANDS = {
    "streams serve": serve_command(),
    "hypercorn": hypercorn_config_command(),
    "hypercorn, a spawned worker": hypercorn_config_command("--workers", "1"),
}


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port this test holds bound (not listening, no SO_REUSEADDR): a server that tried to
    bind it would fail with "address in use" instead of naming the invalid setting."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def bad_settings(tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    """Each case: the environment, and the start of the line that must name the setting."""
    a_file = tmp_path / "file"
    a_file.write_text("")
    return {
        "bad value": (
            {"DS_STORAGE__MODE": "bogus"},
            "DS_STORAGE__MODE (environment): must be one of",
        ),
        "unknown key": ({"DS_SERVER__BOGUS": "1"}, "DS_SERVER__BOGUS (environment): unknown"),
        "missing file": (
            {"DS_CONFIG": str(tmp_path / "missing.toml")},
            "DS_CONFIG (environment): no such file",
        ),
        "bad file": (
            {"DS_CONFIG": str(tmp_path / "bad.toml")},
            f"storage.mode (config {tmp_path / 'bad.toml'}): must be one of",
        ),
        "uncreatable data dir": (
            {"DS_STORAGE__DATA_DIR": str(a_file / "data")},
            "DS_STORAGE__DATA_DIR (environment): cannot create",
        ),
    }


CASES = ["bad value", "unknown key", "missing file", "bad file", "uncreatable data dir"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_invalid_settings_stop_the_server_before_it_binds(
    tmp_path: Path, held_port: int, command: str, case: str
) -> None:
    (tmp_path / "bad.toml").write_text("[storage]\nmode = 'x'\n")
    env, named = bad_settings(tmp_path)[case]
    environment = {
        **os.environ,
        "DS_STORAGE__DATA_DIR": str(tmp_path / "data"),
        **serve_env(held_port),
        **env,
    }
    completed = subprocess.run(
        COMMANDS[command], env=environment, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == EXIT_CONFIG
    assert completed.stderr.startswith(f"streams: invalid configuration: {named}")
    assert completed.stderr.count("\n") == 1, completed.stderr  # one line
    assert completed.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing was opened either


def test_the_plain_hypercorn_toml_form_checks_at_import(tmp_path: Path) -> None:
    """With hypercorn.toml (workers = 0) the settings are checked when hypercorn imports the
    app, after it has bound the port; still one line, and status 78."""
    port = free_port()
    command = [
        sys.executable, "-m", "hypercorn", "--config", str(ROOT / "hypercorn.toml"),
        "--bind", f"127.0.0.1:{port}", "streams.app:app",
    ]  # fmt: skip
    env = {**os.environ, "DS_STORAGE__MODE": "bogus"}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == EXIT_CONFIG
    assert completed.stderr.startswith("streams: invalid configuration: DS_STORAGE__MODE")
    assert completed.stderr.count("\n") == 1


def test_a_port_in_use_is_one_line_too(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, "DS_STORAGE__DATA_DIR": str(tmp_path / "data")}
        env.update(serve_env(taken.getsockname()[1]))
        completed = subprocess.run(
            serve_command(), env=env, capture_output=True, text=True, timeout=60
        )
    assert completed.returncode == EXIT_CONFIG
    assert completed.stderr.startswith(
        "streams: invalid configuration: DS_SERVER__HOST, DS_SERVER__PORT: cannot listen on"
    )
    assert completed.stderr.count("\n") == 1


def test_serve_takes_its_settings_from_a_config_file(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "streams.toml"
    config.write_text(
        f'[server]\nport = {port}\n[storage]\nmode = "memory"\n'
        '[http]\nstream_base_path = "/streams"\n'
    )
    log_path = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS_")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            serve_command("--config", str(config)), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, process, log_path)
            assert httpx.put(f"{base}/streams/a").status_code == 201
            assert httpx.head(f"{base}/v1/stream/a").status_code == 404
        finally:
            process.terminate()
            assert process.wait(timeout=30) == 0
    assert log_path.read_text().count("Running on") == 1  # logged once
    assert not (tmp_path / "data").exists()  # memory mode, from the file


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_serve_listens_with_its_own_backlog(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **serve_env(port), "DS_STORAGE__MODE": "memory"}
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(serve_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, log_path)
            backlog = listen_backlog(port)
        finally:
            process.terminate()
            process.wait(timeout=30)
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert backlog == min(serve.BACKLOG, somaxconn)  # (100 before)


def test_hypercorn_toml_holds_serves_values() -> None:
    """The shipped hypercorn.toml (for the plain hypercorn form and the benchmarks' raw app)
    says what `streams serve` does."""
    values = tomllib.loads((ROOT / "hypercorn.toml").read_text())
    assert values["backlog"] == serve.BACKLOG
    assert values["keep_alive_max_requests"] == serve.KEEP_ALIVE_MAX_REQUESTS
    assert values["worker_class"] == "trio"
    assert values["workers"] == 0
    assert values["bind"] == ["127.0.0.1:4437"]
    assert values["graceful_timeout"] == 10 * serve.HANDLERS_SHARE


def test_the_readme_starts_the_server_with_streams_serve() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set-up") : readme.index("## Benchmarks")]
    commands = [block for block in setup.split("```sh\n")[1:]]
    assert [block.partition("\n```")[0] for block in commands] == [
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/streams serve",
        "bash tests/run.sh",
    ]
    assert "hypercorn --config python:streams.hypercorn_config streams.app:app" in setup


# ---- TLS -----------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def test_serve_serves_https_with_a_certificate(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    port = free_port()
    env = {
        **os.environ,
        **serve_env(port),
        "DS_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "DS_TLS__CERT_PATH": str(cert),
        "DS_TLS__KEY_PATH": str(key),
    }
    base = f"https://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(serve_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(base, process, log_path, ssl.create_default_context(cafile=cert))
            with httpx.Client(
                base_url=base, verify=ssl.create_default_context(cafile=cert)
            ) as http:
                created = http.put(
                    "/v1/stream/s", content=b"secret", headers={"Content-Type": "text/plain"}
                )
                assert created.status_code == 201
                assert created.headers["Location"] == f"{base}/v1/stream/s"
                assert http.get("/v1/stream/s", params={"offset": "-1"}).content == b"secret"
            with pytest.raises(httpx.TransportError):  # plain HTTP is not served
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            with pytest.raises(httpx.ConnectError):  # nor to a client that does not trust it
                httpx.get(f"{base}/readyz", timeout=5)
        finally:
            process.terminate()
            assert process.wait(timeout=30) == 0
