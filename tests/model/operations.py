"""The operations the models run on a client, and the programs hypothesis draws from them.

A program is a list of operations on a few keys (three at most, two of them
under one prefix).  :func:`programs` draws them swarm-style: each program
first draws which keys and which kinds of operation it uses, so that most
programs repeat a few kinds on one or two keys, which is what it takes to
reach interleavings several steps deep.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st

import stackquery as sq

KEYS: list[tuple[Any, ...]] = [("a", 1), ("a", 1, "x"), ("b", 1)]
MATCHERS: list[tuple[tuple[Any, ...], bool]] = [
    ((), False),
    (("a",), False),
    (("a", 1), False),
    (("a", 1), True),
    (("b", 1), True),
]
"""(key, exact) arguments of the changes: everything, a prefix of two keys, one key exactly."""

View = tuple[str, Any, str | None]
"""What an observer is told: (status, data, error message)."""
PENDING: View = ("pending", None, None)


def key_name(key: tuple[Any, ...]) -> str:
    return "".join(str(part) for part in key)


def matches(key: tuple[Any, ...], prefix: tuple[Any, ...], exact: bool) -> bool:
    return key == prefix if exact else key[: len(prefix)] == prefix


def view_of(state: sq.QueryState[Any] | None) -> View:
    if state is None:
        return PENDING
    error = None if state.error is None else str(state.error)
    return (state.status.value, state.data, error)


# -- operations -------------------------------------------------------------------------------


@attrs.frozen
class Fetch:
    key: tuple[Any, ...]
    callers: int


@attrs.frozen
class FetchMany:
    """``fetch_queries`` of ``keys`` by one caller (a key may be listed twice)."""

    keys: tuple[tuple[Any, ...], ...]


@attrs.frozen
class CancelCaller:
    index: int


@attrs.frozen
class SetData:
    key: tuple[Any, ...]


@attrs.frozen
class Invalidate:
    prefix: tuple[Any, ...]
    exact: bool
    refetch: bool = True


@attrs.frozen
class RefetchActive:
    """``refetch_queries(prefix, exact=, type="active")``: the observed matches fetch again."""

    prefix: tuple[Any, ...]
    exact: bool


@attrs.frozen
class Prefetch:
    key: tuple[Any, ...]


@attrs.frozen
class Remove:
    prefix: tuple[Any, ...]
    exact: bool


@attrs.frozen
class Reset:
    prefix: tuple[Any, ...]
    exact: bool


@attrs.frozen
class Cancel:
    prefix: tuple[Any, ...]
    exact: bool


@attrs.frozen
class Subscribe:
    key: tuple[Any, ...]
    stream: bool


@attrs.frozen
class Unsubscribe:
    index: int


@attrs.frozen
class Advance:
    seconds: int


@attrs.frozen
class HoldOrigin:
    key: tuple[Any, ...]


@attrs.frozen
class ReleaseOrigin:
    key: tuple[Any, ...]


@attrs.frozen
class FailOrigin:
    key: tuple[Any, ...]
    failing: bool


@attrs.frozen
class HoldL2Reads:
    pass


@attrs.frozen
class ReleaseL2Reads:
    pass


@attrs.frozen
class HoldL2Writes:
    pass


@attrs.frozen
class ReleaseL2Writes:
    pass


Op = Any


def op_strategies(
    keys: list[tuple[Any, ...]],
    l2_gates: bool,
    write_gates: bool = False,
    refetch: bool = False,
    many: bool = False,
) -> dict[str, st.SearchStrategy[Op]]:
    """Each kind of operation on ``keys``; L2 read (and write) gates need a ControlledStorage.

    ``refetch``: ``refetch_queries(type="active")`` too; ``many``: ``fetch_queries``
    too (the client model knows both).
    """
    key = st.sampled_from(keys)
    matcher = st.sampled_from(MATCHERS)
    kinds: dict[str, st.SearchStrategy[Op]] = {
        "fetch": st.builds(Fetch, key, st.integers(1, 3)),
        "cancel_caller": st.builds(CancelCaller, st.integers(0, 7)),
        "set_data": st.builds(SetData, key),
        "invalidate": st.builds(
            lambda m, refetch: Invalidate(*m, refetch=refetch),
            matcher,
            st.sampled_from([True, True, False]),
        ),
        "prefetch": st.builds(Prefetch, key),
        "remove": matcher.map(lambda m: Remove(*m)),
        "reset": matcher.map(lambda m: Reset(*m)),
        "cancel": matcher.map(lambda m: Cancel(*m)),
        "subscribe": st.builds(Subscribe, key, st.booleans()),
        "unsubscribe": st.builds(Unsubscribe, st.integers(0, 7)),
        "advance": st.builds(Advance, st.sampled_from([1, 4, 11])),
        "hold_origin": st.builds(HoldOrigin, key),
        "release_origin": st.builds(ReleaseOrigin, key),
        "fail_origin": st.builds(FailOrigin, key, st.booleans()),
    }
    if refetch:
        kinds["refetch_active"] = matcher.map(lambda m: RefetchActive(*m))
    if many:
        kinds["fetch_many"] = st.lists(key, min_size=1, max_size=4).map(
            lambda listed: FetchMany(tuple(listed))
        )
    if l2_gates:
        kinds["hold_l2"] = st.just(HoldL2Reads())
        kinds["release_l2"] = st.just(ReleaseL2Reads())
    if write_gates:
        kinds["hold_l2_writes"] = st.just(HoldL2Writes())
        kinds["release_l2_writes"] = st.just(ReleaseL2Writes())
    return kinds


@st.composite
def programs(
    draw: st.DrawFn,
    l2_gates: bool,
    *,
    write_gates: bool = False,
    refetch: bool = False,
    many: bool = False,
    max_size: int = 40,
) -> list[Op]:
    """A program, swarm-style: each draws which keys and which kinds of operation it uses.

    Most programs then repeat a few kinds on one or two keys, which is what it
    takes to reach interleavings several steps deep (hold, fetch, invalidate,
    cancel, fetch again, release); shrinking still works on the operations.
    """
    keys = draw(st.sampled_from([KEYS[:1], KEYS[:2], KEYS]))
    strategies = op_strategies(keys, l2_gates, write_gates, refetch, many)
    kinds = [kind for kind in sorted(strategies) if draw(st.booleans())] or ["fetch"]
    kind_st = st.sampled_from(kinds).flatmap(lambda kind: strategies[kind])
    size = draw(st.integers(0, max_size))  # st.lists alone averages a handful of operations
    return draw(st.lists(kind_st, min_size=size, max_size=size))
