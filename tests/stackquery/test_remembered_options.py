"""Specification of the options each key is remembered with: what ``refetch_queries``
fetches an unobserved key with, kept as the key's query_fn and settings shared by the
keys read alike (a template), and built again equal to those the key was last read with."""

from __future__ import annotations

import functools
import sys
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery import _remembered
from stackquery._remembered import (
    SETTINGS,
    TEMPLATES_MAX,
    Remembered,
    Run,
    Templates,
    same_run,
    same_settings,
)


async def _value(n: int) -> int:
    return n * 10


def _options(key: tuple[Any, ...], **settings: Any) -> sq.QueryOptions[Any]:
    settings.setdefault("retry", 0)
    return sq.QueryOptions(query_key=key, query_fn=functools.partial(_value, key[-1]), **settings)


async def _context_value(context: sq.QueryContext) -> tuple[Any, Any]:
    return (context.key, dict(context.meta))


class TestRefetchWithTheLastOptions:
    async def test_each_key_refetches_with_its_own_query_fn(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """500 keys read alike, options built per read: each refetch calls its key's function."""
        calls: list[int] = []

        async def load(n: int) -> int:
            calls.append(n)
            return n

        async with sq.open_query_client() as client:
            for n in range(500):
                options = sq.QueryOptions(query_key=("k", n), query_fn=functools.partial(load, n))
                await client.fetch_query(options)
            await trio.sleep(10.0)  # every actor passivated
            calls.clear()
            assert await client.refetch_queries(wait=True) == 500
            assert sorted(calls) == list(range(500))

    async def test_the_settings_of_each_kind_of_read_are_kept(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Keys read with three kinds of settings: each refetches with its meta and stale_time."""
        async with sq.open_query_client() as client:
            for n in range(3):
                for kind, stale in (("a", 5.0), ("b", 50.0), ("c", 500.0)):
                    meta = {"meta": {"kind": kind}} if kind != "a" else {}
                    options = sq.QueryOptions(
                        query_key=(kind, n), query_fn=_context_value, stale_time=stale, **meta
                    )
                    await client.fetch_query(options)
            await trio.sleep(100.0)  # a went stale; b, c are fresh
            assert await client.refetch_queries(wait=True) == 9
            await trio.sleep(60.0)  # b stale again (50 s), c fresh (500 s)
            for n in range(3):
                assert client.get_query_data(("b", n)) == (("b", n), {"kind": "b"})
                assert client.get_query_data(("c", n)) == (("c", n), {"kind": "c"})
                assert client.get_query_data(("a", n)) == (("a", n), {})
                states = {kind: client.get_query_state((kind, n)) for kind in "abc"}
                stale = {kind: state.is_stale for kind, state in states.items() if state}
                assert stale == {"a": True, "b": True, "c": False}

    async def test_a_key_given_in_another_form_refetches_under_its_canonical_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """("f", 1.0) and a key holding a dict: kept whole, refetched under the canonical key."""
        async with sq.open_query_client() as client:
            for key in [("f", 1.0), ("d", {"b": 2, "a": 1}), ("d", 3), ("d", 4)]:
                await client.fetch_query(sq.QueryOptions(query_key=key, query_fn=_context_value))
            await trio.sleep(10.0)
            assert await client.refetch_queries(wait=True) == 4
            assert client.get_query_data(("f", 1)) == (("f", 1), {})
            assert client.get_query_data(("d", {"a": 1, "b": 2})) == (("d", {"a": 1, "b": 2}), {})
            assert client.get_query_data(("d", 4)) == (("d", 4), {})

    async def test_the_last_read_wins_even_with_other_settings(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key read with meta "x", then with meta "y" by a stale read: refetched with "y"."""
        async with sq.open_query_client() as client:
            for meta in ({"m": "x"}, {"m": "y"}):
                await client.fetch_query(
                    sq.QueryOptions(query_key=("k", 1), query_fn=_context_value, meta=meta)
                )
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(10.0)
            assert await client.refetch_queries(wait=True) == 1
            assert client.get_query_data(("k", 1)) == (("k", 1), {"m": "y"})


def _two_kinds() -> tuple[Templates, tuple[sq.QueryOptions[Any], ...], object]:
    """Templates given keys ``a0``, ``a1`` of one kind, then ``b0``, ``b1`` of another
    (``gc_time``): the templates, those options, and what ``b1`` was kept as."""
    templates = Templates()
    a0, a1 = (_options(("a", n)) for n in range(2))
    b0, b1 = (_options(("b", n), gc_time=5.0) for n in range(2))
    for options in (a0, a1, b0):
        templates.compact(options)
    return templates, (a0, a1, b0, b1), templates.compact(b1)


class TestTemplates:
    def test_keys_read_alike_keep_their_query_fn_alone(self) -> None:
        """The first options are the template; the next keep only their query_fn."""
        templates = Templates()
        first, second, third = (_options(("k", n), stale_time=60.0) for n in range(3))
        assert templates.compact(first) is first
        assert templates.compact(second) is second.query_fn
        assert templates.compact(third) is third.query_fn
        assert templates.expand(third.key_hash, third.query_fn) == third
        assert templates.expand(first.key_hash, first) is first

    def test_numbers_computed_per_read_share_a_template(self) -> None:
        """A stale_time or retry computed per read (equal, another object) is the same setting."""
        templates = Templates()
        minutes = [1.0, 1.0, 1.0]
        first, *rest = (
            _options(("k", n), stale_time=minutes[n] * 60, retry=sys.maxsize - n + n)
            for n in range(3)
        )
        templates.compact(first)
        assert [templates.compact(o) for o in rest] == [o.query_fn for o in rest]

    def test_other_settings_keep_a_reference_to_their_template(self) -> None:
        """Keys of a second kind keep their query_fn and their template; built again equal."""
        templates, (a0, a1, b0, b1), kept = _two_kinds()
        assert kept == Remembered(b0, b1.query_fn)
        assert templates.expand(b1.key_hash, kept) == b1
        assert templates.expand(a1.key_hash, a1.query_fn) == a1
        assert templates.compact(a0) is a0  # the template itself, read again: kept whole

    def test_settings_differing_in_any_field_do_not_share(self) -> None:
        """meta by identity, a callback, a flag: each is its own template."""
        templates = Templates()
        base = _options(("k", 0))
        templates.compact(base)
        for n, settings in enumerate(
            [{"meta": {}}, {"on_success": print}, {"enabled": False}, {"stale_time": 1}], 1
        ):
            options = _options(("k", n), **settings)
            assert templates.compact(options) is options

    def test_the_same_options_again_get_the_same_answer_without_a_comparison(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Options given again (every caller parked on a key's fetch) are kept as they were
        the first time, with no settings compared; other options are compared again."""
        templates, (_, a1, _, b1), kept = _two_kinds()
        compared: list[object] = []

        def counting(a: sq.QueryOptions[Any], b: sq.QueryOptions[Any]) -> bool:
            compared.append(b)
            return same_settings(a, b)

        monkeypatch.setattr(_remembered, "same_settings", counting)
        assert [templates.compact(b1) for _ in range(3)] == [kept] * 3
        assert templates.compact(b1) is kept
        assert compared == []
        assert templates.compact(a1) is a1.query_fn
        assert compared == [a1, a1]  # with b0, the template found last, then with a0

    def test_past_the_bound_the_lookup_starts_over_and_keeps_its_templates(self) -> None:
        """More templates than the bound: keys already kept still build their options again."""
        templates = Templates()
        kept = []
        for n in range(TEMPLATES_MAX + 10):
            first, second = (_options((n, m), gc_time=float(n)) for m in range(2))
            templates.compact(first)
            kept.append((second, templates.compact(second)))
        for options, compact in kept:
            assert templates.expand(options.key_hash, compact) == options


class TestCompactMany:
    def test_a_batch_is_kept_as_compact_keeps_each_of_its_options(self) -> None:
        """Runs of keys read alike, another kind between them, equal numbers, a key in
        another form, settings without a hash: compact_many keeps each as compact would."""
        minutes = 1.0
        batch = [
            *(_options(("a", n), stale_time=60.0) for n in range(3)),
            *(_options(("b", n), stale_time=minutes * 60, gc_time=5.0) for n in range(3)),
            _options(("a", 1.0), stale_time=60.0),  # not its canonical form: kept whole
            *(_options(("a", n), stale_time=60.0) for n in range(3, 5)),
            _options(("c", 0), initial_data=[]),  # a setting without a hash: kept whole
            *(_options(("b", n), stale_time=minutes * 60, gc_time=5.0) for n in range(3, 5)),
        ]
        one_by_one = Templates()
        expected = [one_by_one.compact(options) for options in batch]
        together = Templates()
        kept, runs = together.compact_many(batch)
        assert kept == expected
        assert [type(k) for k in kept] == [type(k) for k in expected]
        for options, compact in zip(batch, kept, strict=True):
            assert together.expand(options.key_hash, compact) == options
        # The runs cover the batch in order, each key with its run's settings (the same
        # objects): what a batch reads of them once a run holds for every key of it.  A
        # stale_time computed per key is another object each time: a run of its own.
        assert [(run.start, run.end) for run in runs] == [
            (0, 1), (1, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10), (10, 11),
            (11, 12),
        ]  # fmt: skip
        for start, end, like in runs:
            for options in batch[start:end]:
                assert all(getattr(options, name) is getattr(like, name) for name in SETTINGS)

    def test_a_batch_after_single_reads_shares_their_templates(self) -> None:
        """Keys read one by one first: a batch of keys read alike keeps their query_fn alone."""
        templates = Templates()
        first, second = (_options(("k", n), stale_time=60.0) for n in range(2))
        templates.compact(first)
        batch = [_options(("k", n), stale_time=60.0) for n in range(2, 6)]
        kept, runs = templates.compact_many(batch)
        assert kept == [options.query_fn for options in batch]
        assert runs == [Run(0, 1, batch[0]), Run(1, 4, first)]
        assert templates.compact(second) is second.query_fn


def _with(options: sq.QueryOptions[Any], name: str, value: object) -> sq.QueryOptions[Any]:
    """A copy of ``options`` whose field ``name`` holds ``value`` (set past validation)."""
    copy = attrs.evolve(options)
    object.__setattr__(copy, name, value)
    return copy


class TestSameSettings:
    def test_each_setting_is_compared(self) -> None:
        """Options differing in any one setting only (an unequal object) are not alike."""
        base = _options(("k", 1))
        assert len(SETTINGS) == 23
        for name in SETTINGS:
            assert same_settings(base, _with(base, name, object())) is False, name
            assert same_settings(_with(base, name, object()), base) is False, name

    def test_the_same_objects_or_equal_numbers_of_one_type_are_alike(self) -> None:
        """Every setting the same object, or an equal int or float of the same type: alike."""
        base = _options(("k", 1), stale_time=30.0, retry=3)
        assert same_settings(base, _options(("k", 2), stale_time=30.0, retry=3)) is True
        for name in SETTINGS:
            assert same_settings(base, _with(base, name, getattr(base, name))) is True, name
        computed = _with(base, "stale_time", float("30"))
        assert computed.stale_time is not base.stale_time
        assert same_settings(base, computed) is True
        assert same_settings(base, _with(base, "retry", 3.0)) is False
        assert same_settings(base, _with(base, "retry", True)) is False
        assert same_settings(base, _with(base, "meta", dict(base.meta))) is False


class TestSameRun:
    def test_each_setting_ends_a_run(self) -> None:
        """A key differing from the template in any one setting (an unequal object) ends the
        run there; the keys before it are in it."""
        base = _options(("k", 1))
        alike = [_options(("k", n)) for n in range(2, 5)]
        assert same_run(base, alike, 0) == 3
        assert same_run(base, alike, 1) == 3
        assert same_run(base, alike, 3) == 3
        for name in SETTINGS:
            batch = [alike[0], _with(alike[1], name, object()), alike[2]]
            assert same_run(base, batch, 0) == 1, name
            assert same_run(base, batch, 2) == 3, name

    def test_an_equal_number_or_a_key_in_another_form_ends_a_run(self) -> None:
        """Only the same objects make a run: an equal float that is another object (alike by
        same_settings) and a key not in its canonical form end it."""
        base = _options(("k", 1), stale_time=30.0)
        computed = _with(_options(("k", 2), stale_time=30.0), "stale_time", float("30"))
        assert same_settings(base, computed) is True
        assert same_run(base, [_options(("k", 3), stale_time=30.0), computed], 0) == 1
        assert same_run(base, [_options(("k", 1.0), stale_time=30.0)], 0) == 0
