"""docs/deployment.md stays copyable: its HAProxy configuration parses (`haproxy -c`), every
setting it names exists, and its environment file loads as a postgres-mode configuration.
The two-process deployment itself runs in tests/test_postgres.py and the conformance suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from streams.config import KEYS
from streams.config_load import from_env

DOC = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"


def blocks(language: str) -> list[str]:
    """The doc's fenced code blocks in `language`."""
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)


def haproxy() -> str:
    found = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("HAProxy is not installed; CI must check the config (tests/run.sh does)")
        pytest.skip("HAProxy is not installed (apt-get install haproxy)")
    return found


def test_the_haproxy_configuration_parses(tmp_path: Path) -> None:
    (config,) = blocks("haproxy")
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    checked = subprocess.run([haproxy(), "-c", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "/readyz" in config and "timeout server 120s" in config


def test_every_setting_named_exists() -> None:
    named = set(re.findall(r"\bDS_[A-Z]+__[A-Z_]+\b", DOC.read_text()))
    assert named, "the doc names its settings"
    assert named <= {key.env for key in KEYS}


def test_the_environment_file_is_a_postgres_configuration() -> None:
    env_file = next(block for block in blocks("sh") if block.startswith("# /etc/streams/"))
    environ = {"DS_SERVER__PORT": "4437", "DS_STORAGE__DATA_DIR": "/var/lib/streams/4437"}
    for line in env_file.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            environ[name] = value.strip('"')  # systemd and `set -a; .` both unquote
    settings = from_env(environ)
    assert settings.storage_mode == "postgres"
    assert settings.postgres_url == "host=/var/run/postgresql dbname=streams user=streams"
    assert (settings.host, settings.port) == ("127.0.0.1", 4437)
