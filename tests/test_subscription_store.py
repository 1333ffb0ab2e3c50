"""Where subscriptions are kept: whole records replaced atomically, damage skipped, the
signing keys beside them; and the subscription supervisor recovering from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.storage.subscriptions import FileSubscriptions, MemorySubscriptions
from actors.wakeups import Commits


@pytest.mark.parametrize("durable", [True, False])
async def test_records_are_replaced_whole_and_removed(tmp_path: Path, durable: bool) -> None:
    store = FileSubscriptions(tmp_path, durable)
    await store.save("a/b", b"one")
    await store.save("a/b", b"two")
    await store.save("c", b"three")
    assert sorted(await store.load()) == [b"three", b"two"]
    await store.remove("a/b")
    await store.remove("a/b")  # idempotent
    again = FileSubscriptions(tmp_path, durable)
    assert await again.load() == [b"three"]
    assert not list((tmp_path / "subscriptions").glob("*.tmp"))


async def test_a_damaged_record_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileSubscriptions(tmp_path, True)
    await store.save("a", b"good")
    await store.save("b", b"also good")
    victim = next(
        p for p in (tmp_path / "subscriptions").glob("*.sub") if b"also" in p.read_bytes()
    )
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF
    victim.write_bytes(bytes(raw))
    assert await store.load() == [b"good"]
    assert "damaged" in caplog.text


async def test_keys_are_kept_and_damaged_keys_stop_the_start(tmp_path: Path) -> None:
    store = FileSubscriptions(tmp_path, True)
    assert await store.load_keys() is None
    await store.save_keys(b"ring")
    assert await FileSubscriptions(tmp_path, True).load_keys() == b"ring"
    (tmp_path / "subscriptions" / "keys").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="damaged"):
        await store.load_keys()


async def test_memory_mode_keeps_them_in_memory() -> None:
    store = MemorySubscriptions()
    await store.save("a", b"1")
    await store.save_keys(b"k")
    assert await store.load() == [b"1"] and await store.load_keys() == b"k"
    await store.remove("a")
    assert await store.load() == []


async def test_commits_are_noted_once_enabled_and_coalesced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    commits = Commits()
    commits.note("a", 1)
    assert commits.take() == {}
    commits.enabled = True
    commits.note("a", 1)
    commits.note("a", 5)
    commits.note("b", None)
    with trio.fail_after(1):
        await commits.wait()
    assert commits.take() == {"a": 5, "b": None}
    with trio.move_on_after(0.01) as waited:
        await commits.wait()
    assert waited.cancelled_caught
