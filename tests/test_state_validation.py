"""Opt-in append validation: every refusal with its status, index and reason, the batch's own
earlier messages counted, and the view never touched."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from state.validation import MODES, Rejection, check
from state.view import View
from tests.test_state_view import RESET, folded, put


def existing() -> View:
    """A view holding todo/a = {"n": 1, "tags": [1, true]} and todo/n = null."""
    return folded([put("insert", "a", {"n": 1, "tags": [1, True]}), put("insert", "n", None)])


def test_a_valid_batch_passes_in_both_modes() -> None:
    batch = [
        put("insert", "b", 1),
        put("update", "a", 2, old_value={"tags": [1, True], "n": 1}),  # key order is free
        put("upsert", "c", 3),
        put("upsert", "a", 4),
        put("delete", "n"),
        {"headers": {"control": "snapshot-start"}},
    ]
    assert check(batch, "structural", None) is None
    assert check(batch, "semantic", existing()) is None


@pytest.mark.parametrize("mode", MODES)
def test_structural_refusals_are_400_at_the_first_bad_message(mode: str) -> None:
    batch = [put("insert", "b", 1), {"foo": 1}, 42]
    assert check(batch, mode, existing()) == Rejection(400, 1, "headers must be an object")
    batch = [put("insert", "b", 1), put("upsert", "b", 2), {**put("update", "b", 3), "key": 1}]
    assert check(batch, mode, existing()) == Rejection(400, 2, "key must be a non-empty string")


def test_structural_mode_forgives_what_semantic_refuses() -> None:
    batch = [put("insert", "a", 1), put("update", "zz", 1), put("delete", "zz")]
    assert check(batch, "structural", existing()) is None
    assert check(batch, "structural", None) is None


SEMANTIC: list[tuple[list[Any], Rejection]] = [
    ([put("insert", "a", 1)], Rejection(409, 0, 'insert of existing key ("todo", "a")')),
    (
        [put("insert", "b", 1), put("update", "zz", 1)],
        Rejection(409, 1, 'update of missing key ("todo", "zz")'),
    ),
    ([put("delete", "zz")], Rejection(409, 0, 'delete of missing key ("todo", "zz")')),
    (  # the same key in another type is another entity
        [put("update", "a", 1, type="user")],
        Rejection(409, 0, 'update of missing key ("user", "a")'),
    ),
    (
        [put("update", "a", 2, old_value={"n": 1})],
        Rejection(409, 0, "old_value does not match the current value"),
    ),
    (
        [put("update", "a", 2, old_value={"n": 1, "tags": [1, 1]})],  # true is not 1
        Rejection(409, 0, "old_value does not match the current value"),
    ),
    (
        [put("update", "a", 2, old_value={"n": 1, "tags": [1, 1.0]})],  # true is not 1.0
        Rejection(409, 0, "old_value does not match the current value"),
    ),
    (
        [put("update", "a", 2, old_value={"n": 1.5, "tags": [1, True]})],  # 1.5 is not 1
        Rejection(409, 0, "old_value does not match the current value"),
    ),
    (
        [put("update", "a", 2, old_value={"n": "1", "tags": [1, True]})],  # "1" is not 1
        Rejection(409, 0, "old_value does not match the current value"),
    ),
    (
        [put("update", "n", 2, old_value={})],  # the current value is null
        Rejection(409, 0, "old_value does not match the current value"),
    ),
    (  # in-batch: two inserts of one new key
        [put("insert", "b", 1), put("insert", "b", 2)],
        Rejection(409, 1, 'insert of existing key ("todo", "b")'),
    ),
    (  # in-batch: a reset, then an update of a key the view holds
        [RESET, put("update", "a", 1)],
        Rejection(409, 1, 'update of missing key ("todo", "a")'),
    ),
    (  # in-batch: a reset forgets the batch's own keys too
        [put("insert", "b", 1), RESET, put("update", "b", 2)],
        Rejection(409, 2, 'update of missing key ("todo", "b")'),
    ),
    (  # in-batch: a delete, then an update
        [put("delete", "a"), put("update", "a", 1)],
        Rejection(409, 1, 'update of missing key ("todo", "a")'),
    ),
    (  # in-batch: the old_value an update is checked against is the batch's own
        [put("update", "a", 5), put("update", "a", 6, old_value={"n": 1, "tags": [1, True]})],
        Rejection(409, 1, "old_value does not match the current value"),
    ),
    (
        [put("upsert", "b", None), put("update", "b", 1, old_value=0)],
        Rejection(409, 1, "old_value does not match the current value"),
    ),
]


@pytest.mark.parametrize(("batch", "rejection"), SEMANTIC)
def test_semantic_refusals(batch: list[Any], rejection: Rejection) -> None:
    view = existing()
    before = copy.deepcopy(view)
    assert check(batch, "semantic", view) == rejection
    assert view == before
    assert list(view.entities) == list(before.entities)


ACCEPTED: list[list[Any]] = [
    [put("insert", "b", 1), put("update", "b", 2, old_value=1)],  # insert then update
    [put("delete", "a"), put("insert", "a", 1)],  # delete then insert
    [RESET, put("insert", "a", 1), put("update", "a", 2)],  # reset then insert again
    [put("insert", "b", 1), RESET, put("insert", "b", 2)],
    [put("update", "n", 1, old_value=None)],  # null matches null
    [put("update", "a", 1, old_value={"n": 1, "tags": [1, True]}), put("delete", "a")],
    [put("delete", "a", old_value="anything")],  # a delete's old_value is not compared
    [put("upsert", "a", 1), put("upsert", "zz", 1)],  # upsert is always accepted
    # Numbers compare by value: a JavaScript client reads 1.0 as 1 and cannot write 1.0.
    [
        put("insert", "f", {"x": 1.0, "y": [2.5, 1e2]}),
        put("update", "f", 0, old_value={"x": 1, "y": [2.5, 100]}),
    ],
    [put("update", "a", 1, old_value={"n": 1.0, "tags": [1.0, True]})],
    [],
]


@pytest.mark.parametrize("batch", ACCEPTED)
def test_semantic_acceptances(batch: list[Any]) -> None:
    view = existing()
    before = copy.deepcopy(view)
    assert check(batch, "semantic", view) is None
    assert view == before


def test_semantic_mode_needs_a_view_and_modes_are_known() -> None:
    with pytest.raises(ValueError, match="view"):
        check([put("insert", "b", 1)], "semantic", None)
    with pytest.raises(ValueError, match="mode"):
        check([], "strict", existing())


def test_values_compare_at_any_depth_they_parse_at() -> None:
    """Comparing numbers by value costs no Python recursion (a recursive walk failed at 500)."""
    stored: Any = 1.0
    sent: Any = 1
    for _ in range(800):
        stored, sent = [stored], [sent]
    view = folded([put("insert", "a", stored)])
    assert check([put("update", "a", 2, old_value=sent)], "semantic", view) is None
    assert check([put("update", "a", 2, old_value=[[2]])], "semantic", view) == Rejection(
        409, 0, "old_value does not match the current value"
    )
