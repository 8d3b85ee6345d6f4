"""Forged input from a shared Redis: messages, leases, entries, channels, wrappers.

Anything read from a shared store or channel may be forged.  Each test here
plants one forgery in a real redis-server and pins what a client does with it:
it is rejected or bounded, counted, and the client keeps serving.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import pytest
import redis.asyncio
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stackquery as sq
from backends import ChainStorage, InstrumentedStorage, MemoryStorage, RedisStorage
from stackquery.__main__ import main as cli_main
from stackquery._keys import canonical_key, hash_matches, key_from_hash
from stackquery.fleet import _wire
from stackquery.fleet._fleet import channel_name
from tests.redis_server import RedisServer
from tests.stackquery.fleet_support import (
    DEADLINE,
    Counted,
    Gate,
    fleet,
    open_clients,
    raw_redis,
    wait_until,
)

CHANNEL = channel_name("sq:")
HELD = [("a",), ("a", 1), ("b", "x"), ("c", {"k": (1, 2)})]
"""The keys a fuzzed client holds, so that forged messages have something to hit."""

key_parts = st.one_of(
    st.sampled_from(["a", "b", "c"]),
    st.integers(-2, 2),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
key_hashes = st.lists(key_parts, max_size=3).map(lambda parts: canonical_key(tuple(parts))[1])


@st.composite
def hash_like(draw: st.DrawFn) -> str:
    """A canonical key hash, cut or padded: the texts a forger would try."""
    text = draw(st.one_of(key_hashes, st.sampled_from([canonical_key(k)[1] for k in HELD])))
    cut = draw(st.integers(0, len(text)))
    return draw(st.sampled_from([text, text[:-1], text[:cut], text + "]", text[:cut] + "]"]))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)
loose_messages = st.fixed_dictionaries(
    {
        "n": st.one_of(st.just("forger"), st.text(max_size=70), json_values),
        "op": st.one_of(st.sampled_from(["inv", "del", "upd"]), st.text(max_size=4)),
    },
    optional={
        "p": st.one_of(hash_like(), json_values),
        "x": st.one_of(st.booleans(), json_values),
        "k": st.one_of(st.lists(hash_like(), max_size=4), json_values),
    },
)
times = st.one_of(
    st.floats(0, 4e10), st.integers(0, 2**63), st.floats(), st.just(-1.0), st.booleans()
)
typed_messages = st.one_of(
    st.fixed_dictionaries(
        {
            "n": st.just("forger"),
            "op": st.just("inv"),
            "p": st.one_of(st.none(), hash_like()),
            "x": st.booleans(),
            "k": st.lists(hash_like(), max_size=4),
        }
    ),
    st.fixed_dictionaries(
        {"n": st.just("forger"), "op": st.just("del"), "k": st.lists(hash_like(), max_size=4)}
    ),
    st.fixed_dictionaries(
        {
            "n": st.just("forger"),
            "op": st.just("upd"),
            "k": st.lists(st.tuples(hash_like(), times), max_size=4),
        }
    ),
)
near_messages = st.one_of(typed_messages, loose_messages).map(orjson.dumps)
forged_messages = st.one_of(near_messages, json_values.map(orjson.dumps), st.binary(max_size=200))


async def publish(url: str, channel: str, *messages: bytes) -> None:
    """Publish each of ``messages`` on ``channel``, in order, from a client of the test's own."""
    redis = await raw_redis(url)
    try:
        for message in messages:
            await redis.publish(channel, message)
    finally:
        await redis.aclose()


def invalidation(prefix: str | None, hashes: list[str] | None = None) -> bytes:
    """A well-formed invalidation message from a node that is not the client under test."""
    return orjson.dumps({"n": "forger", "op": "inv", "p": prefix, "x": False, "k": hashes or []})


def l2_of(client: sq.QueryClient) -> sq.L2Statistics:
    """The client's L2 statistics (it must have an L2)."""
    stats = client.l2_statistics()
    assert stats is not None
    return stats


def state_of(client: sq.QueryClient, key: tuple[Any, ...]) -> sq.QueryState[Any]:
    """The key's state in the client's L1 (it must be there)."""
    state = client.get_query_state(key)
    assert state is not None
    return state


def is_canonical(text: str) -> bool:
    """Whether ``text`` is the canonical hash of some key."""
    try:
        return canonical_key(key_from_hash(text))[1] == text
    except (ValueError, TypeError):
        return False


def parses(data: bytes) -> bool:
    """Whether the fleet's checks accept ``data``."""
    try:
        _wire.parse_message(data)
    except _wire.MalformedMessageError:
        return False
    return True


class TestMessageChecks:
    @given(forged_messages)
    def test_the_checks_accept_or_reject_and_raise_nothing_else(self, data: bytes) -> None:
        """Any bytes: a message, or MalformedMessageError; never another exception."""
        try:
            message = _wire.parse_message(data)
        except _wire.MalformedMessageError:
            return
        assert isinstance(message, _wire.Message)

    @given(forged_messages, st.lists(key_hashes, max_size=8))
    def test_an_accepted_prefix_matches_any_key_without_error(
        self, data: bytes, held: list[str]
    ) -> None:
        """A prefix that passed the checks can be matched against every canonical key hash."""
        try:
            message = _wire.parse_message(data)
        except _wire.MalformedMessageError:
            return
        if isinstance(message, _wire.Invalidate) and message.prefix is not None:
            prefix = message.prefix
            near = [prefix, prefix + "]", prefix + ",1]", prefix + "1]"]
            for key_hash in [*held, *(h for h in near if is_canonical(h))]:
                hash_matches(key_hash, prefix, exact=message.exact)

    @given(st.lists(key_hashes, max_size=30), st.floats(0, 1e10))
    def test_what_a_client_sends_passes_the_checks(self, hashes: list[str], at: float) -> None:
        """Every message a sender builds parses back to the keys it was built from."""
        update = _wire.encode_update([(h, at) for h in hashes], node="n1")
        delete = _wire.encode_delete(hashes, node="n1")
        invalidate = _wire.encode_invalidate(hashes[0][:-1] if hashes else "[", exact=False,
                                             hashes=[], node="n1")  # fmt: skip
        assert _wire.parse_message(update) == _wire.Update("n1", tuple((h, at) for h in hashes))
        assert _wire.parse_message(delete) == _wire.Delete("n1", tuple(hashes))
        assert parses(invalidate)

    def test_long_key_lists_are_split_into_messages_receivers_accept(self) -> None:
        """2,500 keys go out in 3 runs of at most MAX_KEYS; a hash past MAX_HASH_CHARS in none."""
        hashes = [canonical_key(("k", n))[1] for n in range(2500)]
        too_long = canonical_key(("x" * _wire.MAX_HASH_CHARS,))[1]
        runs = list(_wire.chunks([*hashes[:10], too_long, *hashes[10:]]))
        assert [len(run) for run in runs] == [1000, 1000, 500]
        assert 10 not in [index for run in runs for index in run]

    @pytest.mark.parametrize(
        ("message", "problem"),
        [
            ({"n": "f", "op": "inv", "p": '["a"]', "k": []}, "prefix 'p' is not a key hash prefix"),
            ({"n": "f", "op": "inv", "p": '["a",', "k": []}, "prefix 'p' is not a key hash prefix"),
            ({"n": "f", "op": "del", "k": ['["a",1.0]']}, "a key in 'k' is not a canonical key"),
            ({"n": "f", "op": "del", "k": ['{"a":1}']}, "a key in 'k' is not a canonical key"),
            ({"n": "f", "op": "del", "k": ['["a"]'] * 1001}, "1001 keys, more than 1000"),
            ({"n": "f", "op": "upd", "k": [['["a"]', -1]]}, "an update's time is not finite"),
            ({"n": "f", "op": "upd", "k": [['["a"]', True]]}, "an update's time is not a number"),
            ({"n": "f", "op": "upd", "k": [['["a"]', 1, 2]]}, "an update is not a"),
            ({"n": "", "op": "upd", "k": []}, "node 'n' is not a short string"),
            ({"n": "f" * 65, "op": "upd", "k": []}, "node 'n' is not a short string"),
            ({"n": "f", "op": "x" * 33}, "operation 'op' is not a short string"),
        ],
    )
    def test_each_field_is_checked(self, message: dict[str, Any], problem: str) -> None:
        """A message with one bad field is rejected, naming the field."""
        with pytest.raises(_wire.MalformedMessageError, match=f"^{problem}"):
            _wire.parse_message(orjson.dumps(message))

    def test_a_message_past_the_size_limit_is_rejected_unread(self) -> None:
        """More than MAX_MESSAGE_BYTES is rejected before it is parsed."""
        data = b" " * _wire.MAX_MESSAGE_BYTES + b"{}"
        with pytest.raises(_wire.MalformedMessageError, match=r"^message of 1048578 bytes"):
            _wire.parse_message(data)


@pytest.mark.slow
class TestForgedMessages:
    async def test_an_invalidation_prefix_that_is_a_whole_key_hash_is_rejected(
        self, redis_url: str
    ) -> None:
        """Prefix '["a"]' (a key hash, not a prefix) is counted as rejected; the client goes on."""
        key = ("a",)
        origin = Counted("v")
        async with open_clients(redis_url, 1) as (client,):
            await client.fetch_query(sq.QueryOptions(key, origin))
            await publish(redis_url, CHANNEL, invalidation('["a"]'), invalidation('["a"'))
            # Both messages handled (they arrive in order, but are counted one by one).
            await wait_until(lambda: fleet(client).received + fleet(client).rejected == 2)
            assert state_of(client, key).is_invalidated
            stats = fleet(client)
            assert (stats.received, stats.rejected) == (1, 1)
            assert await client.fetch_query(sq.QueryOptions(("b",), origin)) == "v2"

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(batch=st.lists(forged_messages, min_size=1, max_size=12))
    async def test_a_client_survives_any_messages_on_its_channel(
        self, redis_url: str, batch: list[bytes]
    ) -> None:
        """Arbitrary bytes, JSON and near-miss messages: each is applied or rejected and counted."""
        origin = Counted("v")
        async with open_clients(redis_url, 1) as (client,):
            for key in HELD:
                await client.fetch_query(sq.QueryOptions(key, origin))
            await publish(redis_url, CHANNEL, *batch)
            stats = fleet(client)
            await wait_until(lambda: fleet(client).received + fleet(client).rejected == len(batch))
            stats = fleet(client)
            assert stats.rejected == sum(not parses(data) for data in batch)
            assert await client.fetch_query(sq.QueryOptions(("fresh", 1), origin)) == "v5"

    async def test_a_bg_reader_ignores_forged_messages_and_follows_the_writer(
        self, redis_url: str
    ) -> None:
        """bg.read outlives messages without keys; the writer's next value still arrives."""
        entry = ("bg", "rates")
        async with open_clients(redis_url, 2) as (writer, reading):
            await writer.set_query_data(entry, "r1")
            await wait_until(lambda: l2_of(writer).pending_writes == 0)
            reader = sq.bg.read(
                "rates", interval=3600.0, store=RedisStorage(redis_url), client=reading
            )
            assert await reader() == "r1"
            forged = [b'{"n": "forger", "op": "later"}', b'{"n": "forger", "op": "upd", "k": 1}']
            await publish(redis_url, CHANNEL, *forged)
            await writer.set_query_data(entry, "r2")
            with trio.fail_after(DEADLINE):
                while await reader() != "r2":  # noqa: ASYNC110  (the message comes from Redis)
                    await trio.sleep(0.005)


@pytest.fixture
def jumpy_clock() -> trio.testing.MockClock:
    """A mock clock that jumps after 100 ms of real idleness, so real replies arrive first."""
    return trio.testing.MockClock(autojump_threshold=0.1)


def lease_name(key: tuple[Any, ...]) -> str:
    """The Redis key of the query's single-flight lease (default ``key_prefix``)."""
    return "sq:lease:" + canonical_key(key)[1]


async def plant(url: str, *command: Any) -> Any:
    """Run one Redis command from a client of the test's own (a forger's write)."""
    redis = await raw_redis(url)
    try:
        return await redis.execute(*command)
    finally:
        await redis.aclose()


@pytest.mark.slow
class TestForgedLeases:
    async def test_a_lease_without_expiry_is_given_one_and_then_taken_over(
        self, redis_url: str
    ) -> None:
        """A lease key with no TTL (never a stackquery lease) gets lease_time; then a takeover."""
        key = ("report", 1)
        origin = Counted("v")
        await plant(redis_url, "SET", lease_name(key), "forged")
        async with open_clients(redis_url, 1, lease_time=0.3, lease_poll_interval=0.05) as (a,):
            with trio.fail_after(0.9 - 0.05):  # inside three lease times: no timeout was needed
                assert await a.fetch_query(sq.QueryOptions(key, origin, retry=0)) == "v1"
            stats = fleet(a)
            assert (stats.foreign_leases, stats.takeovers, stats.lease_wait_timeouts) == (1, 1, 0)
        assert origin.calls == 1

    async def test_a_lease_that_never_ends_is_waited_three_lease_times_at_most(
        self, redis_url: str, jumpy_clock: trio.testing.MockClock
    ) -> None:
        """A lease with a year to live: the fetch waits exactly 3 x lease_time, then the origin."""
        key = ("report", 2)
        origin = Counted("v")
        await plant(redis_url, "SET", lease_name(key), "forged", "PX", 365 * 86400 * 1000)
        async with open_clients(redis_url, 1, lease_time=10.0, lease_poll_interval=3600.0) as (a,):
            start = trio.current_time()
            assert await a.fetch_query(sq.QueryOptions(key, origin, retry=0)) == "v1"
            assert trio.current_time() - start == pytest.approx(30.0)
            stats = fleet(a)
            assert (stats.lease_wait_timeouts, stats.leases_taken, stats.takeovers) == (1, 0, 0)
            assert stats.foreign_leases == 0
        assert origin.calls == 1

    async def test_a_lease_wait_never_outlasts_the_query_timeout(
        self, redis_url: str, jumpy_clock: trio.testing.MockClock
    ) -> None:
        """A lease key without expiry, timeout=2, retry=0: the fetch waits 2 s, not forever."""
        key = ("report", 3)
        origin = Counted("v")
        await plant(redis_url, "SET", lease_name(key), "forged")
        async with open_clients(redis_url, 1, lease_time=10.0, lease_poll_interval=3600.0) as (a,):
            start = trio.current_time()
            data = await a.fetch_query(sq.QueryOptions(key, origin, timeout=2.0, retry=0))
            assert data == "v1"
            assert trio.current_time() - start == pytest.approx(2.0)
            assert (fleet(a).lease_wait_timeouts, fleet(a).foreign_leases) == (1, 1)


YEAR_3000 = 32503680000.0


class TestFutureEntries:
    async def test_an_entry_stamped_in_the_year_3000_is_served_stale_and_refetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Past the clock-skew allowance the entry is stale (counted), and the origin is asked."""
        key = ("user", 1)
        store = MemoryStorage()
        stamped = sq.pack_entry("forged", data_updated_at=YEAR_3000, serializer=sq.serializers.json)
        await store.set("sq:" + canonical_key(key)[1], stamped)
        origin = Counted("v")
        async with sq.open_query_client(sq.QueryClientConfig(storage=store, stale_time=60.0)) as c:
            assert await c.fetch_query(sq.QueryOptions(key, origin)) == "forged"
            state = state_of(c, key)
            assert (state.is_stale, state.is_invalidated) == (True, True)
            assert state.data_updated_at is not None and state.data_updated_at < YEAR_3000
            await trio.testing.wait_all_tasks_blocked()
            assert await c.fetch_query(sq.QueryOptions(key, origin)) == "v1"
            assert state_of(c, key).is_stale is False
            assert l2_of(c).future_entries == 1
        assert origin.calls == 1

    async def test_an_entry_inside_the_clock_skew_allowance_is_fresh(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An entry stamped 3 s ahead (another machine's clock) is fresh, and not counted."""
        key = ("user", 2)
        store = MemoryStorage()
        origin = Counted("v")
        async with sq.open_query_client(sq.QueryClientConfig(storage=store, stale_time=60.0)) as c:
            ahead = time.time() + sq.MAX_CLOCK_SKEW - 2.0
            raw = sq.pack_entry("ahead", data_updated_at=ahead, serializer=sq.serializers.json)
            await store.set("sq:" + canonical_key(key)[1], raw)
            assert await c.fetch_query(sq.QueryOptions(key, origin)) == "ahead"
            assert state_of(c, key).is_stale is False
            assert l2_of(c).future_entries == 0
        assert origin.calls == 0

    @pytest.mark.slow
    async def test_a_future_entry_in_redis_never_stands_in_for_the_origin(
        self, redis_url: str
    ) -> None:
        """Single flight does not take a year-3000 entry for another process's value."""
        key = ("user", 3)
        stamped = sq.pack_entry("forged", data_updated_at=YEAR_3000, serializer=sq.serializers.json)
        await plant(redis_url, "SET", "sq:" + canonical_key(key)[1], stamped)
        origin = Counted("v")
        async with open_clients(redis_url, 1) as (a,):
            assert await a.fetch_query(sq.QueryOptions(key, origin)) == "forged"
            await wait_until(lambda: a.get_query_data(key) == "v1")
            await wait_until(lambda: l2_of(a).pending_writes == 0)
            assert (fleet(a).leases_taken, origin.calls) == (1, 1)
            raw = await plant(redis_url, "GET", "sq:" + canonical_key(key)[1])
            assert sq.unpack_entry(raw, sq.serializers.json).value == "v1"


def db_url(url: str, db: int) -> str:
    """``url`` with its database number replaced by ``db``."""
    return url.rsplit("/", 1)[0] + f"/{db}"


@pytest.mark.slow
class TestChannels:
    async def test_clients_on_two_databases_never_hear_each_other(self, redis_url: str) -> None:
        """db 1 invalidating ("user",) reaches db 1's clients only, not db 2's."""
        key = ("user", 1)
        origin = Counted("v")
        async with (
            open_clients(db_url(redis_url, 1), 2) as (a, witness),
            open_clients(db_url(redis_url, 2), 1) as (other,),
        ):
            for client in (witness, other):
                await client.fetch_query(sq.QueryOptions(key, origin))
            await a.invalidate_queries(("user",))
            await wait_until(lambda: state_of(witness, key).is_invalidated)
            assert state_of(other, key).is_invalidated is False
            assert (fleet(witness).received, fleet(other).received) == (1, 0)

    async def test_clients_under_two_storage_prefixes_never_hear_each_other(
        self, redis_url: str
    ) -> None:
        """RedisStorage(prefix="app1:") and ("app2:") on one db: two channels, two lease spaces."""
        key = ("user", 1)
        origin = Counted("v")
        async with (
            open_clients(redis_url, 2, storage=lambda: RedisStorage(redis_url, prefix="app1:")) as (
                a,
                witness,
            ),
            open_clients(redis_url, 1, storage=lambda: RedisStorage(redis_url, prefix="app2:")) as (
                other,
            ),
        ):
            for client in (witness, other):
                await client.fetch_query(sq.QueryOptions(key, origin))
            await a.invalidate_queries(("user",))
            await wait_until(lambda: state_of(witness, key).is_invalidated)
            assert state_of(other, key).is_invalidated is False
            assert (fleet(witness).received, fleet(other).received) == (1, 0)
            names = await plant(redis_url, "PUBSUB", "CHANNELS")
        # And the server's key invalidations (redis_tracking), one channel for all.
        assert sorted(names) == [
            b"__redis__:invalidate", b"app1:sq:events:db0", b"app2:sq:events:db0",
        ]  # fmt: skip

    async def test_the_cli_reaches_the_database_of_its_url_only(self, redis_url: str) -> None:
        """``invalidate --redis URL/1`` publishes on db 1's channel: db 2's clients keep theirs."""
        key = ("user", 1)
        origin = Counted("v")
        async with (
            open_clients(db_url(redis_url, 1), 1) as (one,),
            open_clients(db_url(redis_url, 2), 1) as (two,),
        ):
            for client in (one, two):
                await client.fetch_query(sq.QueryOptions(key, origin))
            code = await trio.to_thread.run_sync(
                cli_main, ["invalidate", "--redis", db_url(redis_url, 1), '["user"]']
            )
            assert code == 0
            await wait_until(lambda: state_of(one, key).is_invalidated)
            assert state_of(two, key).is_invalidated is False

    async def test_bg_read_follows_a_writer_on_its_own_database(self, redis_url: str) -> None:
        """bg.read on db 1 hears db 1's writer (same channel naming as the client's fleet)."""
        entry = ("bg", "rates")
        async with open_clients(db_url(redis_url, 1), 2) as (writer, reading):
            await writer.set_query_data(entry, "r1")
            await wait_until(lambda: l2_of(writer).pending_writes == 0)
            reader = sq.bg.read(
                "rates", interval=3600.0, store=RedisStorage(db_url(redis_url, 1)), client=reading
            )
            assert await reader() == "r1"
            await writer.set_query_data(entry, "r2")
            with trio.fail_after(DEADLINE):
                while await reader() != "r2":  # noqa: ASYNC110  (the message comes from Redis)
                    await trio.sleep(0.005)


@pytest.mark.slow
class TestFindingRedis:
    @pytest.mark.parametrize(
        "wrap",
        [
            lambda store: InstrumentedStorage(store, sq.InMemoryMetrics()),
            lambda store: ChainStorage(MemoryStorage(), store, ttls=[1.0, None]),
            lambda store: InstrumentedStorage(
                ChainStorage(MemoryStorage(), store), sq.InMemoryMetrics()
            ),
        ],
        ids=["instrumented", "chain", "instrumented-chain"],
    )
    async def test_the_fleet_runs_through_wrappers(self, redis_url: str, wrap: Any) -> None:
        """A RedisStorage inside wrappers still carries broadcast and single flight."""
        key = ("user", 1)
        origin = Counted("v")
        async with (
            open_clients(redis_url, 1, storage=lambda: wrap(RedisStorage(redis_url))) as (a,),
            open_clients(redis_url, 1) as (b,),
        ):
            await b.fetch_query(sq.QueryOptions(key, origin))
            await a.invalidate_queries(("user",))
            await wait_until(lambda: state_of(b, key).is_invalidated)
            await a.fetch_query(sq.QueryOptions(("report", 1), origin))
            assert fleet(a).leases_taken == 1

    async def test_a_store_on_redis_asyncio_says_once_why_the_fleet_is_off(
        self, redis_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """redis.asyncio has no trio pub/sub here: one warning at client start names the reason."""
        store = RedisStorage(redis.asyncio.Redis.from_url(redis_url))
        with caplog.at_level(logging.WARNING, logger="stackquery.fleet"):
            async with sq.open_query_client(sq.QueryClientConfig(storage=store)) as client:
                assert client.fleet_statistics() is None
        warnings = [r.getMessage() for r in caplog.records if r.name == "stackquery.fleet"]
        assert warnings == [
            "fleet off (no broadcast, no single flight): the RedisStorage talks through a "
            "redis.asyncio client; give it a URL or a backends.RedisClient"
        ]

    async def test_broadcast_asked_for_without_redis_says_why(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """broadcast=True on a store with no RedisStorage inside: one warning at client start."""
        config = sq.QueryClientConfig(storage=MemoryStorage(), broadcast=True)
        with caplog.at_level(logging.WARNING, logger="stackquery.fleet"):
            async with sq.open_query_client(config) as client:
                assert client.fleet_statistics() is None
        warnings = [r.getMessage() for r in caplog.records if r.name == "stackquery.fleet"]
        assert warnings == [
            "fleet off (no broadcast, no single flight): no RedisStorage in the MemoryStorage"
        ]


@pytest.mark.slow
class TestLeasedWrites:
    async def test_a_leased_value_finished_while_redis_is_down_lands_when_it_returns(
        self, redis_server: RedisServer
    ) -> None:
        """The holder's write is queued like any other: retried, written, and announced after."""
        url = redis_server.url
        key = ("report", 1)
        holder = Gate("a")
        async with open_clients(url, 1, lease_time=5.0) as (a,):
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.fetch_query, sq.QueryOptions(key, holder))
                    await holder.started.wait()
                    redis_server.kill()
                    holder.open()
            assert a.get_query_data(key) == "a1"
            await wait_until(lambda: l2_of(a).pending_writes == 1)
            redis_server.restart()
            await wait_until(lambda: l2_of(a).pending_writes == 0)
            raw = await plant(url, "GET", "sq:" + canonical_key(key)[1])
            assert sq.unpack_entry(raw, sq.serializers.json).value == "a1"
            async with open_clients(url, 1) as (b,):
                assert await b.fetch_query(sq.QueryOptions(key, Counted("b"))) == "a1"

    async def test_the_holder_releases_once_its_value_landed_and_was_announced(
        self, redis_url: str
    ) -> None:
        """A waiter elsewhere is woken by the holder's update message and finds the value."""
        key = ("report", 2)
        holder, other = Gate("a"), Counted("b")
        got: list[Any] = []

        async def fetch_into(client: sq.QueryClient, origin: Any) -> None:
            got.append(await client.fetch_query(sq.QueryOptions(key, origin)))

        async with open_clients(redis_url, 2, lease_poll_interval=3600.0) as (a, b):
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fetch_into, a, holder)
                    await holder.started.wait()
                    nursery.start_soon(fetch_into, b, other)
                    await wait_until(lambda: fleet(b).leases_waited == 1)
                    holder.open()
            assert got == ["a1", "a1"]
            assert (holder.calls, other.calls) == (1, 0)
            assert l2_of(a).writes == 1
