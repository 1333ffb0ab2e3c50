"""Settings come from the environment under the Rust reference server's names."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import Settings


def test_defaults_without_environment() -> None:
    assert Settings.from_env({}) == Settings()


def test_every_setting_has_its_name() -> None:
    settings = Settings.from_env(
        {
            "DS_STORAGE__MODE": "memory",
            "DS_STORAGE__DATA_DIR": "/srv/streams",
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
        }
    )
    assert settings == Settings(
        storage_mode="memory",
        data_dir=Path("/srv/streams"),
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
