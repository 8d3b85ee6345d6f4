"""Specification of ``QueryClient.dehydrate`` / ``hydrate``: saving the cache and starting warm."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage
from stackquery import QueryStatus
from tests.stackquery.client_origin import Failure, Origin

A = ("user", 1)
B = ("user", 2)
NESTED = ("search", {"q": "ada", "tags": ("a", "b")}, 2.5, None, True)
SECRET = b"0123456789abcdef0123456789abcdef"


def entry(**fields: Any) -> dict[str, Any]:
    """One well-formed saved query, with ``fields`` replaced."""
    base: dict[str, Any] = {
        "key": ["user", 1],
        "key_hash": '["user",1]',
        "data": {"name": "Ada"},
        "data_updated_at": 1_700_000_000.0,
        "is_invalidated": False,
    }
    base.update(fields)
    return base


def saved(*queries: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A well-formed dehydrated dict holding ``queries``, with top-level ``fields`` replaced."""
    base: dict[str, Any] = {
        "version": 1,
        "serializer": "json",
        "encoding": "json",
        "queries": list(queries),
    }
    base.update(fields)
    return base


class TestDehydrate:
    async def test_empty_client(self) -> None:
        """An empty client dehydrates to a dict with no queries."""
        async with sq.open_query_client() as client:
            assert client.dehydrate() == saved()

    async def test_successful_queries_only_by_default(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Success keys are saved (key, hash, data, wall time, flag); pending and error ones not."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, {"name": "Ada", "langs": ("en", "fr")})
            await trio.sleep(2.0)
            await client.set_query_data(NESTED, [1, 2.5, None])
            await client.invalidate_queries(NESTED)
            with pytest.raises(Failure):
                await client.fetch_query(
                    sq.QueryOptions(query_key=B, query_fn=Origin(Failure("x")), retry=0)
                )
            await client.prefetch_query(
                sq.QueryOptions(query_key=("pending",), query_fn=Origin(delay=5.0))
            )
            state = client.dehydrate()
            wall_a, wall_nested = client.clock.wall(0.0), client.clock.wall(2.0)
        assert state == saved(
            {
                "key": ["user", 1],
                "key_hash": '["user",1]',
                "data": {"name": "Ada", "langs": ["en", "fr"]},
                "data_updated_at": wall_a,
                "is_invalidated": False,
            },
            {
                "key": ["search", {"q": "ada", "tags": ["a", "b"]}, 2.5, None, True],
                "key_hash": '["search",{"q":"ada","tags":["a","b"]},2.5,null,true]',
                "data": [1, 2.5, None],
                "data_updated_at": wall_nested,
                "is_invalidated": True,
            },
        )
        assert json.loads(json.dumps(state)) == state

    async def test_predicate_picks_the_keys(self) -> None:
        """A predicate sees (key, state) of every key with data, error ones included."""
        seen: list[tuple[Any, QueryStatus]] = []

        def keep(key: Any, state: sq.QueryState[Any]) -> bool:
            seen.append((key, state.status))
            return key != A

        async with sq.open_query_client() as client:
            await client.set_query_data(A, 1)
            await client.set_query_data(B, 2)
            failing = sq.QueryOptions(query_key=B, query_fn=Origin(Failure("x")), retry=0)
            await client.invalidate_queries(B)
            assert await client.fetch_query(failing) == 2  # stale: served, the refetch fails
            await wait_all_tasks_blocked()
            failed = client.get_query_state(B)
            assert failed is not None
            assert (failed.status, failed.data) == (QueryStatus.ERROR, 2)
            state = client.dehydrate(keep)
        assert seen == [(A, QueryStatus.SUCCESS), (B, QueryStatus.ERROR)]
        assert [(q["key"], q["data"]) for q in state["queries"]] == [(["user", 2], 2)]

    async def test_unencodable_value_names_its_key(self) -> None:
        """A value the serializer cannot encode is a SerializationError naming the key."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, {1, 2})
            with pytest.raises(
                sq.SerializationError, match=r"^query \('user', 1\): json cannot encode set value"
            ):
                client.dehydrate()
            assert client.dehydrate(lambda key, state: key != A) == saved()

    async def test_binary_serializer_uses_base64(self) -> None:
        """With another serializer each value is the base64 text of its bytes."""
        serializer = sq.serializers.pickle(key=SECRET)
        config = sq.QueryClientConfig(serializer=serializer)
        async with sq.open_query_client(config) as client:
            await client.set_query_data(A, {"when": (1, 2)})
            state = client.dehydrate()
        assert (state["serializer"], state["encoding"]) == (serializer.name, "base64")
        data = state["queries"][0]["data"]
        assert serializer.loads(base64.b64decode(data)) == {"when": (1, 2)}
        assert json.loads(json.dumps(state)) == state

    async def test_works_after_the_client_closed(self) -> None:
        """A daemon can dehydrate after leaving the client's ``async with``."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, "kept")
        assert [q["data"] for q in client.dehydrate()["queries"]] == ["kept"]

    async def test_is_synchronous(self) -> None:
        """dehydrate does not checkpoint."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, 1)
            with trio.testing.assert_no_checkpoints():
                client.dehydrate()


class TestWarmRestart:
    def test_save_then_start_warm_in_a_new_run(self) -> None:
        """Saved on shutdown, loaded by a client in a new trio.run: fresh keys need no query_fn."""
        first, second = Origin({"name": "Ada"}), Origin({"name": "Bob"})

        async def daemon_before() -> dict[str, Any]:
            async with sq.open_query_client() as client:
                await client.fetch_query(sq.QueryOptions(query_key=A, query_fn=first))
                await client.fetch_query(sq.QueryOptions(query_key=B, query_fn=first))
            return json.loads(json.dumps(client.dehydrate()))

        async def daemon_after(state: dict[str, Any]) -> tuple[int, Any, Any, QueryStatus]:
            async with sq.open_query_client() as client:
                loaded = await client.hydrate(state)
                fresh = await client.fetch_query(
                    sq.QueryOptions(query_key=A, query_fn=second, stale_time=60.0)
                )
                stale = await client.fetch_query(  # stale_time 0: served, then refetched
                    sq.QueryOptions(query_key=B, query_fn=second)
                )
                await wait_all_tasks_blocked()
                state_b = client.get_query_state(B)
                assert state_b is not None
                return loaded, fresh, stale, state_b.status

        state = trio.run(daemon_before, clock=trio.testing.MockClock(autojump_threshold=0))
        loaded, fresh, stale, status_b = trio.run(
            daemon_after, state, clock=trio.testing.MockClock(autojump_threshold=0)
        )
        assert (loaded, fresh, stale, status_b) == (
            2,
            {"name": "Ada"},
            {"name": "Ada"},
            QueryStatus.SUCCESS,
        )
        assert (first.calls, second.calls) == (2, 1)

    async def test_new_client_in_the_same_run(self, autojump_clock: trio.testing.MockClock) -> None:
        """A second client of the same run starts warm: a fresh hit, no origin call."""
        origin = Origin()
        options = sq.QueryOptions(query_key=NESTED, query_fn=origin, stale_time=30.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(options)
            state = client.dehydrate()
        # Each client maps trio time to wall time when it opens, so mock time
        # spent here would not age the saved data: age it in the second client.
        async with sq.open_query_client() as client:
            assert await client.hydrate(state) == 1
            assert await client.fetch_query(options) == "v1"
            loaded = client.get_query_state(NESTED)
            await trio.sleep(31.0)  # past stale_time since the fetch
            assert await client.fetch_query(options) == "v1"
            await wait_all_tasks_blocked()
            assert client.get_query_data(NESTED) == "v2"
        assert loaded is not None
        assert (loaded.data_updated_at, loaded.is_invalidated) == (
            state["queries"][0]["data_updated_at"],
            False,
        )
        assert origin.calls == 2

    async def test_binary_serializer_round_trip(self) -> None:
        """With pickle the saved dict loads back into a client with the same serializer."""
        config = sq.QueryClientConfig(serializer=sq.serializers.pickle(key=SECRET))
        async with sq.open_query_client(config) as client:
            await client.set_query_data(A, {"when": (1, 2), "tags": {"x"}})
            state = client.dehydrate()
        async with sq.open_query_client(config) as client:
            assert await client.hydrate(state) == 1
            assert client.get_query_data(A) == {"when": (1, 2), "tags": {"x"}}

    async def test_invalidation_is_kept(self) -> None:
        """A key saved invalidated is loaded invalidated: the next read refetches."""
        origin = Origin()
        options = sq.QueryOptions(query_key=A, query_fn=origin, stale_time=math.inf)
        async with sq.open_query_client() as client:
            await client.fetch_query(options)
            await client.invalidate_queries(A)
            state = client.dehydrate()
        async with sq.open_query_client() as client:
            await client.hydrate(state)
            loaded = client.get_query_state(A)
            assert loaded is not None
            assert (loaded.data, loaded.is_invalidated) == ("v1", True)
            assert await client.fetch_query(options) == "v1"  # stale: served and refetched
            await wait_all_tasks_blocked()
            assert client.get_query_data(A) == "v2"

    async def test_hydrated_data_reaches_l2(self) -> None:
        """Loaded data is written to L2 like set data: a client sharing the store sees it."""
        store = MemoryStorage()
        config = sq.QueryClientConfig(storage=store, stale_time=math.inf)
        origin = Origin()
        async with sq.open_query_client() as client:
            await client.set_query_data(A, "saved")
            state = client.dehydrate()
        async with sq.open_query_client(config) as client:
            await client.hydrate(state)
        async with sq.open_query_client(config) as client:
            assert (
                await client.fetch_query(sq.QueryOptions(query_key=A, query_fn=origin)) == "saved"
            )
        assert origin.calls == 0


class TestNeverOverwritesNewer:
    async def test_newer_data_in_l1_is_kept(self, autojump_clock: trio.testing.MockClock) -> None:
        """A key holding data as new or newer is left alone; an older one is replaced."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, "a saved")
            await client.set_query_data(B, "b saved")
            state = client.dehydrate()
            await trio.sleep(1.0)
            await client.set_query_data(A, "a newer")
        async with sq.open_query_client() as client:
            await client.set_query_data(
                B, "b older", updated_at=state["queries"][1]["data_updated_at"] - 1
            )
            await client.set_query_data(
                A, "a newer", updated_at=state["queries"][0]["data_updated_at"] + 1
            )
            assert await client.hydrate(state) == 1
            assert (client.get_query_data(A), client.get_query_data(B)) == ("a newer", "b saved")
            assert await client.hydrate(state) == 0  # as new now: nothing to load

    async def test_observed_key_gets_the_data_and_its_observer_is_told(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key with a running actor is loaded through it; its observer sees the loaded data."""
        origin = Origin("fetched", delay=100.0)
        seen: list[Any] = []
        async with sq.open_query_client() as client:
            await client.set_query_data(A, "saved")
            state = client.dehydrate()
        async with sq.open_query_client() as client:
            observer = client.watch(sq.QueryOptions(query_key=A, query_fn=origin))
            unsubscribe = observer.subscribe(lambda s: seen.append(s.data))
            await trio.sleep(1.0)
            assert await client.hydrate(state) == 1
            await trio.sleep(200.0)
            unsubscribe()
        assert seen == [None, "saved", "fetched"]

    async def test_fetch_landing_before_the_load_wins(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data fetched after the save is newer than it: hydrate then leaves it in place."""
        async with sq.open_query_client() as client:
            await client.set_query_data(A, "saved")
            state = client.dehydrate()
        await trio.sleep(5.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(sq.QueryOptions(query_key=A, query_fn=Origin("fetched")))
            assert await client.hydrate(state) == 0
            assert client.get_query_data(A) == "fetched"


class TestMalformed:
    @pytest.mark.parametrize(
        ("state", "message"),
        [
            (
                saved(version=2),
                r"^dehydrated state has version 2; this stackquery reads version 1$",
            ),
            (saved(version=True), r"^dehydrated state has version True; "),
            ({"queries": []}, r"^dehydrated state has version None; "),
            (
                saved(serializer="pickle-hmac"),
                r"^dehydrated state was written with serializer 'pickle-hmac', "
                r"but this client uses 'json'$",
            ),
            (
                saved(encoding="base64"),
                r"^dehydrated state has encoding 'base64'; serializer 'json' needs 'json'$",
            ),
            (saved(queries={}), r"^dehydrated state: queries must be a list, got dict$"),
            (saved("x"), r"^dehydrated state: queries\[0\] must be a dict, got str$"),
            (
                saved({"key": ["a"], "data": 1}),
                r"^dehydrated state: queries\[0\] lacks data_updated_at, is_invalidated$",
            ),
            (
                saved(entry(), entry(key=["user", [1, {2}]])),
                r"^dehydrated state: queries\[1\]\.key is not a valid query key: query key "
                r"\('user', \(1, \{2\}\)\) holds a set",
            ),
            (
                saved(entry(key="user")),
                r"^dehydrated state: queries\[0\]\.key is not a valid query key: "
                r"query key must be a tuple, got str",
            ),
            (
                saved(entry(key_hash='["user",2]')),
                r"^dehydrated state: queries\[0\]\.key_hash '\[\"user\",2\]' does not match "
                r"its key \(hash '\[\"user\",1\]'\)$",
            ),
            (
                saved(entry(data_updated_at="yesterday")),
                r"^dehydrated state: queries\[0\]\.data_updated_at must be a finite number, "
                r"got 'yesterday'$",
            ),
            (
                saved(entry(data_updated_at=math.inf)),
                r"^dehydrated state: queries\[0\]\.data_updated_at must be a finite number, "
                r"got inf$",
            ),
            (
                saved(entry(data_updated_at=True)),
                r"^dehydrated state: queries\[0\]\.data_updated_at must be a finite number, "
                r"got True$",
            ),
            (
                saved(entry(is_invalidated="no")),
                r"^dehydrated state: queries\[0\]\.is_invalidated must be a bool, got 'no'$",
            ),
            (
                saved(entry(data={1, 2})),
                r"^dehydrated state: queries\[0\]\.data cannot be decoded: ",
            ),
        ],
    )
    async def test_rejected_with_what_is_wrong(self, state: dict[str, Any], message: str) -> None:
        """A malformed dict is a ValueError naming the field, and loads nothing."""
        async with sq.open_query_client() as client:
            with pytest.raises(ValueError, match=message):
                await client.hydrate(state)
            assert client.snapshot() == []

    async def test_bad_base64(self) -> None:
        """Base64 data that is not base64 (or not the serializer's bytes) is rejected."""
        config = sq.QueryClientConfig(serializer=sq.serializers.pickle(key=SECRET))
        name = sq.serializers.pickle(key=SECRET).name
        async with sq.open_query_client(config) as client:
            for data, message in [
                ("***", r"^dehydrated state: queries\[0\]\.data cannot be decoded: "),
                (
                    5,
                    r"^dehydrated state: queries\[0\]\.data cannot be decoded: "
                    r"base64 text expected, got int$",
                ),
                (
                    base64.b64encode(b"not a signed pickle").decode(),
                    r"^dehydrated state: queries\[0\]\.data cannot be decoded: ",
                ),
            ]:
                state = saved(entry(data=data), serializer=name, encoding="base64")
                with pytest.raises(ValueError, match=message):
                    await client.hydrate(state)
            assert client.snapshot() == []

    async def test_not_a_dict(self) -> None:
        """Anything but a dict is a TypeError."""
        async with sq.open_query_client() as client:
            with pytest.raises(
                TypeError, match=r"^dehydrated state must be a dict, got list: \[\]$"
            ):
                await client.hydrate([])  # type: ignore[arg-type]

    async def test_a_bad_entry_loads_nothing(self) -> None:
        """The whole dict is checked first: a bad second entry leaves the first unloaded."""
        async with sq.open_query_client() as client:
            with pytest.raises(ValueError, match=r"queries\[1\]\.is_invalidated"):
                await client.hydrate(
                    saved(entry(), entry(key=["b"], key_hash='["b"]', is_invalidated=1))
                )
            assert client.get_query_state(A) is None

    async def test_closed_client(self) -> None:
        """hydrate outside the client's ``async with`` is a ClientClosedError."""
        async with sq.open_query_client() as client:
            pass
        with pytest.raises(sq.ClientClosedError):
            await client.hydrate(saved())

    async def test_key_hash_is_optional(self) -> None:
        """A hand-written entry without key_hash loads by its key."""
        state = saved({k: v for k, v in entry().items() if k != "key_hash"})
        async with sq.open_query_client() as client:
            assert await client.hydrate(state) == 1
            assert client.get_query_data(A) == {"name": "Ada"}
