"""The stream state machine: folding records, planning appends, reads, sub-offsets, expiry."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.protocol import jsonmode, offsets, records
from streams.protocol.errors import ProtocolError
from streams.protocol.extents import Slice
from streams.protocol.headers import Producer
from streams.protocol.machine import (
    AppendRequest,
    CreateRequest,
    Reply,
    StreamState,
    check_stream_size,
    encode_body,
)
from streams.protocol.offsets import Sentinel
from streams.protocol.records import AppendRecord, CreateRecord, SoftDeleteRecord, StreamConfig

OCTET = "application/octet-stream"
JSON = "application/json"
T0 = 1_000.0
NOW = 2_000.0


def make_state(
    content_type: str = OCTET,
    *,
    data: bytes = b"",
    closed: bool = False,
    ttl: int | None = None,
    expires_at: float | None = None,
    fork_source: str | None = None,
    fork_offset: int = 0,
    locator: int = 7,
) -> StreamState:
    config = StreamConfig(content_type, ttl, expires_at, fork_source, fork_offset)
    return StreamState.created(CreateRecord("s", config, "inc", T0, closed, data), locator)


class Log:
    """Stands in for a stream's log: each committed record's data under its locator."""

    def __init__(self) -> None:
        self.data: dict[int, bytes] = {}
        self.records: list[tuple[records.Record, int]] = []

    def stage(self, record: records.Record) -> int:
        locator = 1000 * (len(self.records) + 1)
        if not isinstance(record, SoftDeleteRecord):
            self.data[locator] = record.data
        self.records.append((record, locator))
        return locator

    def read(self, slices: Sequence[Slice]) -> bytes:
        return b"".join(self.data[s.locator][s.skip : s.skip + s.length] for s in slices)


def commit(state: StreamState, request: AppendRequest, log: Log | None = None) -> Reply:
    """Plan an append that must be accepted, apply it, and return its reply."""
    planned = state.plan_append(request, NOW)
    assert isinstance(planned, AppendRecord), planned
    state.apply(planned, (log or Log()).stage(planned))
    return state.appended(planned)


def outcome(state: StreamState, request: AppendRequest) -> int:
    """The status a request gets: committing it if accepted."""
    try:
        planned = state.plan_append(request, NOW)
    except ProtocolError as error:
        return error.status
    if isinstance(planned, Reply):
        return planned.status
    state.apply(planned, 0)
    return state.appended(planned).status


def rejects(action: Callable[[], object], status: int, code: str | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        action()
    assert caught.value.status == status
    if code is not None:
        assert caught.value.code == code
    return caught.value


def body(
    data: bytes = b"x",
    *,
    close: bool = False,
    content_type: str | None = OCTET,
    producer: Producer | None = None,
    stream_seq: str | None = None,
) -> AppendRequest:
    return AppendRequest(content_type, data, close, producer, stream_seq)


def by(
    pid: str,
    epoch: int,
    seq: int,
    data: bytes = b"x",
    *,
    close: bool = False,
    content_type: str | None = OCTET,
    stream_seq: str | None = None,
) -> AppendRequest:
    producer = Producer(pid, epoch, seq)
    return body(
        data, close=close, content_type=content_type, producer=producer, stream_seq=stream_seq
    )


def off(position: int) -> str:
    return offsets.encode(position)


# ---- creation and folding ---------------------------------------------------------------


def test_created_empty_stream() -> None:
    state = make_state()
    assert (state.name, state.incarnation) == ("s", "inc")
    assert state.tail == 0
    assert state.next_offset == off(0)
    assert state.records == 0
    assert not state.closed and state.closed_by is None and not state.soft_deleted
    assert state.stream_seq is None and state.producers == {}
    assert state.created_at == state.last_access == T0


def test_created_with_initial_data_is_one_extent() -> None:
    state = make_state(JSON, data=b"1,22,", locator=40)
    assert state.records == 1
    assert state.slices(0, 5, 100) == ([Slice(40, 0, 5)], 5)
    assert state.tail == 5
    assert state.next_offset == off(5)


def test_created_fork_starts_at_its_fork_offset() -> None:
    state = make_state(data=b"abc", fork_source="src", fork_offset=50, locator=12)
    assert state.slices(50, 53, 100) == ([Slice(12, 0, 3)], 53)
    assert state.tail == 53
    assert make_state(fork_source="src", fork_offset=50).tail == 50


def test_created_closed() -> None:
    state = make_state(data=b"final", closed=True)
    assert state.closed and state.closed_by is None
    assert state.tail == 5


def test_apply_append_adds_an_extent_at_the_tail() -> None:
    state = make_state(data=b"abc", locator=1)
    state.apply(AppendRecord(NOW, b"defg", None, None, False), 99)
    assert state.slices(0, 7, 100) == ([Slice(1, 0, 3), Slice(99, 0, 4)], 7)
    assert state.tail == 7


def test_apply_empty_append_adds_no_extent() -> None:
    state = make_state(data=b"abc")
    state.apply(AppendRecord(NOW, b"", close=True), 99)
    assert state.records == 1
    assert state.tail == 3
    assert state.closed


def test_apply_records_producer_stream_seq_and_closer() -> None:
    state = make_state()
    state.apply(AppendRecord(NOW, b"a", producer=Producer("p", 2, 0), stream_seq="001"), 1)
    state.apply(AppendRecord(NOW, b"b", producer=Producer("p", 2, 1)), 2)
    assert state.producers == {"p": (2, 1)}
    assert state.stream_seq == "001"
    assert not state.closed
    state.apply(AppendRecord(NOW, b"", producer=Producer("q", 0, 0), close=True), 3)
    assert state.producers == {"p": (2, 1), "q": (0, 0)}
    assert state.closed and state.closed_by == Producer("q", 0, 0)


def test_apply_soft_delete() -> None:
    state = make_state()
    state.apply(SoftDeleteRecord(NOW), 5)
    assert state.soft_deleted
    rejects(state.check_visible, 410, "STREAM_GONE")


def test_apply_create_is_refused() -> None:
    state = make_state()
    create = CreateRecord("s", StreamConfig(OCTET), "other", NOW)
    with pytest.raises(ValueError):
        state.apply(create, 5)


def test_check_visible_passes_for_live_streams() -> None:
    make_state().check_visible()
    make_state(closed=True).check_visible()


# ---- metadata ---------------------------------------------------------------------------


def test_metadata_headers_minimal() -> None:
    state = make_state("text/plain; charset=utf-8", data=b"hello")
    assert state.metadata_headers() == {
        "Content-Type": "text/plain; charset=utf-8",
        "Stream-Next-Offset": off(5),
    }


def test_metadata_headers_full() -> None:
    assert make_state(ttl=3600, closed=True).metadata_headers() == {
        "Content-Type": OCTET,
        "Stream-Next-Offset": off(0),
        "Stream-TTL": "3600",
        "Stream-Closed": "true",
    }
    expires = make_state(expires_at=1_704_067_200.5).metadata_headers()
    assert expires["Stream-Expires-At"] == "2024-01-01T00:00:00.500Z"
    assert "Stream-TTL" not in expires and "Stream-Closed" not in expires


# ---- appends ----------------------------------------------------------------------------


def test_plain_append() -> None:
    state = make_state()
    planned = state.plan_append(body(b"abc"), NOW)
    assert planned == AppendRecord(NOW, b"abc", None, None, False)
    assert state.tail == 0, "planning changes nothing"
    state.apply(planned, 1)
    reply = state.appended(planned)
    assert reply == Reply(204, {"Stream-Next-Offset": off(3)})


def test_appends_accumulate() -> None:
    state, log = make_state(), Log()
    for chunk in (b"ab", b"cde", b"f"):
        commit(state, body(chunk), log)
    assert state.tail == 6
    assert log.read(state.slices(0, state.tail, 100)[0]) == b"abcdef"


def test_append_with_body_needs_a_content_type() -> None:
    rejects(lambda: make_state().plan_append(body(content_type=None), NOW), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/octet"])
def test_append_content_type_must_match(content_type: str) -> None:
    state = make_state()
    rejects(lambda: state.plan_append(body(content_type=content_type), NOW), 409, "CONTENT_TYPE")
    assert state.tail == 0


@pytest.mark.parametrize(
    "content_type", ["APPLICATION/OCTET-STREAM", "application/octet-stream; x=y", OCTET + " "]
)
def test_append_content_type_compares_the_media_type(content_type: str) -> None:
    assert commit(make_state(), body(content_type=content_type)).status == 204


@pytest.mark.parametrize("content_type", [None, "text/plain", OCTET])
def test_close_only_ignores_content_type(content_type: str | None) -> None:
    state = make_state(data=b"abc")
    reply = commit(state, body(b"", close=True, content_type=content_type))
    assert reply == Reply(204, {"Stream-Next-Offset": off(3), "Stream-Closed": "true"})
    assert state.closed and state.tail == 3


def test_append_and_close_is_one_record() -> None:
    state = make_state()
    planned = state.plan_append(body(b"last", close=True), NOW)
    assert isinstance(planned, AppendRecord) and planned.close and planned.data == b"last"
    state.apply(planned, 1)
    assert state.appended(planned) == Reply(
        204, {"Stream-Next-Offset": off(4), "Stream-Closed": "true"}
    )


def test_json_append_stores_flattened_messages() -> None:
    state = make_state(JSON)
    planned = state.plan_append(body(b'[{"a": 1}, 2, [3]]', content_type=JSON), NOW)
    assert isinstance(planned, AppendRecord)
    assert planned.data == b'{"a":1},2,[3],'
    state.apply(planned, 1)
    assert state.tail == 14


@pytest.mark.parametrize(("data", "code"), [(b"[]", "EMPTY_ARRAY"), (b"{", "INVALID_JSON")])
def test_json_append_rejects_empty_and_invalid(data: bytes, code: str) -> None:
    state = make_state(JSON)
    rejects(lambda: state.plan_append(body(data, content_type=JSON), NOW), 400, code)


def test_json_close_only_has_no_body_to_validate() -> None:
    state = make_state(JSON)
    assert commit(state, body(b"", close=True, content_type=None)).status == 204
    assert state.closed


def test_encode_body() -> None:
    assert encode_body(OCTET, b"[]", creating=False) == b"[]"
    assert encode_body(JSON, b"", creating=False) == b""
    assert encode_body(JSON, b"[]", creating=True) == b""
    assert encode_body(JSON, b"[1, 23]", creating=False) == b"1,23,"
    assert encode_body(JSON, b"[1, 23]", creating=False, flattened=b"1,23,") == b"1,23,"
    rejects(lambda: encode_body(JSON, b"[]", creating=False), 400, "EMPTY_ARRAY")
    rejects(lambda: encode_body(JSON, b"[]", creating=False, flattened=b""), 400, "EMPTY_ARRAY")


# ---- closed streams ---------------------------------------------------------------------


def closed_state() -> StreamState:
    state = make_state(data=b"abcd")
    commit(state, body(b"", close=True))
    return state


CLOSED_HEADERS = {"Stream-Closed": "true", "Stream-Next-Offset": off(4)}


@pytest.mark.parametrize(
    "request_",
    [
        body(b"more"),
        body(b"more", close=True),
        body(b"more", content_type="text/plain"),  # closed outranks content type
        body(b"more", content_type=None),  # ... and a missing content type
        body(b"more", stream_seq="0"),
        by("p", 0, 0),
        by("p", 0, 5),  # closed outranks a producer gap
    ],
)
def test_appending_to_a_closed_stream_is_409_with_closure_headers(
    request_: AppendRequest,
) -> None:
    state = closed_state()
    error = rejects(lambda: state.plan_append(request_, NOW), 409, "STREAM_CLOSED")
    assert dict(error.headers) == CLOSED_HEADERS
    assert state.tail == 4


def test_a_stream_created_closed_refuses_appends() -> None:
    state = make_state(data=b"abcd", closed=True)
    error = rejects(lambda: state.plan_append(body(), NOW), 409, "STREAM_CLOSED")
    assert dict(error.headers) == CLOSED_HEADERS


@pytest.mark.parametrize(
    "request_",
    [
        body(b"", close=True),
        body(b"", close=True, content_type="text/plain"),
        by("someone", 3, 9, b"", close=True),
    ],
)
def test_closing_a_closed_stream_again_is_204(request_: AppendRequest) -> None:
    state = closed_state()
    reply = state.plan_append(request_, NOW)
    assert isinstance(reply, Reply)
    assert reply.status == 204
    assert reply.headers["Stream-Closed"] == "true"
    assert reply.headers["Stream-Next-Offset"] == off(4)
    assert "Producer-Seq" not in reply.headers


def producer_closed_state() -> StreamState:
    state = make_state()
    commit(state, by("p", 1, 0, b"ab"))
    reply = commit(state, by("p", 1, 1, b"cd", close=True))
    assert reply == Reply(
        200,
        {
            "Stream-Next-Offset": off(4),
            "Stream-Closed": "true",
            "Producer-Epoch": "1",
            "Producer-Seq": "1",
        },
    )
    assert state.closed_by == Producer("p", 1, 1)
    return state


def test_retrying_the_closing_append_is_a_duplicate() -> None:
    state = producer_closed_state()
    reply = state.plan_append(by("p", 1, 1, b"cd", close=True), NOW)
    assert reply == Reply(
        204,
        {
            "Stream-Next-Offset": off(4),
            "Stream-Closed": "true",
            "Producer-Epoch": "1",
            "Producer-Seq": "1",
        },
    )


@pytest.mark.parametrize(
    "request_",
    [
        by("p", 1, 2, b"ef"),
        by("p", 1, 0, b"ab"),  # an earlier append of the closer, retried after closure
        by("p", 2, 0, b"ef"),
        by("q", 1, 1, b"cd", close=True),
    ],
)
def test_other_producer_appends_to_a_closed_stream_are_409(request_: AppendRequest) -> None:
    state = producer_closed_state()
    error = rejects(lambda: state.plan_append(request_, NOW), 409, "STREAM_CLOSED")
    assert dict(error.headers) == CLOSED_HEADERS


def test_closing_close_only_producer_gets_producer_headers() -> None:
    state = make_state()
    reply = commit(state, by("p", 0, 0, b"", close=True))
    assert reply == Reply(
        204,
        {
            "Stream-Next-Offset": off(0),
            "Stream-Closed": "true",
            "Producer-Epoch": "0",
            "Producer-Seq": "0",
        },
    )
    assert state.producers == {"p": (0, 0)}


@pytest.mark.parametrize("closed", [False, True])
def test_soft_deleted_streams_are_gone_for_appends(closed: bool) -> None:
    state = make_state(closed=closed)
    state.apply(SoftDeleteRecord(NOW), 1)
    rejects(lambda: state.plan_append(body(), NOW), 410, "STREAM_GONE")
    rejects(lambda: state.plan_append(body(b"", close=True), NOW), 410)


# ---- idempotent producers ---------------------------------------------------------------


def test_first_producer_append_is_200_with_producer_headers() -> None:
    state = make_state()
    reply = commit(state, by("p", 0, 0, b"abc"))
    assert reply == Reply(
        200, {"Stream-Next-Offset": off(3), "Producer-Epoch": "0", "Producer-Seq": "0"}
    )
    assert state.producers == {"p": (0, 0)}


def test_a_new_producer_may_start_at_any_epoch() -> None:
    state = make_state()
    assert commit(state, by("p", 7, 0)).headers["Producer-Epoch"] == "7"
    assert state.producers == {"p": (7, 0)}


def test_a_new_producer_must_start_at_seq_zero() -> None:
    state = make_state()
    error = rejects(lambda: state.plan_append(by("p", 0, 3), NOW), 409, "SEQUENCE_GAP")
    assert error.headers["Producer-Expected-Seq"] == "0"
    assert error.headers["Producer-Received-Seq"] == "3"
    assert state.producers == {}


def test_sequences_advance_by_one() -> None:
    state = make_state()
    for seq in range(4):
        reply = commit(state, by("p", 0, seq))
        assert reply.status == 200
        assert reply.headers["Producer-Seq"] == str(seq)
    assert state.producers == {"p": (0, 3)}
    assert state.tail == 4


@pytest.mark.parametrize("seq", [0, 1, 2])
def test_duplicates_are_204_and_report_the_highest_seq(seq: int) -> None:
    state = make_state()
    for s in range(3):
        commit(state, by("p", 4, s))
    reply = state.plan_append(by("p", 4, seq, b"different body, same seq"), NOW)
    assert reply == Reply(
        204, {"Stream-Next-Offset": off(3), "Producer-Epoch": "4", "Producer-Seq": "2"}
    )
    assert state.tail == 3
    assert state.producers == {"p": (4, 2)}


def test_a_sequence_gap_is_409_with_expected_and_received() -> None:
    state = make_state()
    commit(state, by("p", 0, 0))
    commit(state, by("p", 0, 1))
    error = rejects(lambda: state.plan_append(by("p", 0, 5), NOW), 409, "SEQUENCE_GAP")
    assert dict(error.headers) == {"Producer-Expected-Seq": "2", "Producer-Received-Seq": "5"}
    assert state.producers == {"p": (0, 1)}


def test_a_stale_epoch_is_403_with_the_current_epoch() -> None:
    state = make_state()
    commit(state, by("p", 3, 0))
    for seq in (0, 1, 9):
        error = rejects(partial(state.plan_append, by("p", 2, seq), NOW), 403, "STALE_EPOCH")
        assert dict(error.headers) == {"Producer-Epoch": "3"}


def test_a_new_epoch_starts_at_seq_zero_and_fences_the_old_one() -> None:
    state = make_state()
    commit(state, by("p", 0, 0))
    commit(state, by("p", 0, 1))
    rejects(lambda: state.plan_append(by("p", 1, 1), NOW), 400)
    reply = commit(state, by("p", 1, 0))
    assert (reply.status, reply.headers["Producer-Epoch"], reply.headers["Producer-Seq"]) == (
        200,
        "1",
        "0",
    )
    assert state.producers == {"p": (1, 0)}
    rejects(lambda: state.plan_append(by("p", 0, 2), NOW), 403, "STALE_EPOCH")
    assert commit(state, by("p", 1, 1)).status == 200
    assert commit(state, by("p", 5, 0)).status == 200  # epochs may jump


def test_producers_are_independent() -> None:
    state = make_state()
    commit(state, by("a", 0, 0))
    commit(state, by("a", 0, 1))
    assert commit(state, by("b", 0, 0)).status == 200
    assert state.plan_append(by("b", 0, 0), NOW) == Reply(
        204, {"Stream-Next-Offset": off(3), "Producer-Epoch": "0", "Producer-Seq": "0"}
    )
    assert state.producers == {"a": (0, 1), "b": (0, 0)}


def test_a_json_producer_append_is_200() -> None:
    state = make_state(JSON)
    assert commit(state, by("p", 0, 0, b"[1,2]", content_type=JSON)).status == 200


def test_a_restoring_append_sets_the_producer_table_as_given() -> None:
    """`streams import`: the exported table comes back one empty record per producer (no
    sequence from 0), then the stream dedupes and fences as the exported one did."""
    state = make_state()
    commit(state, body(b"data"))
    restored = AppendRequest(None, b"", producer=Producer("p", 3, 41), restore=True)
    assert commit(state, restored).status == 204
    commit(state, AppendRequest(None, b"", producer=Producer("q", 0, 7), restore=True))
    last = AppendRequest(None, b"", True, Producer("q", 0, 8), "seq-9", restore=True)
    commit(state, last)
    assert state.producers == {"p": (3, 41), "q": (0, 8)}
    assert (state.tail, state.records, state.stream_seq) == (4, 1, "seq-9")
    assert (state.closed, state.closed_by) == (True, Producer("q", 0, 8))
    duplicate = state.plan_append(by("q", 0, 8, b""), NOW)
    assert isinstance(duplicate, Reply) and duplicate.status == 204  # the closer's retry
    other = make_state()
    commit(other, AppendRequest(None, b"", producer=Producer("p", 3, 41), restore=True))
    assert state_of(other.plan_append(by("p", 3, 41), NOW)) == 204  # a retried last append
    rejects(lambda: other.plan_append(by("p", 2, 0), NOW), 403, "STALE_EPOCH")
    rejects(lambda: other.plan_append(by("p", 3, 43), NOW), 409, "SEQUENCE_GAP")
    assert commit(other, by("p", 3, 42)).status == 200
    # without `restore`, the same stamp is a gap
    rejects(lambda: make_state().plan_append(by("p", 3, 41), NOW), 409, "SEQUENCE_GAP")


def state_of(planned: AppendRecord | Reply) -> int:
    assert isinstance(planned, Reply), planned
    return planned.status


def test_content_type_is_checked_before_producer_state() -> None:
    state = make_state()
    commit(state, by("p", 0, 0))
    rejects(lambda: state.plan_append(by("p", 0, 0, content_type="text/plain"), NOW), 409)


def spec_outcome(model: dict[str, tuple[int, int]], pid: str, epoch: int, seq: int) -> int:
    """PROTOCOL 5.2.1's validation pseudo-code (a producer never seen must start at 0)."""
    known = model.get(pid)
    if known is None:
        if seq != 0:
            return 409
        model[pid] = (epoch, 0)
        return 200
    current, last = known
    if epoch < current:
        return 403
    if epoch > current:
        if seq != 0:
            return 400
        model[pid] = (epoch, 0)
        return 200
    if seq <= last:
        return 204
    if seq == last + 1:
        model[pid] = (epoch, seq)
        return 200
    return 409


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.integers(min_value=0, max_value=2),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=40,
    )
)
def test_producer_rules_follow_the_protocol(steps: list[tuple[str, int, int]]) -> None:
    state = make_state()
    model: dict[str, tuple[int, int]] = {}
    accepted = 0
    for pid, epoch, seq in steps:
        expected = spec_outcome(model, pid, epoch, seq)
        assert outcome(state, by(pid, epoch, seq)) == expected, (pid, epoch, seq)
        accepted += expected == 200
    assert state.producers == model
    assert state.tail == accepted


# ---- Stream-Seq -------------------------------------------------------------------------


def test_stream_seq_must_strictly_increase() -> None:
    state = make_state()
    commit(state, body(stream_seq="002"))
    assert state.stream_seq == "002"
    for stale in ("002", "001", "0", ""):
        rejects(partial(state.plan_append, body(stream_seq=stale), NOW), 409, "SEQUENCE_REGRESSION")
    commit(state, body(stream_seq="003"))
    assert state.stream_seq == "003"


def test_stream_seq_compares_bytewise_not_numerically() -> None:
    state = make_state()
    commit(state, body(stream_seq="9"))
    rejects(lambda: state.plan_append(body(stream_seq="10"), NOW), 409, "SEQUENCE_REGRESSION")
    commit(state, body(stream_seq="a"))
    rejects(lambda: state.plan_append(body(stream_seq="B"), NOW), 409, "SEQUENCE_REGRESSION")
    commit(state, body(stream_seq="aa"))
    assert state.stream_seq == "aa"


def test_appends_without_stream_seq_neither_check_nor_reset_it() -> None:
    state = make_state()
    commit(state, body(stream_seq="5"))
    commit(state, body())
    assert state.stream_seq == "5"
    rejects(lambda: state.plan_append(body(stream_seq="4"), NOW), 409)


def test_a_rejected_append_does_not_move_stream_seq() -> None:
    state = make_state()
    commit(state, body(stream_seq="5"))
    rejects(lambda: state.plan_append(body(stream_seq="9", content_type="text/plain"), NOW), 409)
    commit(state, body(stream_seq="6"))


def test_content_type_mismatch_outranks_sequence_regression() -> None:
    state = make_state()
    commit(state, body(stream_seq="5"))
    rejects(
        lambda: state.plan_append(body(stream_seq="1", content_type="text/plain"), NOW),
        409,
        "CONTENT_TYPE",
    )


def test_a_producer_retry_is_a_duplicate_despite_its_repeated_stream_seq() -> None:
    state = make_state()
    commit(state, by("p", 0, 0, stream_seq="7"))
    reply = state.plan_append(by("p", 0, 0, stream_seq="7"), NOW)
    assert isinstance(reply, Reply) and reply.status == 204


# ---- recovery is the same fold ----------------------------------------------------------

requests = st.builds(
    AppendRequest,
    content_type=st.just(OCTET),
    body=st.binary(max_size=6),
    close=st.sampled_from([False] * 7 + [True]),
    producer=st.none()
    | st.builds(
        Producer,
        st.sampled_from(["a", "b"]),
        st.integers(min_value=0, max_value=1),
        st.integers(min_value=0, max_value=2),
    ),
    stream_seq=st.none() | st.sampled_from(["1", "2", "3", "4"]),
)


@given(st.lists(requests, max_size=25), st.booleans(), st.booleans())
def test_replaying_the_log_rebuilds_the_live_state(
    steps: list[AppendRequest], close_at_end: bool, soft_delete: bool
) -> None:
    log = Log()
    create = CreateRecord("s", StreamConfig(OCTET, 60), "inc", T0, False, b"init")
    live = StreamState.created(create, log.stage(create))
    final = [body(b"", close=True)] if close_at_end else []
    for request in [*steps, *final]:
        if not request.body and not request.close:
            continue  # the HTTP layer refuses these before they reach the machine
        try:
            planned = live.plan_append(request, NOW)
        except ProtocolError:
            continue
        if isinstance(planned, AppendRecord):
            live.apply(planned, log.stage(planned))
    if soft_delete:
        tombstone = SoftDeleteRecord(NOW)
        live.apply(tombstone, log.stage(tombstone))

    (first, at), *rest = [(records.decode(*records.encode(r)), at) for r, at in log.records]
    assert isinstance(first, CreateRecord)
    recovered = StreamState.created(first, at)
    for record, at in rest:
        recovered.apply(record, at)
    assert recovered == live
    assert log.read(live.slices(0, live.tail, 10**6)[0]) == b"".join(
        r.data for r, _ in log.records if not isinstance(r, SoftDeleteRecord)
    )


# ---- recreate ---------------------------------------------------------------------------


def create_request(
    content_type: str = OCTET,
    *,
    ttl: int | None = None,
    expires_at: float | None = None,
    closed: bool = False,
    fork_source: str | None = None,
    fork_offset: int = 0,
    requested_fork_offset: int | None = None,
) -> CreateRequest:
    config = StreamConfig(content_type, ttl, expires_at, fork_source, fork_offset)
    return CreateRequest(config, closed, fork_offset=requested_fork_offset)


@pytest.mark.parametrize(
    "request_",
    [
        create_request(ttl=60),
        create_request("Application/Octet-Stream; charset=x", ttl=60),
    ],
)
def test_recreating_with_the_same_config_is_200(request_: CreateRequest) -> None:
    state = make_state(data=b"abc", ttl=60)
    assert state.matches(request_)
    assert state.recreate(request_) == Reply(200, state.metadata_headers())


@pytest.mark.parametrize(
    "request_",
    [
        create_request("text/plain", ttl=60),
        create_request(),
        create_request(ttl=61),
        create_request(expires_at=T0 + 60),
        create_request(ttl=60, closed=True),
        create_request(ttl=60, fork_source="src"),
    ],
)
def test_recreating_with_another_config_is_409(request_: CreateRequest) -> None:
    state = make_state(ttl=60)
    assert not state.matches(request_)
    rejects(lambda: state.recreate(request_), 409)


def test_recreating_compares_expires_at() -> None:
    state = make_state(expires_at=1.9e9)
    assert state.recreate(create_request(expires_at=1.9e9)).status == 200
    rejects(lambda: state.recreate(create_request(expires_at=1.9e9 + 1)), 409)
    rejects(lambda: state.recreate(create_request(ttl=60)), 409)


def test_recreating_a_closed_stream_needs_stream_closed() -> None:
    state = closed_state()
    rejects(lambda: state.recreate(create_request()), 409)
    reply = state.recreate(create_request(closed=True))
    assert reply.status == 200
    assert reply.headers["Stream-Closed"] == "true"


def test_recreating_a_fork_compares_the_offset_only_when_one_was_given() -> None:
    state = make_state(fork_source="src", fork_offset=10)
    same = create_request(fork_source="src", fork_offset=10, requested_fork_offset=10)
    assert state.recreate(same).status == 200
    # no Stream-Fork-Offset: the offset defaults to the source's (moving) tail, so it is moot
    moved = create_request(fork_source="src", fork_offset=25)
    assert state.recreate(moved).status == 200
    other = create_request(fork_source="src", fork_offset=25, requested_fork_offset=25)
    rejects(lambda: state.recreate(other), 409)
    rejects(lambda: state.recreate(create_request(fork_source="other", fork_offset=10)), 409)


def test_a_plain_put_to_a_fork_matches_its_stream_config() -> None:
    state = make_state(ttl=60, fork_source="src", fork_offset=10)
    assert state.recreate(create_request(ttl=60)).status == 200
    rejects(lambda: state.recreate(create_request()), 409)
    rejects(lambda: state.recreate(create_request("text/plain", ttl=60)), 409)
    rejects(lambda: state.recreate(create_request(ttl=60, closed=True)), 409)


def test_a_fork_put_to_a_plain_stream_is_409() -> None:
    state = make_state()
    rejects(lambda: state.recreate(create_request(fork_source="src")), 409)


def test_recreating_a_soft_deleted_stream_is_409() -> None:
    state = make_state()
    state.apply(SoftDeleteRecord(NOW), 1)
    rejects(lambda: state.recreate(create_request()), 409)


# ---- reads: slices ----------------------------------------------------------------------


def build(
    chunks: Sequence[bytes], content_type: str = OCTET, fork_offset: int = 0
) -> tuple[StreamState, Log]:
    log = Log()
    source = "src" if fork_offset else None
    create = CreateRecord("s", StreamConfig(content_type, None, None, source, fork_offset), "i", T0)
    state = StreamState.created(create, log.stage(create))
    for chunk in chunks:
        record = AppendRecord(NOW, chunk)
        state.apply(record, log.stage(record))
    return state, log


def test_slices_cover_whole_records() -> None:
    state, log = build([b"0123456789", b"abcde", b"ABCDEFGHIJKLMNOPQRST"])
    slices, end = state.slices(0, state.tail, 1000)
    assert slices == [Slice(1000 * 2, 0, 10), Slice(1000 * 3, 0, 5), Slice(1000 * 4, 0, 20)]
    assert end == 35
    assert log.read(slices) == b"0123456789abcdeABCDEFGHIJKLMNOPQRST"


@pytest.mark.parametrize(
    ("start", "bound", "max_bytes", "data", "end"),
    [
        (3, 35, 1000, b"3456789abcdeABCDEFGHIJKLMNOPQRST", 35),  # mid-record start
        (0, 35, 10, b"0123456789", 10),  # stops once the limit is reached
        (0, 35, 11, b"0123456789abcde", 15),  # never splits a record for the limit
        (0, 35, 1, b"0123456789", 10),  # at least one record
        (12, 35, 1, b"cde", 15),
        (12, 35, 4, b"cdeABCDEFGHIJKLMNOPQRST", 35),
        (10, 35, 5, b"abcde", 15),
        (0, 12, 1000, b"0123456789ab", 12),  # bound cuts a record
        (0, 10, 1000, b"0123456789", 10),
        (11, 12, 1000, b"b", 12),
        (0, 100, 1000, b"0123456789abcdeABCDEFGHIJKLMNOPQRST", 35),  # bound past the tail
        (35, 35, 1000, b"", 35),  # at the tail
        (20, 12, 1000, b"", 20),  # bound before start
        (34, 35, 1000, b"T", 35),
    ],
)
def test_slices(start: int, bound: int, max_bytes: int, data: bytes, end: int) -> None:
    state, log = build([b"0123456789", b"abcde", b"ABCDEFGHIJKLMNOPQRST"])
    slices, stop = state.slices(start, bound, max_bytes)
    assert (log.read(slices), stop) == (data, end)


def test_slices_of_an_empty_stream() -> None:
    state, _ = build([])
    assert state.slices(0, 0, 100) == ([], 0)


def test_slices_of_a_fork_start_at_its_offset() -> None:
    state, log = build([b"abc", b"defg"], fork_offset=100)
    assert state.tail == 107
    assert state.slices(100, 107, 1000)[1] == 107
    assert log.read(state.slices(100, 107, 1000)[0]) == b"abcdefg"
    slices, end = state.slices(104, 107, 1000)
    assert slices == [Slice(3000, 1, 3)]
    assert end == 107
    assert state.slices(107, 107, 1000) == ([], 107)


@given(
    st.lists(st.binary(min_size=1, max_size=12), max_size=8),
    st.integers(min_value=0, max_value=30),
    st.data(),
)
def test_slices_properties(chunks: list[bytes], fork_offset: int, data: st.DataObject) -> None:
    state, log = build(chunks, fork_offset=fork_offset)
    own = b"".join(chunks)
    tail = fork_offset + len(own)
    assert state.tail == tail
    start = data.draw(st.integers(min_value=fork_offset, max_value=tail), label="start")
    bound = data.draw(st.integers(min_value=fork_offset, max_value=tail + 5), label="bound")
    max_bytes = data.draw(st.integers(min_value=1, max_value=40), label="max_bytes")
    limit = min(tail, bound)

    slices, end = state.slices(start, bound, max_bytes)
    assert state.read_end(start, bound, max_bytes) == end  # the O(log n) shortcut agrees

    if start >= limit:
        assert (slices, end) == ([], start)
        return
    assert start < end <= limit
    assert log.read(slices) == own[start - fork_offset : end - fork_offset]
    assert all(s.length > 0 for s in slices)
    assert all(s.skip == 0 for s in slices[1:]), "only the first slice starts mid-record"
    for i, s in enumerate(slices):
        whole = s.skip + s.length == len(log.data[s.locator])
        assert whole or (i == len(slices) - 1 and end == limit), "only the bound cuts a record"
    lengths = [s.length for s in slices]
    assert sum(lengths[:-1]) < max_bytes, "no record starts once the limit is reached"
    if end < limit:
        assert sum(lengths) >= max_bytes, "a read ends early only at the limit"


# ---- reads: where a read starts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "placed"),
    [
        (Sentinel.START, 0),
        (Sentinel.NOW, 35),
        (0, 0),
        (3, 0),  # inside a record: that whole record (as the reference server reads)
        (9, 0),
        (10, 10),  # a record boundary: itself
        (14, 10),
        (15, 15),
        (34, 15),
        (35, 35),  # the tail
        (36, 36),  # past the tail: nothing yet, and that position is the next offset
        (10**6, 10**6),
    ],
)
def test_reads_start_at_the_record_holding_the_position(start: int | Sentinel, placed: int) -> None:
    state, _ = build([b"0123456789", b"abcde", b"ABCDEFGHIJKLMNOPQRST"])
    assert state.read_start(start) == placed


def test_an_exact_read_starts_inside_a_record() -> None:
    """The later pieces of one read are fetched by position."""
    state, _ = build([b"0123456789", b"abcde"])
    assert [state.read_start(p, exact=True) for p in (3, 10, 12, 15, 20)] == [3, 10, 12, 15, 20]


def test_a_fork_places_reads_of_its_own_records_and_leaves_inherited_ones_to_the_source() -> None:
    state, _ = build([b"abc", b"defg"], fork_offset=100)
    assert [state.read_start(p) for p in (0, 50, 99)] == [0, 50, 99]  # the source's to place
    own = [state.read_start(p) for p in (100, 102, 103, 106, 107, 200)]
    assert own == [100, 100, 103, 103, 107, 200]


def test_a_json_record_of_many_messages_is_read_whole() -> None:
    # messages 1, 22, 333 in one record, 4444 in the next; boundaries 0, 2, 5 | 9 | 14
    state, log = build([b"1,22,333,", b"4444,"], JSON)
    for position in (2, 5, 8):
        start = state.read_start(position)
        assert start == 0
        assert state.json_body(log.read(state.slices(start, state.tail, 100)[0])) == (
            b"[1,22,333,4444]"
        )


def test_reads_below_the_base_of_a_compacted_stream_are_gone_past_the_tail_are_not() -> None:
    state, _ = build([b"0123456789", b"abcde"])
    state.rebase(10, (0, 0), 0)
    rejects(lambda: state.read_start(9), 410, "STREAM_COMPACTED")
    assert [state.read_start(p) for p in (10, 12, 15, 16)] == [10, 10, 15, 16]


@given(st.lists(st.binary(min_size=1, max_size=6), max_size=6), st.integers(0, 40))
def test_a_read_returns_every_record_that_ends_after_its_position(
    chunks: list[bytes], position: int
) -> None:
    state, log = build(chunks)
    start = state.read_start(position)
    data = log.read(state.slices(start, state.tail, 1 << 20)[0])
    ends = list(accumulate(len(c) for c in chunks))
    after = [c for c, end in zip(chunks, ends, strict=True) if end > position]
    assert data == b"".join(after)
    assert start == (state.tail - len(data) if after else position)


# ---- sub-offsets: advance ---------------------------------------------------------------


def test_advance_binary_counts_bytes() -> None:
    state, _ = build([b"abcde", b"fgh"])
    assert state.advance(0, 0, 8) == (0, 0)
    assert state.advance(0, 3, 8) == (3, 0)
    assert state.advance(2, 5, 8) == (7, 0)
    assert state.advance(6, 2, 8) == (8, 0)
    assert state.advance(6, 5, 8) == (8, 3)  # runs out at the tail
    assert state.advance(1, 5, 4) == (4, 2)  # stops at the bound
    assert state.advance(1, 5, 100) == (6, 0)  # a bound past the tail is the tail


def test_advance_binary_in_a_fork() -> None:
    state, _ = build([b"abcde"], fork_offset=10)
    assert state.advance(10, 3, 15) == (13, 0)
    assert state.advance(12, 9, 15) == (15, 6)


def json_advance(
    state: StreamState, log: Log, position: int, count: int, bound: int
) -> tuple[int, int]:
    """What the actor does for a JSON stream: count messages in whole records' data."""
    start = state.record_start(position)
    data = log.read(state.slices(start, state.tail, 1 << 20)[0])
    return jsonmode.advance(data, start, position, count, min(bound, state.tail))


def test_advance_json_counts_messages() -> None:
    # messages: 1, 22, 333 | 4444 ; boundaries 0, 2, 5, 9, 14
    state, log = build([b"1,22,333,", b"4444,"], JSON)
    assert state.tail == 14
    assert json_advance(state, log, 0, 0, 14) == (0, 0)
    assert json_advance(state, log, 0, 1, 14) == (2, 0)
    assert json_advance(state, log, 0, 3, 14) == (9, 0)
    assert json_advance(state, log, 2, 2, 14) == (9, 0)
    assert json_advance(state, log, 5, 2, 14) == (14, 0)  # across records
    assert json_advance(state, log, 9, 1, 14) == (14, 0)
    assert json_advance(state, log, 0, 6, 14) == (14, 2)  # runs out
    assert json_advance(state, log, 14, 1, 14) == (14, 1)
    assert json_advance(state, log, 0, 4, 5) == (5, 2)  # stops at the bound


def test_advance_json_in_a_fork() -> None:
    state, log = build([b'{"a":1},', b"[],7,"], JSON, fork_offset=40)
    assert json_advance(state, log, 40, 1, state.tail) == (48, 0)
    assert json_advance(state, log, 40, 2, state.tail) == (51, 0)
    assert json_advance(state, log, 48, 2, state.tail) == (53, 0)
    assert json_advance(state, log, 40, 4, state.tail) == (53, 1)


def test_advance_json_of_an_empty_stream() -> None:
    state, log = build([], JSON)
    assert json_advance(state, log, 0, 3, 0) == (0, 3)


@given(
    st.lists(st.lists(st.integers(min_value=2, max_value=6), min_size=1, max_size=4), max_size=5),
    st.integers(min_value=0, max_value=20),
    st.data(),
)
def test_advance_json_property(
    batches: list[list[int]], fork_offset: int, data: st.DataObject
) -> None:
    chunks = [b"".join(b"9" * (size - 1) + b"," for size in batch) for batch in batches]
    state, log = build(chunks, JSON, fork_offset)
    boundaries = [fork_offset]
    for size in (size for batch in batches for size in batch):
        boundaries.append(boundaries[-1] + size)
    total = len(boundaries) - 1
    k = data.draw(st.integers(min_value=0, max_value=total), label="from message")
    b = data.draw(st.integers(min_value=k, max_value=total), label="bound message")
    n = data.draw(st.integers(min_value=0, max_value=total + 3), label="count")
    moved = min(n, b - k)
    expected = (boundaries[k + moved], n - moved)
    assert json_advance(state, log, boundaries[k], n, boundaries[b]) == expected


@given(st.lists(st.binary(min_size=1, max_size=8), max_size=5), st.data())
def test_advance_binary_property(chunks: list[bytes], data: st.DataObject) -> None:
    state, _ = build(chunks)
    tail = state.tail
    position = data.draw(st.integers(min_value=0, max_value=tail))
    bound = data.draw(st.integers(min_value=position, max_value=tail + 5))
    count = data.draw(st.integers(min_value=0, max_value=tail + 5))
    moved = min(count, min(bound, tail) - position)
    assert state.advance(position, count, bound) == (position + moved, count - moved)


def test_json_body() -> None:
    json_state, _ = build([b"1,2,"], JSON)
    assert json_state.json_body(b"1,2,") == b"[1,2]"
    assert json.loads(json_state.json_body(b"")) == []
    binary_state, _ = build([b"1,2,"])
    assert binary_state.json_body(b"1,2,") == b"1,2,"
    assert binary_state.json_body(b"") == b""


# ---- expiry -----------------------------------------------------------------------------


def test_no_expiry() -> None:
    state = make_state()
    assert state.deadline() is None
    assert not state.expired(1e18)


def test_ttl_is_a_sliding_window() -> None:
    state = make_state(ttl=60)
    assert state.deadline() == T0 + 60
    assert not state.expired(T0 + 59.999)
    assert state.expired(T0 + 60)
    state.touch(T0 + 30)
    assert state.last_access == T0 + 30
    assert state.deadline() == T0 + 90
    assert not state.expired(T0 + 60)
    assert state.expired(T0 + 90)


def test_touch_never_moves_the_window_back() -> None:
    state = make_state(ttl=60)
    state.touch(T0 + 30)
    state.touch(T0 + 10)
    assert state.last_access == T0 + 30
    assert state.deadline() == T0 + 90


def test_zero_ttl_expires_at_once() -> None:
    state = make_state(ttl=0)
    assert state.deadline() == T0
    assert state.expired(T0)


def test_expires_at_is_fixed() -> None:
    state = make_state(expires_at=T0 + 500)
    assert state.deadline() == T0 + 500
    state.touch(T0 + 400)
    assert state.deadline() == T0 + 500
    assert not state.expired(T0 + 499.9)
    assert state.expired(T0 + 500)


def test_expires_at_wins_over_ttl() -> None:
    state = make_state(ttl=10, expires_at=T0 + 500)
    assert state.deadline() == T0 + 500


def test_delete_action_keeps_what_forks_read() -> None:
    state = make_state()
    assert state.delete_action(referenced=False) == "remove"
    assert state.delete_action(referenced=True) == "soft-delete"
    state.apply(SoftDeleteRecord(NOW), 1)
    assert state.delete_action(referenced=True) == "keep"
    assert state.delete_action(referenced=False) == "remove"


# ---- the size limit of one stream (DS_LIMITS__MAX_STREAM_BYTES) ------------------------------


def test_an_append_past_the_stream_limit_is_413_and_changes_nothing() -> None:
    state = make_state(data=b"1234")
    assert outcome(state, AppendRequest(OCTET, b"56", max_stream_bytes=6)) == 204
    before = (state.tail, state.records, dict(state.producers))
    producer = Producer("p", 0, 0)
    request = AppendRequest(OCTET, b"7", producer=producer, close=True, max_stream_bytes=6)
    error = rejects(lambda: state.plan_append(request, NOW), 413, "STREAM_TOO_LARGE")
    assert "limit of 6" in error.detail
    assert (state.tail, state.records, dict(state.producers)) == before
    assert not state.closed
    assert outcome(state, AppendRequest(None, b"", close=True, max_stream_bytes=6)) == 204


def test_json_appends_count_their_stored_bytes() -> None:
    state = make_state(JSON)
    assert outcome(state, AppendRequest(JSON, b"[1, 2]", max_stream_bytes=4)) == 204  # "1,2,"
    rejects(lambda: state.plan_append(AppendRequest(JSON, b"3", max_stream_bytes=4), NOW), 413)


def test_a_fork_holds_only_its_own_data() -> None:
    fork = make_state(fork_source="src", fork_offset=100, data=b"ab")
    assert fork.held == 2
    assert outcome(fork, AppendRequest(OCTET, b"cd", max_stream_bytes=4)) == 204
    rejects(lambda: fork.plan_append(AppendRequest(OCTET, b"e", max_stream_bytes=4), NOW), 413)


def test_no_limit_by_default() -> None:
    state = make_state()
    assert outcome(state, AppendRequest(OCTET, b"x" * 10_000)) == 204
    check_stream_size(10**12, 10**12, None)
