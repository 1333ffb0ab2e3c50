"""Log records: the CBOR encoding round-trips every field."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.protocol import records
from streams.protocol.headers import MAX_SAFE_INTEGER, Producer
from streams.protocol.records import AppendRecord, CreateRecord, SoftDeleteRecord, StreamConfig

times = st.floats(min_value=0, max_value=2e10, allow_nan=False)
safe_ints = st.integers(min_value=0, max_value=MAX_SAFE_INTEGER)
producers = st.builds(Producer, st.text(min_size=1), safe_ints, safe_ints)

configs = st.builds(
    StreamConfig,
    content_type=st.sampled_from(["application/octet-stream", "application/json", "text/plain"]),
    ttl=st.none() | safe_ints,
    expires_at=st.none() | times,
    fork_source=st.none() | st.text(min_size=1),
    fork_offset=st.integers(min_value=0, max_value=10**16 - 1),
)
creates = st.builds(
    CreateRecord,
    name=st.text(min_size=1),
    config=configs,
    incarnation=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    at=times,
    closed=st.booleans(),
    data=st.binary(max_size=64),
)
appends = st.builds(
    AppendRecord,
    at=times,
    data=st.binary(max_size=64),
    producer=st.none() | producers,
    stream_seq=st.none() | st.text(),
    close=st.booleans(),
)
soft_deletes = st.builds(SoftDeleteRecord, at=times)


def round_trip(record: records.Record) -> records.Record:
    meta, data = records.encode(record)
    assert isinstance(meta, bytes) and isinstance(data, bytes)
    return records.decode(meta, data)


@given(creates | appends | soft_deletes)
def test_every_record_round_trips(record: records.Record) -> None:
    decoded = round_trip(record)
    assert decoded == record
    assert type(decoded) is type(record)


@given(creates | appends)
def test_data_travels_beside_the_metadata(record: CreateRecord | AppendRecord) -> None:
    meta, data = records.encode(record)
    assert data == record.data
    doc = cbor2.loads(meta)
    assert isinstance(doc, dict)
    assert not any(isinstance(v, bytes) for v in doc.values())


def test_soft_delete_has_no_data() -> None:
    meta, data = records.encode(SoftDeleteRecord(12.5))
    assert data == b""
    assert cbor2.loads(meta) == {"k": "softdel", "t": 12.5}


def test_bare_append_metadata_is_minimal() -> None:
    meta, data = records.encode(AppendRecord(3.0, b"abc"))
    assert cbor2.loads(meta) == {"k": "append", "t": 3.0}
    assert data == b"abc"


def test_full_append_metadata() -> None:
    record = AppendRecord(3.0, b"1,22,", Producer("p", 4, 5), "seq-9", True)
    meta, _ = records.encode(record)
    assert cbor2.loads(meta) == {
        "k": "append",
        "t": 3.0,
        "p": ["p", 4, 5],
        "s": "seq-9",
        "close": True,
    }
    assert round_trip(record) == record


def test_empty_stream_seq_survives() -> None:
    record = AppendRecord(1.0, b"x", stream_seq="")
    assert round_trip(record) == record


def test_create_keeps_fork_configuration() -> None:
    config = StreamConfig("application/json", None, 1.9e9, "source/a", 1234)
    record = CreateRecord("fork/b", config, "f" * 32, 10.0, True, b"1,")
    decoded = round_trip(record)
    assert isinstance(decoded, CreateRecord)
    assert decoded.config == config
    assert decoded.closed is True


def test_older_logs_json_message_sizes_are_ignored() -> None:
    meta = {"k": "append", "t": 3.0, "sz": [2, 3]}
    assert records.decode(cbor2.dumps(meta), b"1,22,") == AppendRecord(3.0, b"1,22,")
    create: dict[str, object] = {"k": "create", "name": "s", "ct": "application/json"}
    create |= {"ttl": None, "exp": None}
    create |= {"src": None, "fo": 0, "id": "i", "t": 1.0, "closed": False, "sz": [2]}
    decoded = records.decode(cbor2.dumps(create), b"1,")
    assert isinstance(decoded, CreateRecord) and decoded.data == b"1,"


def test_metadata_stays_small_whatever_the_data() -> None:
    """The format's one bound on metadata is the writer's too: no record's metadata grows
    with its data (JSON message boundaries are the data's own commas)."""
    data = b"1," * 1_100_000
    meta, _ = records.encode(AppendRecord(1.0, data, Producer("p" * 100, 1, 2), "s" * 100, True))
    assert len(meta) < 512


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown record kind"):
        records.decode(cbor2.dumps({"k": "truncate", "t": 1.0}), b"")
