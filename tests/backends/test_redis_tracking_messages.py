"""The server's invalidation messages are untrusted input: every shape, checked."""

from __future__ import annotations

import pytest

from backends._redis_tracking import (
    MAX_KEYS_PER_INVALIDATION,
    Invalidation,
    parse_invalidation,
    tracking_command,
)


def test_a_key_list_names_the_keys() -> None:
    assert parse_invalidation([b"sq:[1]", b"sq:[2]"]) == Invalidation((b"sq:[1]", b"sq:[2]"))


def test_a_null_is_a_flush() -> None:
    assert parse_invalidation(None) == Invalidation(None)


def test_too_many_keys_count_as_everything() -> None:
    assert parse_invalidation([b"k"] * (MAX_KEYS_PER_INVALIDATION + 1)) == Invalidation(None)


@pytest.mark.parametrize("payload", [b"junk", b"", 7, [b"k", 1], [[b"k"]], ["k"], [None]])
def test_anything_else_is_malformed(payload: object) -> None:
    assert parse_invalidation(payload) == Invalidation((), malformed=True)


def test_the_tracking_command() -> None:
    assert tracking_command(42, ["app:sq:[", "other:["]) == (
        "CLIENT", "TRACKING", "on", "REDIRECT", 42, "BCAST",
        "PREFIX", "app:sq:[", "PREFIX", "other:[",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("prefixes", "message"), [([], "at least one"), (["sq:", "sq:["], "overlap")]
)
def test_bad_prefixes_are_refused_before_connecting(prefixes: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tracking_command(1, prefixes)
