"""`python -m streams fsck`: reports damage without changing anything; --repair cuts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.service import Streams
from streams.__main__ import main
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig
from tests.on_disk import on_disk


def make_streams(root: Path, names: list[str]) -> None:
    async def write(streams: Streams) -> None:
        for name in names:
            await streams.create(name, CreateRequest(StreamConfig("text/plain"), body=b"a"))
            await streams.append(name, AppendRequest("text/plain", b"bb"))
            await streams.append(name, AppendRequest("text/plain", b"ccc"))

    on_disk(root, write)


def log_of(root: Path, name: str) -> Path:
    from actors.storage.files import _digest

    digest = _digest(name)
    return root / "streams" / digest[:2] / f"{digest}.log"


def test_fsck_reports_and_repairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_streams(tmp_path, ["fine", "torn", "rotten"])
    torn, rotten = log_of(tmp_path, "torn"), log_of(tmp_path, "rotten")
    torn.write_bytes(torn.read_bytes()[:-2])
    data = bytearray(rotten.read_bytes())
    data[30] ^= 1  # inside the first record: later, acknowledged records follow
    rotten.write_bytes(bytes(data))
    sizes = {p: p.stat().st_size for p in (torn, rotten)}

    assert main(["fsck", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ok      'fine': 3 records" in out
    assert "torn    'torn': 2 records" in out
    assert "corrupt <unreadable name>: 0 records" in out  # the damage is in its first record
    assert "2 damaged log(s)" in out
    assert {p: p.stat().st_size for p in sizes} == sizes  # a check changes nothing

    assert main(["fsck", str(tmp_path), "--repair"]) == 0
    capsys.readouterr()
    assert main(["fsck", str(tmp_path)]) == 0
    assert "0 damaged log(s)" in capsys.readouterr().out
