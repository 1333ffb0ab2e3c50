"""The offline commands: `streams ls`, `streams export`, `streams import` (and `fsck`) as an
operator runs them: help, output, refusals with one line on stderr, and what they change."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage.files import FileStorage
from streams.__main__ import main
from streams.cli import archive, offline
from streams.cli.offline import IN_USE
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig
from tests.server import running_server

TEXT = "text/plain"


def written(
    root: Path, operation: Callable[[Streams], Awaitable[None]], clock: float | None = None
) -> None:
    """`operation` on the streams of `root`, with the actors' clock at `clock` if given."""

    async def run() -> None:
        storage = FileStorage(root, durable=False)
        try:
            async with trio.open_nursery() as nursery:
                now = time.time if clock is None else lambda: clock
                registry = Registry(storage, clock=now)
                await nursery.start(registry.run)
                await operation(Streams(registry))
                nursery.cancel_scope.cancel()
        finally:
            storage.close()

    trio.run(run)


async def plain(streams: Streams) -> None:
    await streams.create("a", CreateRequest(StreamConfig(TEXT, ttl=60), body=b"hello"))
    await streams.create("b c", CreateRequest(StreamConfig(TEXT), closed=True))
    await streams.create("a/fork", CreateRequest(StreamConfig("")), Fork("a", 2))
    await streams.append("a/fork", AppendRequest(TEXT, b"!"))


def names_in(root: Path) -> list[str]:
    async def names(streams: Streams) -> list[str]:
        return sorted(await streams.registry.storage.names())

    found: list[str] = []

    async def collect(streams: Streams) -> None:
        found.extend(await names(streams))

    written(root, collect)
    return found


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("ls", ["--data-dir", "--json"]),
        ("export", ["--data-dir", "--output", "NAME"]),
        ("import", ["--data-dir", "--replace", "FILE"]),
        ("fsck", ["--repair", "DATA_DIR"]),
    ],
)
def test_every_command_explains_itself(
    command: str, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: streams {command}")
    for option in options:
        assert option in out
    assert "no server may" in out  # each says it runs offline


def test_ls_lists_every_stream_as_a_table_or_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written(tmp_path, plain)
    assert main(["ls", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME", "BYTES", "CONTENT-TYPE", "STATUS", "EXPIRY", "FORK-OF", "STATE",
    ]  # fmt: skip
    assert lines[1].split() == ["a", "5", TEXT, "open", "ttl", "60s", "-", "-"]
    fork_of = "a@0000000000000000_0000000000000002"
    assert lines[2].split() == ["a/fork", "3", TEXT, "open", "ttl", "60s", fork_of, "-"]
    assert lines[3].split() == ["'b", "c'", "0", TEXT, "closed", "-", "-", "-"]
    assert main(["ls", "--data-dir", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in listed] == ["a", "a/fork", "b c"]
    assert listed[1] | {"next_offset": None} == {
        "name": "a/fork",
        "bytes": 3,
        "next_offset": None,
        "content_type": TEXT,
        "status": "open",
        "closed": False,
        "deleted": False,
        "ttl": 60,
        "expires_at": None,
        "expired": False,
        "fork": {"source": "a", "offset": "0000000000000000_0000000000000002"},
        "state_validation": None,
        "state_compaction": None,
        "state_base": None,
        "records": 1,
        "producers": 0,
    }


def test_listing_or_exporting_a_stream_past_its_expiry_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server starting would delete it; a look at the data directory must not."""

    async def expiring(streams: Streams) -> None:
        config = StreamConfig(TEXT, expires_at=2000.0)  # in 1970
        await streams.create("old", CreateRequest(config, body=b"x"))

    written(tmp_path, expiring, clock=1000.0)
    for _ in range(2):
        assert main(["ls", "--data-dir", str(tmp_path)]) == 0
        assert "1970-01-01T00:33:20.000Z (passed)" in capsys.readouterr().out
    assert main(["export", "--data-dir", str(tmp_path), "-o", str(tmp_path / "x")]) == 0
    assert names_in(tmp_path) == ["old"]
    target = tmp_path / "target"
    assert main(["import", "--data-dir", str(target), str(tmp_path / "x")]) == 0
    assert "skipped 'old': its Expires-At has passed" in capsys.readouterr().err
    assert names_in(target) == []


@pytest.mark.parametrize("command", ["ls", "export", "import", "fsck"])
def test_a_data_directory_a_server_holds_is_refused(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    written(tmp_path, plain)
    backup = tmp_path / "backup"
    assert main(["export", "--data-dir", str(tmp_path), "-o", str(backup)]) == 0
    arguments = {
        "ls": ["ls", "--data-dir", str(tmp_path)],
        "export": ["export", "--data-dir", str(tmp_path)],
        "import": ["import", "--data-dir", str(tmp_path), "--replace", str(backup)],
        "fsck": ["fsck", str(tmp_path)],
    }[command]
    capsys.readouterr()
    server = FileStorage(tmp_path, durable=True)  # holds the lock, as a running server does
    try:
        assert main(arguments) == 1
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert err == f"streams: {tmp_path}: {IN_USE}\n"
    assert out == ""


def test_a_path_that_is_no_data_directory_is_not_made_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--data-dir", str(tmp_path / "typo")]) == 1
    assert "not a data directory" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_export_writes_to_stdout_and_a_named_fork_brings_its_sources(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    written(tmp_path, plain)
    assert main(["export", "--data-dir", str(tmp_path), "a/fork"]) == 0
    out, err = capsysbinary.readouterr()
    items = list(archive.read(out.splitlines(keepends=True)))
    assert [(i.name, i.records) for i in items if isinstance(i, archive.Entry)] == [
        ("a", 1),
        ("a/fork", 1),
    ]
    assert [i for i in items if isinstance(i, bytes)] == [b"hello", b"!"]
    assert err == b"exported 2 stream(s)\n"
    assert main(["export", "--data-dir", str(tmp_path), "nope"]) == 1
    assert capsysbinary.readouterr().err == b"streams: no stream 'nope'\n"


def test_import_refuses_existing_streams_unless_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target, backup = tmp_path / "source", tmp_path / "target", tmp_path / "backup"
    written(source, plain)
    assert main(["export", "--data-dir", str(source), "-o", str(backup)]) == 0

    async def other(streams: Streams) -> None:
        await streams.create("a", CreateRequest(StreamConfig(TEXT), body=b"other"))
        await streams.create("z", CreateRequest(StreamConfig(TEXT), body=b"z"))

    written(target, other)
    capsys.readouterr()
    assert main(["import", "--data-dir", str(target), str(backup)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "streams: 1 stream(s) exist already ('a'); nothing was imported "
        "(--replace deletes them first)\n"
    )
    assert names_in(target) == ["a", "z"]
    assert main(["import", "--data-dir", str(target), "--replace", str(backup)]) == 0
    assert names_in(target) == ["a", "a/fork", "b c", "z"]
    again = tmp_path / "again"
    assert main(["export", "--data-dir", str(target), "-o", str(again), "a/fork", "b c"]) == 0
    assert again.read_bytes().split(b"\n")[1:] == backup.read_bytes().split(b"\n")[1:]


def lines_of(backup: Path) -> list[bytes]:
    return backup.read_bytes().splitlines(keepends=True)


def replaced(line: bytes) -> Callable[[list[bytes]], list[bytes]]:
    """The file with its first record line (line 3) replaced by `line`."""
    return lambda lines: [*lines[:2], line, *lines[3:]]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: lines[:-1], "no end line after it: the file was cut short"),
        (lambda lines: lines[:2] + lines[3:], "ends 1 record(s) short"),
        (lambda lines: [b'{"format":"durable-streams-export","version":3}\n', *lines[1:]],
         "line 1: format version 3; this version reads 1 and 2"),
        (lambda lines: [lines[0], *lines[3:]], "fork source 'a' is not among the streams"),
        (replaced(b'{"data":"!!"}\n'), "line 3: a data record is not base64"),
        (replaced(b'{"json":[1]}\n'), "line 3: a json record in 'text/plain'"),
        (lambda lines: [], "the file is empty"),
        (lambda lines: [lines[0], lines[1].replace(b'"a"', b'"__ds/a"'), *lines[2:]],
         "line 2: stream name '__ds/a': reserved path"),
        (lambda lines: [*lines[:3], lines[1], *lines[3:]], "line 4: stream 'a' is given twice"),
    ],
)  # fmt: skip
def test_a_damaged_or_foreign_file_imports_nothing(
    tmp_path: Path,
    damage: Callable[[list[bytes]], list[bytes]],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target, backup = tmp_path / "source", tmp_path / "target", tmp_path / "backup"
    written(source, plain)
    assert main(["export", "--data-dir", str(source), "-o", str(backup)]) == 0
    backup.write_bytes(b"".join(damage(lines_of(backup))))
    capsys.readouterr()
    assert main(["import", "--data-dir", str(target), str(backup)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"streams: {backup}: ")
    assert message in err
    assert err.endswith("; nothing was imported\n")
    assert not target.exists()


def test_an_import_that_does_not_reproduce_its_export_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file whose tail disagrees with its records (edited by hand, or by a tool that
    re-encodes JSON) is caught by the check after each stream."""
    source, target, backup = tmp_path / "source", tmp_path / "target", tmp_path / "backup"
    written(source, plain)
    assert main(["export", "--data-dir", str(source), "-o", str(backup)]) == 0
    backup.write_bytes(backup.read_bytes().replace(b'"tail":5', b'"tail":6'))
    capsys.readouterr()
    assert main(["import", "--data-dir", str(target), str(backup)]) == 1
    assert capsys.readouterr().err == (
        "streams: import stopped at stream 'a': differs from its export: tail 5 (exported 6); "
        "the 0 stream(s) before it were imported (`streams import --replace` imports them "
        "again)\n"
    )


def test_the_console_script_against_a_running_server_and_after_it(tmp_path: Path) -> None:
    """The installed `streams` command: refused while a real server holds the data
    directory (one line, status 1), and lists what it served once it stopped."""
    data_dir = tmp_path / "data"
    streams = [str(Path(sys.executable).parent / "streams"), "ls", "--data-dir", str(data_dir)]
    with running_server(data_dir) as base_url:
        request = urllib.request.Request(
            f"{base_url}/v1/stream/served", b"abc", {"Content-Type": TEXT}, method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
        refused = subprocess.run(streams, capture_output=True, text=True, timeout=60)
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == f"streams: {data_dir}: {IN_USE}\n"
    listed = subprocess.run(streams, capture_output=True, text=True, timeout=60, check=True)
    assert listed.stdout.splitlines()[1].split() == ["served", "3", TEXT, "open", "-", "-", "-"]


def test_a_ttl_shorter_than_the_import_does_not_run_out_during_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source of a fork is created first and forked last: with the clock running, a
    long import would expire it in between (a server's start restarts TTLs anyway)."""
    source, target, backup = tmp_path / "source", tmp_path / "target", tmp_path / "backup"

    async def short(streams: Streams) -> None:
        await streams.create("a", CreateRequest(StreamConfig(TEXT, ttl=5), body=b"a"))
        await streams.create("b", CreateRequest(StreamConfig(TEXT), body=b"b"))
        await streams.create("a/fork", CreateRequest(StreamConfig("")), Fork("a"))

    written(source, short)
    assert main(["export", "--data-dir", str(source), "-o", str(backup)]) == 0

    class Slow:
        """Every look at the time finds a minute gone."""

        now = time.time()

        def time(self) -> float:
            self.now += 60
            return self.now

    monkeypatch.setattr(offline, "time", Slow())
    assert main(["import", "--data-dir", str(target), str(backup)]) == 0
    assert names_in(target) == ["a", "a/fork", "b"]
