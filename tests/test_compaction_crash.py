"""A compaction crashed at each of its system calls (docs/state.md; both steps: preparing
the next log beside the log, then copying the kept records into it and renaming it over the
log): the data directory as a kill at that instant leaves it is copied aside, and a server
opened on the copy must find either the old log, whole (before the rename), or the new one
(after it), never neither, with every acknowledged change in its state; it then compacts
again over whatever the crash left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from actors import messages as m
from actors.registry import Registry
from actors.service import Streams
from actors.storage import file_io
from actors.storage.file_log import COMPACT_SUFFIX, FileLog
from actors.storage.files import FileStorage
from streams.protocol import offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig
from tests.on_disk import started
from tests.state_fold import Fold, change

JSON = "application/json"
NAME = "c"


class Crash(Exception):
    """The process died here (what it wrote so far is what a restart finds)."""


@attrs.define
class Plan:
    """Crash the next compaction before its `at`-th system call, counted over both steps
    (None: let it finish), leaving a copy of the data directory as the crash left it in
    `image`."""

    data: Path
    image: Path
    at: int | None
    calls: list[str] = attrs.field(factory=list)
    armed: bool = False
    crashed: bool = False

    def call(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.armed:
                if len(self.calls) == self.at:
                    self.crash()
                self.calls.append(name)
            return function(*args, **kwargs)

        return wrapper

    def crash(self) -> None:
        self.armed, self.crashed = False, True
        shutil.copytree(self.data, self.image)
        raise Crash(f"before call {self.at}")


def install(monkeypatch: pytest.MonkeyPatch, plan: Plan) -> None:
    for seam in ("open_file", "pwrite", "pread", "fdatasync", "fsync_dir"):
        monkeypatch.setattr(file_io, seam, plan.call(seam, getattr(file_io, seam)))
    for call in ("unlink", "replace"):
        monkeypatch.setattr(os, call, plan.call(call, getattr(os, call)))
    prepare, restart = FileLog._prepare, FileLog._restart

    def armed_prepare(log: FileLog, frame: bytes) -> None:
        if plan.crashed:
            return prepare(log, frame)
        plan.armed = True
        try:
            prepare(log, frame)
        finally:
            plan.armed = False

    def armed_restart(log: FileLog, keep_from: int) -> int:
        if plan.crashed:
            return restart(log, keep_from)
        plan.armed = True
        try:
            return restart(log, keep_from)
        finally:
            if plan.armed:  # it finished: a crash right after it leaves this
                plan.armed = False
                shutil.copytree(plan.data, plan.image)

    monkeypatch.setattr(FileLog, "_prepare", armed_prepare)
    monkeypatch.setattr(FileLog, "_restart", armed_restart)


def log_path(data: Path) -> Path:
    digest = hashlib.sha256(NAME.encode()).hexdigest()
    return data / "streams" / digest[:2] / f"{digest}.log"


async def append(streams: Streams, fold: Fold, *messages: Any) -> int:
    reply = await streams.append(NAME, AppendRequest(JSON, json.dumps(list(messages)).encode()))
    fold.apply(*messages)
    return offsets.decode(reply.headers["Stream-Next-Offset"])


async def rows(streams: Streams) -> list[Any]:
    read = await streams.state_snapshot(NAME)
    return [json.loads(entity.message) for entity in read.entities]


async def until_compacted(
    registry: Registry, streams: Streams, fold: Fold, r: int, plan: Plan | None = None
) -> int:
    """Appends until the stream compacts, or its compaction crashes (at most 50 appends);
    the tail acknowledged last. A request that meets the crashed actor fails (an append is
    then not acknowledged, so not folded)."""
    base = (await registry.call(NAME, m.Describe())).base
    tail = 0
    for i in range(50):
        try:
            tail = await append(streams, fold, change(f"k{i % 3}", [r, i, "x" * 40], txid=f"{i}"))
            if i % 5 == 4:
                tail = await append(streams, fold, change(f"k{(i + 1) % 3}", operation="delete"))
            if (await registry.call(NAME, m.Describe())).base != base:
                return tail
        except ProtocolError:
            if plan is None or not plan.crashed:
                raise
        if plan is not None and plan.crashed:
            return tail
    raise AssertionError("no compaction in 50 appends")


async def crashed_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan: Plan
) -> tuple[int, Fold, int]:
    """A stream that compacted once, then crashes (per `plan`) in its second compaction;
    the tail acknowledged last, and the base before the crash."""
    storage = FileStorage(plan.data, durable=True)
    fold = Fold()
    try:
        async with trio.open_nursery() as nursery:
            registry = await started(storage, nursery)
            streams = Streams(registry)
            config = StreamConfig(JSON, state_compaction=1)
            await streams.create(NAME, CreateRequest(config))
            await until_compacted(registry, streams, fold, 0)  # a compacted log, compacted again
            base = (await registry.call(NAME, m.Describe())).base
            install(monkeypatch, plan)
            tail = await until_compacted(registry, streams, fold, 1, plan)
            monkeypatch.undo()
            nursery.cancel_scope.cancel()
    finally:
        storage.close()
    return tail, fold, base


def compaction_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    plan = Plan(tmp_path / "full", tmp_path / "full-image", None)
    trio.run(crashed_compaction, tmp_path, monkeypatch, plan)
    assert not plan.crashed
    return plan.calls


def test_a_compaction_crashed_anywhere_leaves_the_old_log_or_the_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = compaction_calls(tmp_path, monkeypatch)
    renamed = calls.index("replace") + 1  # crashes before this many calls find the old log
    assert calls[0] == "open_file" and "fdatasync" in calls[:renamed]
    for at in range(len(calls) + 1):
        plan = Plan(tmp_path / f"data-{at}", tmp_path / f"image-{at}", at)
        tail, fold, base = trio.run(crashed_compaction, tmp_path, monkeypatch, plan)
        assert plan.crashed == (at < len(calls))
        assert log_path(plan.image).exists(), at  # never neither
        trio.run(check_recovered, plan.image, tail, fold, base, at >= renamed, at)


async def check_recovered(
    image: Path, tail: int, fold: Fold, base: int, renamed: bool, at: int
) -> None:
    """The stream in `image` holds every acknowledged change; its log is the old one (its
    base unchanged) or, once `renamed`, the new one (a later base)."""
    storage = FileStorage(image, durable=True)
    try:
        async with trio.open_nursery() as nursery:
            registry = await started(storage, nursery)
            streams = Streams(registry)
            described: m.Snapshot = await registry.call(NAME, m.Describe())
            assert described.tail == tail, at
            if renamed:
                assert base < described.base <= tail, (at, described.base, base)
            else:
                assert described.base == base, (at, described.base, base)
            assert await rows(streams) == list(fold.rows.values()), at
            if described.base:
                with pytest.raises(ProtocolError) as raised:
                    await streams.read(NAME, described.base - 1, 100)
                assert raised.value.code == "STREAM_COMPACTED"
            # The recovered stream takes appends and compacts again, over any leftover
            # half-written next log.
            tail = await until_compacted(registry, streams, fold, 2)
            assert not Path(str(log_path(image)) + COMPACT_SUFFIX).exists()
            assert await rows(streams) == list(fold.rows.values())
            nursery.cancel_scope.cancel()
    finally:
        storage.close()
