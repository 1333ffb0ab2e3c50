"""Model-based test of State Protocol views as the stream actors keep them (docs/state.md).

Random batches of change, control and non-state messages (duplicate inserts, updates and
deletes of missing keys, resets mid-stream and between snapshot markers) are appended, one
request or several at once, by three idempotent producers (retries included) or none, to
two JSON streams: `s` takes anything, `v` has `Stream-State-Validation: semantic`, each
may have a small `Stream-State-Compaction`; and to `f`, a fork of either (maybe of a
compacted one), created and deleted at random. Between appends: snapshot, entity and plain
reads; actors that retire (checkpointing their views); restarts of the whole registry,
graceful or not (in file mode on a new `FileStorage` of the same directory), after which
views come back from their checkpoint plus the log after it, or from a compacted log's
base; and view checkpoints damaged, foreign, stale (maybe of an earlier `f`), made up or
removed. Everything is compared with `Model`, a reference fold of what was appended,
written here from the issue's rules and nothing else: the entities, their order (of last
write), each one's offset (the end of the record that last wrote it), txid and timestamp,
the count of skipped messages, the raw log from the compaction base on (410 below it),
validation's verdicts (a refused batch changes nothing), and producer deduplication across
compactions and restarts.

Driving it: as in `test_actor_lifecycle_model.py`, one registry runs in a Trio thread
(`tests/trio_thread.py`) for many steps, under a `MockClock` only the `retire` rule moves.
The server picks the order of appends sent at once: the model takes it from the offsets
returned. When a compaction happens is the server's choice too (its view's size counts):
the model learns the base after each append and checks it is legal, and that it happened
once both of its steps were certainly due (`_learn_base`). Since what the model holds can
depend on the server's choices, every strategy draws the same choices whatever it holds
(`changes`), as Hypothesis needs to replay a test case.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import event, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from actors import actor as actor_module
from actors import messages as m
from actors import views as views_module
from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage import Storage
from actors.storage.file_log import VIEW_SUFFIX
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from actors.view_budget import ViewLimits
from state.view import Entity
from streams.protocol import offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest, Reply
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.state_reference import (
    IDENTITIES,
    TYPES,
    Model,
    Row,
    batches,
    canonical,
    refusal,
    view_bound,
)
from tests.trio_thread import TrioThread

T = TypeVar("T")
JSON = "application/json"
IDLE_TIMEOUT = 10.0
NEVER = 1e12  # the registry's own sweep: only the rules stop actors
NAMES = st.sampled_from(["s", "v", "f"])  # `f`: a fork of `s` or `v`, when there is one


def position_of(reply: Reply) -> int:
    return offsets.decode(reply.headers["Stream-Next-Offset"])


@attrs.define
class Sent:
    """One append of a step, and what the server answered."""

    batch: list[Any]
    stamp: Producer | None
    reply: Reply | ProtocolError | None = None

    async def send(self, streams: Streams, name: str) -> None:
        request = AppendRequest(JSON, json.dumps(self.batch).encode(), producer=self.stamp)
        try:
            self.reply = await streams.append(name, request)
        except ProtocolError as error:
            self.reply = error

    @property
    def appended(self) -> bool:
        """Appended (a duplicate's answer is 204 too, but only a stamped append is 200)."""
        if not isinstance(self.reply, Reply):
            return False
        return self.reply.status == (204 if self.stamp is None else 200)

    @property
    def position(self) -> int:
        assert isinstance(self.reply, Reply)
        return position_of(self.reply)


# ---- the machine -------------------------------------------------------------------------


class StateMachine(RuleBasedStateMachine):
    storage: Storage
    registry: Registry
    loop: TrioThread

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Model] = {}
        self.saved = views_module.SAVE_BYTES, actor_module.CHECKPOINT  # restored at teardown
        self.checkpoints: dict[str, list[bytes]] = {}  # view checkpoints seen (file mode)

    def open_storage(self) -> Storage:
        return MemoryStorage()

    def reopen_storage(self) -> Storage:
        return self.storage  # memory: what a restart keeps is this object

    @initialize(
        compaction=st.sampled_from([None, 60, 60, 200, 600]),
        compaction_v=st.sampled_from([None, 60, 300]),
        save_bytes=st.sampled_from([1, 1, 300]),
        records=st.sampled_from([1000, 2]),
        resident=st.sampled_from([1 << 30, 1 << 30, 1500]),
    )
    def start(
        self,
        compaction: int | None,
        compaction_v: int | None,
        save_bytes: int,
        records: int,
        resident: int,
    ) -> None:
        """Two streams. Retiring actors checkpoint views that moved `save_bytes`, and
        streams' states every `records` records; `resident`: the process's budget of
        resident views (small: one view drops the other's)."""
        views_module.SAVE_BYTES, actor_module.CHECKPOINT = save_bytes, records
        self.resident = resident
        self.storage = self.open_storage()
        self._start_registry()
        for name, validation, threshold in (
            ("s", None, compaction),
            ("v", "semantic", compaction_v),
        ):
            config = StreamConfig(JSON, state_validation=validation, state_compaction=threshold)
            reply = self.call(lambda s, c=config, n=name: s.create(n, CreateRequest(c)))  # type: ignore[misc]
            assert isinstance(reply, Reply) and reply.status == 201, reply
            self.model[name] = Model(validation, threshold)

    def _start_registry(self) -> None:
        self.registry = Registry(
            self.storage,
            idle_timeout=IDLE_TIMEOUT,
            sweep_interval=NEVER,
            cache_bytes=64,  # reads hit both the tail cache and the log
            view_limits=ViewLimits(max_resident_bytes=self.resident),
        )
        self.clock = trio.testing.MockClock()
        self.loop = TrioThread(self.registry, self.clock)
        self.streams = Streams(self.registry)

    def teardown(self) -> None:
        views_module.SAVE_BYTES, actor_module.CHECKPOINT = self.saved
        if hasattr(self, "loop"):
            self.loop.close()

    def call(self, operation: Callable[[Streams], Awaitable[T]]) -> T | ProtocolError:
        """The result, or the protocol error."""

        async def guarded() -> T | ProtocolError:
            try:
                return await operation(self.streams)
            except ProtocolError as error:
                return error

        return self.loop.step(guarded)

    def describe(self, name: str) -> m.Snapshot:
        return self.loop.step(lambda: self.registry.call(name, m.Describe()))

    def _learn_base(self, name: str, commits: Sequence[int] = ()) -> None:
        """The server compacts when it likes, within actors/compaction.py's two steps: a
        base prepared at a commit's tail H, once the log since the last base passed the
        threshold (and the view's size), becomes the log's start at a later commit (one
        of `commits`, this step's) the threshold past H; and must have, once the model
        saw both steps due in one actor's life."""
        stream = self.model[name]
        described = self.describe(name)
        assert described.tail == stream.tail
        threshold = stream.compaction
        if described.base != stream.base:
            new = described.base
            assert threshold is not None and not stream.forks, (name, new)
            assert new in stream.ends and new - stream.base >= threshold, (new, stream.base)
            assert any(commit - new >= threshold for commit in commits), (new, commits)
            stream.base, stream.due = new, []
            event("compacted")
            return
        if not commits or threshold is None or stream.forks:
            return
        stream.due.append((stream.tail, view_bound(stream.rows)))
        prepared = [
            tail for tail, bound in stream.due if tail - stream.base >= max(threshold, bound)
        ]
        assert not prepared or stream.tail - prepared[0] < threshold, ("not compacted", prepared)

    def _forget_prepared(self) -> None:
        """Actors stopped: a base they prepared is forgotten, and prepared again later."""
        for stream in self.model.values():
            stream.due = []

    # ---- appends ------------------------------------------------------------------------

    @rule(name=st.sampled_from(["s", "s", "v", "f"]), data=st.data(), rounds=st.integers(1, 3))
    def append(self, name: str, data: st.DataObject, rounds: int) -> None:
        """`rounds` times, appends sent together (1-4), each from its own producer or
        none, some sent twice (a retry while the first is in flight), maybe a snapshot
        read beside them. The server picks their order: the appended ones are checked in
        the order of their offsets, each refused one against a state it could have met,
        the snapshot against the state as of its offset."""
        for _ in range(rounds):
            at_once = data.draw(st.sampled_from([1, 1, 2, 3, 4]))
            self._round(name, data, at_once, reader=data.draw(st.booleans()))

    def _round(self, name: str, data: st.DataObject, at_once: int, reader: bool) -> None:
        stream = self.model.get(name, Model(None, None))  # drawn for alike when absent
        sent: list[Sent] = []
        for producer in data.draw(st.permutations([None, None, "p0", "p1", "p2"]))[:at_once]:
            batch = data.draw(batches(stream.rows if stream.validation else None))
            stamp = None
            if producer is not None:
                epoch, seq = stream.producers.get(producer, (0, -1))
                new_epoch = data.draw(st.integers(0, 7)) == 0
                stamp = (
                    Producer(producer, epoch + 1, 0)
                    if new_epoch
                    else Producer(producer, epoch, seq + 1)
                )
            copies = 2 if stamp is not None and data.draw(st.integers(0, 3)) == 0 else 1
            sent += [Sent(batch, stamp) for _ in range(copies)]
        snapshots: list[m.StateRead] = []
        if name not in self.model:
            return

        async def step(streams: Streams) -> None:
            async with trio.open_nursery() as nursery:
                for one in sent:
                    nursery.start_soon(one.send, streams, name)
                if reader:
                    snapshots.append(await streams.state_snapshot(name))

        self.call(step)
        self._check(name, sent, snapshots)

    def _check(self, name: str, sent: list[Sent], snapshots: list[m.StateRead]) -> None:
        stream = self.model[name]
        states = {stream.tail: stream.state()}  # each offset the appends passed through
        appended = sorted((one for one in sent if one.appended), key=lambda one: one.position)
        for one in appended:
            if stream.validation is not None:
                assert refusal(one.batch, stream.rows) is None, (one, stream.rows)
            stream.append(one.batch)
            assert one.position == stream.tail, (one, appended)
            if one.stamp is not None:
                stream.producers[one.stamp.id] = (one.stamp.epoch, one.stamp.seq)
            states[stream.tail] = stream.history[stream.tail]
        stamps = [one.stamp for one in appended if one.stamp is not None]
        assert len(stamps) == len(set(stamps))  # each stamp appended once at most
        for one in sent:
            if isinstance(one.reply, ProtocolError):
                assert stream.validation is not None, one
                verdict = one.reply.status, one.reply.fields.get("index")
                assert any(refusal(one.batch, rows) == verdict for rows, _ in states.values()), one
                event(f"refused {verdict[0]}")
            elif not one.appended:  # a duplicate: its copy was appended
                assert one.stamp in stamps and one.reply is not None, one
                assert one.reply.headers["Producer-Seq"] == str(one.stamp.seq)
        for read in snapshots:  # one offset's state, whatever committed meanwhile
            assert read.offset in states, (read.offset, states)
            rows, skips = states[read.offset]
            self._same(read.entities, rows, None)
            assert read.skipped == skips
        self._learn_base(name, [one.position for one in appended])

    @rule(
        name=st.sampled_from(["s", "v", "f"]),
        producer=st.sampled_from(["p0", "p1", "p2"]),
        back=st.integers(0, 1 << 16),
        stale=st.booleans(),
        batch=batches(),  # what it holds does not matter: it is not looked at
    )
    def retry(self, name: str, producer: str, back: int, stale: bool, batch: list[Any]) -> None:
        """A producer sends an acknowledged seq again (204, nothing appended), or writes in
        an epoch already fenced (403)."""
        stream = self.model.get(name)
        if stream is None or producer not in stream.producers:
            return
        epoch, seq = stream.producers[producer]
        stale = stale and epoch > 0
        stamp = Producer(producer, epoch - 1 if stale else epoch, 0 if stale else back % (seq + 1))
        body = json.dumps(batch).encode()
        reply = self.call(lambda s: s.append(name, AppendRequest(JSON, body, producer=stamp)))
        if stale:
            assert isinstance(reply, ProtocolError) and reply.status == 403, reply
        else:
            assert isinstance(reply, Reply) and reply.status == 204, reply
            assert reply.headers["Producer-Epoch"] == str(epoch)
            assert reply.headers["Producer-Seq"] == str(seq)
            assert position_of(reply) == stream.tail
        self._learn_base(name)

    # ---- reads ------------------------------------------------------------------------------

    def _absent(self, name: str, reply: object) -> bool:
        """True (and checked: 404) if `name` is not a stream now."""
        if name in self.model:
            return False
        assert isinstance(reply, ProtocolError) and reply.status == 404, reply
        return True

    @rule(name=NAMES, types=st.sampled_from([None, ("todo",), ("user",), TYPES]))
    def snapshot(self, name: str, types: tuple[str, ...] | None) -> None:
        asked = None if types is None else frozenset(types)
        read = self.call(lambda s: s.state_snapshot(name, asked))
        if self._absent(name, read):
            return
        stream = self.model[name]
        assert isinstance(read, m.StateRead), read
        assert (read.offset, read.base, read.skipped) == (stream.tail, stream.base, stream.skipped)
        self._same(read.entities, stream.rows, asked)
        event(f"snapshot rows {min(len(read.entities), 3)} base>0 {stream.base > 0}")

    @staticmethod
    def _same(
        entities: list[Entity], rows: dict[tuple[str, str], Row], types: frozenset[str] | None
    ) -> None:
        """A snapshot's entities are the model's rows (of `types`), in the same order."""
        got = [
            (canonical(json.loads(e.message)), e.offset, e.txid, e.timestamp, canonical(e.value()))
            for e in entities
        ]
        expected = [
            (
                canonical(row.message(identity)),
                row.offset,
                row.txid,
                row.timestamp,
                canonical(row.value),
            )
            for identity, row in rows.items()
            if types is None or identity[0] in types
        ]
        assert got == expected

    @rule(name=NAMES, identity=IDENTITIES)
    def entity(self, name: str, identity: tuple[str, str]) -> None:
        read = self.call(lambda s: s.state_entity(name, *identity))
        if self._absent(name, read):
            return
        stream = self.model[name]
        assert isinstance(read, m.StateRead), read
        assert read.offset == stream.tail
        row = stream.rows.get(identity)
        got = [(canonical(e.value()), e.offset, e.txid, e.timestamp) for e in read.entities]
        assert got == (
            [] if row is None else [(canonical(row.value), row.offset, row.txid, row.timestamp)]
        )

    @rule(name=NAMES, pick=st.integers(-1, 40), chunk=st.integers(1, 200))
    def read(self, name: str, pick: int, chunk: int) -> None:
        """The raw log: from the base on, every byte as appended; below it, 410 (a fork's
        inherited range too, when its source was compacted)."""
        stream = self.model.get(name)
        if stream is None:
            return
        start: int | Sentinel = Sentinel.START if pick < 0 else stream.ends[pick % len(stream.ends)]
        position = 0 if isinstance(start, Sentinel) else start

        async def read_all(streams: Streams) -> bytes:
            data, at = b"", start
            while True:
                result = await streams.read(name, at, chunk)
                assert result.start == (position if at is start else at)
                data += result.data
                if result.end == result.snapshot.tail:
                    return data
                assert result.end > result.start and result.end in stream.ends
                at = result.end

        result = self.call(read_all)
        if position < stream.floor:
            assert isinstance(result, ProtocolError), result
            assert (result.status, result.code) == (410, "STREAM_COMPACTED")
            assert result.headers["Stream-State-Base"] == offsets.encode(stream.floor)
        else:
            assert result == stream.data[position:]

    # ---- a fork ---------------------------------------------------------------------------

    @rule(
        source=st.sampled_from(["s", "s", "v"]),
        pick=st.integers(0, 1 << 16),
        validation=st.sampled_from([None, "semantic"]),
        compaction=st.sampled_from([None, 60, 300]),
        data=st.data(),
    )
    def fork(
        self,
        source: str,
        pick: int,
        validation: str | None,
        compaction: int | None,
        data: st.DataObject,
    ) -> None:
        """`f` forks a stream at one of its record boundaries (mostly one of the last),
        maybe with a body: its view starts with the source's rows there, and a semantic
        fork's body is checked against them; below the source's base, 410."""
        origin = self.model[source]
        recent = origin.ends[-1 - pick % min(3, len(origin.ends))]
        at = recent if pick % 2 else origin.ends[pick % len(origin.ends)]
        rows, skips = origin.history[at]
        body = data.draw(batches(rows if validation else None)) if data.draw(st.booleans()) else []
        if "f" in self.model:
            return
        config = StreamConfig("", state_validation=validation, state_compaction=compaction)
        request = CreateRequest(config, body=json.dumps(body).encode() if body else b"")
        reply = self.call(lambda s: s.create("f", request, Fork(source, at)))
        if at < origin.floor:
            assert isinstance(reply, ProtocolError), reply
            assert (reply.status, reply.code) == (410, "STREAM_COMPACTED")
            return
        verdict = refusal(body, rows) if validation else None
        if verdict is not None:
            assert isinstance(reply, ProtocolError), (reply, body)
            assert (reply.status, reply.fields.get("index")) == verdict, (reply, body)
            event(f"fork refused {verdict[0]}")
            return
        assert isinstance(reply, Reply) and reply.status == 201, reply
        fork = Model(validation, compaction, origin.data[:at], [e for e in origin.ends if e <= at])
        fork.history = {end: origin.history[end] for end in fork.ends}
        fork.rows, fork.skipped = dict(rows), skips
        fork.source, fork.inherited_floor = source, origin.floor
        if body:  # the fork's first record
            fork.append(body)
        assert position_of(reply) == fork.tail
        self.model["f"] = fork
        origin.forks.add("f")
        origin.due = []  # a base prepared before is dropped at the switch: links
        event("forked" + (" a compacted stream" if origin.floor else ""))

    @rule()
    def delete_fork(self) -> None:
        """`f` goes (its source may be compacted again); a later `f` is a new stream."""
        reply = self.call(lambda s: s.delete("f"))
        if self._absent("f", reply):
            return
        assert isinstance(reply, Reply) and reply.status == 204, reply
        fork = self.model.pop("f")
        assert fork.source is not None
        origin = self.model[fork.source]
        origin.forks.discard("f")
        origin.due = []

    # ---- actors stop, the server restarts -------------------------------------------------

    @rule()
    def retire(self) -> None:
        """Every actor's idle timeout passes: they checkpoint their views and stop."""

        async def idle() -> None:
            self.clock.jump(IDLE_TIMEOUT + 1)
            await self.registry.all_stopped()

        self.loop.step(idle)
        self._forget_prepared()
        for name in self.model:  # what an old checkpoint looks like, for `damage`
            saved = self.load_view(name)
            seen = self.checkpoints.setdefault(name, [])
            if saved is not None and saved not in seen:
                seen.append(saved)

    @rule(graceful=st.booleans())
    def restart(self, graceful: bool) -> None:
        """The registry stops (its actors retired first, or cancelled as in a crash) and a
        new one serves the same storage."""
        if graceful:
            self.retire()
        self.loop.close()
        self._forget_prepared()
        self.storage = self.reopen_storage()
        self._start_registry()
        for name in self.model:
            self._learn_base(name)

    # ---- view checkpoints, damaged -----------------------------------------------------------

    def load_view(self, name: str) -> bytes | None:
        assert isinstance(self.storage, MemoryStorage)
        return self.storage._views.get(name)

    def store_view(self, name: str, blob: bytes | None) -> None:
        assert isinstance(self.storage, MemoryStorage)
        if blob is None:
            self.storage._views.pop(name, None)
        else:
            self.storage._views[name] = blob

    @rule(
        name=NAMES,
        damage=st.sampled_from(["truncate", "flip", "foreign", "stale", "garbage", "remove"]),
        where=st.integers(0, 1 << 16),
        restart=st.booleans(),
    )
    def damage(self, name: str, damage: str, where: int, restart: bool) -> None:
        """With every actor stopped (views checkpointed), the view checkpoint of `name` is
        damaged, replaced by the other stream's or an older one of its own (maybe from
        before a compaction), made up, or removed; the next actor must rebuild a view
        equal to the model's. (A checkpoint of `f` may be of an earlier `f`, deleted since.)"""
        self.retire()
        if name not in self.model:
            return
        current = self.load_view(name) or b""
        other = self.load_view("v" if name == "s" else "s")
        older = self.checkpoints.get(name, [])
        if damage == "truncate" and current:
            self.store_view(name, current[: where % len(current)])
        elif damage == "flip" and current:
            index = where % len(current)
            flipped = bytes([current[index] ^ (1 + where % 255)])
            self.store_view(name, current[:index] + flipped + current[index + 1 :])
        elif damage == "foreign" and other is not None:
            self.store_view(name, other)
        elif damage == "stale" and older:
            self.store_view(name, older[where % len(older)])
        elif damage == "garbage":
            self.store_view(name, bytes(where % 251 for _ in range(where % 97)))
        elif damage == "remove":
            self.store_view(name, None)
        if restart:
            self.restart(graceful=False)


class FileStateMachine(StateMachine):
    def open_storage(self) -> Storage:
        self.directory = tempfile.TemporaryDirectory()
        return FileStorage(Path(self.directory.name), durable=False)

    def reopen_storage(self) -> Storage:
        """A new process: nothing of the old storage object but the files."""
        self.storage.close()
        return FileStorage(Path(self.directory.name), durable=False)

    def teardown(self) -> None:
        super().teardown()
        if hasattr(self, "directory"):
            self.storage.close()
            self.directory.cleanup()

    def view_path(self, name: str) -> Path:
        assert isinstance(self.storage, FileStorage)
        return Path(str(self.storage._path(name)) + VIEW_SUFFIX)

    def load_view(self, name: str) -> bytes | None:
        path = self.view_path(name)
        return path.read_bytes() if path.exists() else None

    def store_view(self, name: str, blob: bytes | None) -> None:
        path = self.view_path(name)
        if blob is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(blob)


TestMemoryState = StateMachine.TestCase
TestMemoryState.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
TestFileState = FileStateMachine.TestCase
TestFileState.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
