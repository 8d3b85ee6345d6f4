"""Specification of the attach endpoint (``QueryClientConfig(admin_socket=PATH)``) in-process.

A real client serves the socket; a raw peer speaks the line-delimited JSON
protocol to it.  Time runs on trio's MockClock wherever it matters (ages,
timeouts), so a 60 s idle timeout takes no real time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery.admin import AdminSocketError
from tests.stackquery.admin_support import Peer, error, socket_path
from tests.stackquery.client_origin import Failure, Origin

__all__ = ["socket_path"]  # the fixture, used by name


def config(path: Path, **settings: Any) -> sq.QueryClientConfig:
    return sq.QueryClientConfig(admin_socket=str(path), **settings)


def without_now(reply: dict[str, Any]) -> dict[str, Any]:
    """A successful reply's result without its ``now`` (wall time)."""
    assert reply["ok"] is True, reply
    result = dict(reply["result"])
    result.pop("now")
    return result


async def fetched(client: sq.QueryClient, key: tuple[Any, ...], times: int) -> None:
    """Fetch ``key`` ``times`` times (stale_time 0: each read after the first refetches)."""
    options = sq.QueryOptions(query_key=key, query_fn=Origin())
    for _ in range(times):
        await client.fetch_query(options)
        await trio.sleep(1.0)


class TestTheSocket:
    async def test_is_owner_only_while_open_and_removed_at_close(self, socket_path: Path) -> None:
        """The path is a 0600 socket while the client is open, and gone once it closed."""
        async with sq.open_query_client(config(socket_path)):
            mode = os.stat(socket_path).st_mode
            assert (stat.S_ISSOCK(mode), stat.S_IMODE(mode)) == (True, 0o600)
        assert os.listdir(socket_path.parent) == []

    async def test_off_by_default(self) -> None:
        """A client without admin_socket serves nothing: the config field is None."""
        assert sq.QueryClientConfig().admin_socket is None

    async def test_a_socket_left_by_a_dead_process_is_replaced(self, socket_path: Path) -> None:
        """A socket file nobody listens on is taken over."""
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(socket_path))
        stale.close()
        async with sq.open_query_client(config(socket_path)):
            peer = await Peer.connect(socket_path)
            assert (await peer.ask({"op": "hello"}))["ok"] is True
        assert os.listdir(socket_path.parent) == []

    async def test_a_file_that_is_not_a_socket_is_left_alone(self, socket_path: Path) -> None:
        """Opening fails with AdminSocketError, and the file is untouched."""
        with open(socket_path, "w") as file:  # noqa: ASYNC230
            file.write("precious")
        with pytest.raises(AdminSocketError) as caught:
            async with sq.open_query_client(config(socket_path)):
                pass
        assert str(caught.value) == (
            f"cannot serve the admin socket at {socket_path}: a file that is not a socket "
            "is there (left alone)"
        )
        with open(socket_path) as file:  # noqa: ASYNC230
            assert file.read() == "precious"
        assert os.listdir(socket_path.parent) == ["admin.sock"]

    async def test_a_socket_another_client_serves_is_left_alone(self, socket_path: Path) -> None:
        """A second client on the same path fails to open; the first one keeps serving."""
        async with sq.open_query_client(config(socket_path)):
            with pytest.raises(AdminSocketError, match=r"another process listens there$"):
                async with sq.open_query_client(config(socket_path)):
                    pass
            peer = await Peer.connect(socket_path)
            assert (await peer.ask({"op": "hello"}))["ok"] is True

    async def test_a_missing_directory_fails_the_open(self, socket_path: Path) -> None:
        """The error names the path and the reason."""
        path = socket_path.parent / "missing" / "admin.sock"
        with pytest.raises(AdminSocketError) as caught:
            async with sq.open_query_client(config(path)):
                pass
        assert str(caught.value) == (
            f"cannot serve the admin socket at {path}: No such file or directory"
        )

    async def test_closing_the_client_ends_open_connections(self, socket_path: Path) -> None:
        """A peer still connected when the client closes reads the end of the stream."""
        async with sq.open_query_client(config(socket_path)):
            peer = await Peer.connect(socket_path)
            assert (await peer.ask({"op": "hello"}))["ok"] is True
        assert await peer.reply() is None

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (42, "admin_socket must be a path (str) or None, got int: 42"),
            (
                b"/tmp/a.sock",
                "admin_socket must be a path (str) or None, got bytes: b'/tmp/a.sock'",
            ),
            ("", "admin_socket must be a non-empty path without NUL characters, got ''"),
            (
                "/tmp/a\0b",
                "admin_socket must be a non-empty path without NUL characters, got '/tmp/a\\x00b'",
            ),
            (
                "/" + "x" * 100,
                "admin_socket is 101 bytes long; a Unix socket path holds at most 100 here: "
                "use a shorter one, such as /run/APP/stackquery.sock",
            ),
        ],
    )
    def test_a_bad_path_is_refused_at_construction(self, value: object, message: str) -> None:
        """The config names the problem when it is made, not when the client opens."""
        with pytest.raises(sq.InvalidOptionError) as caught:
            sq.QueryClientConfig(admin_socket=value)  # type: ignore[arg-type]
        assert str(caught.value) == message


class TestSnapshot:
    async def test_reports_each_key(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Status, fetch status, age, staleness, observers, fetches, errors, a running actor."""
        async with sq.open_query_client(config(socket_path, stale_time=10.0)) as client:
            await client.fetch_query(sq.QueryOptions(query_key=("user", 1), query_fn=Origin()))
            await client.set_query_data(("user", 2.0), "b")
            observer = client.watch(
                sq.QueryOptions(query_key=("team", {"b": 1, "a": 2}), query_fn=Origin(delay=9))
            )
            observer.subscribe(lambda _state: None)
            await trio.sleep(3.0)
            peer = await Peer.connect(socket_path)
            reply = await peer.ask({"op": "snapshot", "id": 7})
        assert reply["id"] == 7
        assert without_now(reply) == {
            "total": 3,
            "matched": 3,
            "truncated": False,
            "summary": {
                "keys": 3,
                "pending": 1,
                "success": 2,
                "error": 0,
                "fetching": 1,
                "stale": 0,
                "invalidated": 0,
                "observers": 1,
                "active": 1,
                "fetches": 2,
                "errors": 0,
            },
            "keys": [
                {
                    "key": ["team", {"a": 2, "b": 1}],
                    "status": "pending",
                    "fetch_status": "fetching",
                    "age": None,
                    "stale": False,
                    "invalidated": False,
                    "observers": 1,
                    "fetches": 1,
                    "errors": 0,
                    "active": True,
                },
                {
                    "key": ["user", 1],
                    "status": "success",
                    "fetch_status": "idle",
                    "age": 3.0,
                    "stale": False,
                    "invalidated": False,
                    "observers": 0,
                    "fetches": 1,
                    "errors": 0,
                    "active": False,
                },
                {
                    "key": ["user", 2],
                    "status": "success",
                    "fetch_status": "idle",
                    "age": 3.0,
                    "stale": False,
                    "invalidated": False,
                    "observers": 0,
                    "fetches": 0,
                    "errors": 0,
                    "active": False,
                },
            ],
        }

    async def test_prefix_order_and_limit(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Keys under the prefix only; by fetches, most first; a limit marks the reply truncated."""
        async with sq.open_query_client(config(socket_path)) as client:
            await fetched(client, ("user", 1), 1)
            await fetched(client, ("user", 2), 3)
            await fetched(client, ("user", 3), 2)
            await fetched(client, ("users",), 5)
            peer = await Peer.connect(socket_path)
            request = {"op": "snapshot", "prefix": ["user"], "order": "fetches", "limit": 2}
            reply = without_now(await peer.ask(request))
        assert [(r["key"], r["fetches"]) for r in reply["keys"]] == [
            (["user", 2], 3),
            (["user", 3], 2),
        ]
        assert (reply["total"], reply["matched"], reply["truncated"]) == (4, 3, True)
        assert (reply["summary"]["keys"], reply["summary"]["fetches"]) == (3, 6)

    async def test_a_prefix_that_matches_nothing_names_what_is_near(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The longest shorter prefix with keys, grouped one level deeper, most keys first."""
        async with sq.open_query_client(config(socket_path)) as client:
            for key in [("user", 1, "a"), ("user", 1, "b"), ("user", 2), ("team", 1)]:
                await client.set_query_data(key, "x")
            peer = await Peer.connect(socket_path)
            deep = without_now(await peer.ask({"op": "snapshot", "prefix": ["user", 9]}))
            top = without_now(await peer.ask({"op": "snapshot", "prefix": ["usr"]}))
        assert (deep["matched"], deep["keys"], deep["prefixes"]) == (
            0,
            [],
            [{"prefix": ["user", 1], "keys": 2}, {"prefix": ["user", 2], "keys": 1}],
        )
        assert top["prefixes"] == [{"prefix": ["user"], "keys": 3}, {"prefix": ["team"], "keys": 1}]

    async def test_walks_a_big_table_in_chunks(self, socket_path: Path) -> None:
        """Describing 5,000 keys lets other tasks run between chunks of 500."""
        async with sq.open_query_client(config(socket_path)) as client:
            for number in range(5000):
                await client.set_query_data(("k", number), number)
            ticks = 0
            done = False

            async def tick() -> None:
                nonlocal ticks
                while not done:
                    ticks += 1
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(tick)
                peer = await Peer.connect(socket_path)
                reply = without_now(await peer.ask({"op": "snapshot", "limit": 0}))
                done = True
        assert (reply["matched"], reply["keys"]) == (5000, [])
        assert ticks >= 10


class TestStatsAndEvents:
    async def test_stats_counts_cold_fetches_refetches_and_failures(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Client statistics as the client reports them; fetch counts from the event stream."""
        async with sq.open_query_client(config(socket_path, retry=0)) as client:
            await fetched(client, ("user", 1), 2)
            with pytest.raises(Failure):
                await client.fetch_query(
                    sq.QueryOptions(query_key=("down",), query_fn=Origin(Failure("no")))
                )
            peer = await Peer.connect(socket_path)
            reply = without_now(await peer.ask({"op": "stats"}))
            expected_client = attrs.asdict(client.statistics())
            del expected_client["circuits"]  # under "breakers"
        assert reply == {
            "pid": os.getpid(),
            "uptime": 2.0,
            "client": expected_client,
            "l2": None,
            "fleet": None,
            "breakers": {},
            "events": {
                "seq": 8,
                "counts": {
                    "added": 2,
                    "updated": 2,
                    "removed": 0,
                    "observer_added": 0,
                    "observer_removed": 0,
                    "fetch_started": 3,
                    "fetch_failed": 1,
                    "stale_if_error": 0,
                    "circuit_opened": 0,
                    "circuit_half_opened": 0,
                    "circuit_closed": 0,
                },
                "fetches": {"cold": 2, "refetch": 1, "failed": 1},
            },
        }

    async def test_stats_carry_the_circuit_breakers_by_name(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """``breakers`` holds each breaker the client's queries used: state and counts."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=30.0, name="users-api")
        async with sq.open_query_client(config(socket_path, retry=0)) as client:
            with pytest.raises(Failure):
                await client.fetch_query(
                    sq.QueryOptions(
                        query_key=("down",), query_fn=Origin(Failure("no")), circuit=breaker
                    )
                )
            peer = await Peer.connect(socket_path)
            reply = without_now(await peer.ask({"op": "stats"}))
        assert reply["breakers"] == {
            "users-api": {
                "state": "open",
                "consecutive_failures": 0,
                "calls": 1,
                "successes": 0,
                "failures": 1,
                "refused": 0,
                "abandoned": 0,
                "opened": 1,
                "half_opened": 0,
                "closed": 0,
                "probes_in_flight": 0,
                "retry_at": 30.0,
            }
        }
        assert "circuits" not in reply["client"]

    async def test_stats_carry_the_l2_statistics(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With a store, ``l2`` is the client's L2Statistics."""
        settings = config(socket_path, storage=sq.MemoryStorage())
        async with sq.open_query_client(settings) as client:
            await fetched(client, ("user", 1), 1)
            peer = await Peer.connect(socket_path)
            reply = without_now(await peer.ask({"op": "stats"}))
            l2 = client.l2_statistics()
        assert l2 is not None and l2.writes == 1
        assert reply["l2"] == attrs.asdict(l2)

    async def test_stats_carry_the_fleet_statistics(
        self, socket_path: Path, redis_url: str
    ) -> None:
        """On Redis, ``fleet`` is the client's FleetStatistics (connected once subscribed)."""
        async with (
            sq.RedisStorage(redis_url) as store,
            sq.open_query_client(config(socket_path, storage=store)) as client,
        ):
            with trio.fail_after(10):  # the subscription is a real server's business
                while not getattr(client.fleet_statistics(), "connected", False):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            peer = await Peer.connect(socket_path)
            reply = without_now(await peer.ask({"op": "stats"}))
            fleet = client.fleet_statistics()
        assert fleet is not None
        assert reply["fleet"] == attrs.asdict(fleet)
        assert reply["fleet"]["connected"] is True

    async def test_events_are_the_recent_ones_oldest_first(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each event's type, key, state after it, a failed fetch's error; ``after`` pages."""
        async with sq.open_query_client(config(socket_path, retry=0)) as client:
            await client.fetch_query(sq.QueryOptions(query_key=("a",), query_fn=Origin(delay=1)))
            with pytest.raises(Failure):
                await client.fetch_query(
                    sq.QueryOptions(query_key=("b",), query_fn=Origin(Failure("down"), delay=1))
                )
            peer = await Peer.connect(socket_path)
            reply = await peer.ask({"op": "events", "limit": 4})
            later = await peer.ask({"op": "events", "after": 5})
        result = reply["result"]
        events = result["events"]
        assert (result["seq"], result["kept"], [e["seq"] for e in events]) == (
            6,
            1000,
            [3, 4, 5, 6],
        )
        at = [e.pop("at") for e in events]
        assert [round(t - at[-1], 6) for t in at] == [-1.0, -1.0, -1.0, 0.0]
        assert events == [
            {
                "seq": 3,
                "type": "updated",
                "key": ["a"],
                "status": "success",
                "fetch_status": "idle",
                "invalidated": False,
                "error": None,
            },
            {
                "seq": 4,
                "type": "added",
                "key": ["b"],
                "status": "pending",
                "fetch_status": "idle",
                "invalidated": False,
                "error": None,
            },
            {
                "seq": 5,
                "type": "fetch_started",
                "key": ["b"],
                "status": "pending",
                "fetch_status": "fetching",
                "invalidated": False,
                "error": None,
            },
            {
                "seq": 6,
                "type": "fetch_failed",
                "key": ["b"],
                "status": "error",
                "fetch_status": "idle",
                "invalidated": False,
                "error": "Failure: down",
            },
        ]
        assert [e["seq"] for e in later["result"]["events"]] == [6]

    async def test_the_ring_keeps_the_last_thousand(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """1,200 events: the last 1,000 are kept, and the counts cover all of them."""
        async with sq.open_query_client(config(socket_path)) as client:
            for number in range(600):
                await client.set_query_data(("k", number), number)
            peer = await Peer.connect(socket_path)
            events = (await peer.ask({"op": "events", "limit": 1000}))["result"]["events"]
            stats = without_now(await peer.ask({"op": "stats"}))
        assert (len(events), events[0]["seq"], events[-1]["seq"]) == (1000, 201, 1200)
        assert stats["events"]["counts"]["added"] == 600


class TestCommands:
    async def observed_and_not(
        self, client: sq.QueryClient, origin: Origin
    ) -> tuple[sq.QueryObserver[Any], Any]:
        """("user", 1) observed (its origin is ``origin``), ("user", 2) cached and unobserved."""
        observer = client.watch(sq.QueryOptions(query_key=("user", 1), query_fn=origin))
        unsubscribe = observer.subscribe(lambda _state: None)
        await client.set_query_data(("user", 2), "b")
        await trio.sleep(1.0)
        return observer, unsubscribe

    async def test_invalidate_marks_every_match_and_refetches_the_observed(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """As client.invalidate_queries(prefix): both invalidated, the observed one refetched."""
        origin = Origin()
        async with sq.open_query_client(config(socket_path, stale_time=60.0)) as client:
            await self.observed_and_not(client, origin)
            peer = await Peer.connect(socket_path)
            reply = await peer.ask({"op": "invalidate", "prefix": ["user"]})
            await trio.sleep(1.0)
            states = [client.get_query_state(("user", n)) for n in (1, 2)]
        assert reply == {"ok": True, "result": {"matched": 2}}
        assert origin.calls == 2
        assert [(s.data, s.is_invalidated) for s in states if s is not None] == [
            ("v2", False),
            ("b", True),
        ]

    async def test_invalidate_without_refetch(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """``"refetch": false`` marks the keys and fetches nothing."""
        origin = Origin()
        async with sq.open_query_client(config(socket_path, stale_time=60.0)) as client:
            await self.observed_and_not(client, origin)
            peer = await Peer.connect(socket_path)
            reply = await peer.ask({"op": "invalidate", "prefix": ["user", 1], "refetch": False})
            await trio.sleep(1.0)
            state = client.get_query_state(("user", 1))
        assert reply == {"ok": True, "result": {"matched": 1}}
        assert (origin.calls, state is not None and state.is_invalidated) == (1, True)

    async def test_invalidate_that_matches_nothing_names_what_is_there(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Zero matched, and the prefixes the client holds."""
        async with sq.open_query_client(config(socket_path)) as client:
            await self.observed_and_not(client, Origin())
            peer = await Peer.connect(socket_path)
            reply = await peer.ask({"op": "invalidate", "prefix": ["usr"]})
        assert reply == {
            "ok": True,
            "result": {"matched": 0, "prefixes": [{"prefix": ["user"], "keys": 2}]},
        }

    async def test_refetch_waits_for_the_observed_keys(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The reply comes once the observed key's refetch (2 s) landed."""
        origin = Origin(delay=2.0)
        async with sq.open_query_client(config(socket_path, stale_time=60.0)) as client:
            await self.observed_and_not(client, origin)
            await trio.sleep(2.0)
            peer = await Peer.connect(socket_path)
            started = trio.current_time()
            reply = await peer.ask({"op": "refetch", "prefix": []})
            waited = trio.current_time() - started
            data = client.get_query_data(("user", 1))
        assert reply == {
            "ok": True,
            "result": {"matched": 2, "observed": 1, "settled": True, "failed": 0},
        }
        assert (waited, data, origin.calls) == (2.0, "v2", 2)

    async def test_refetch_reports_failures_and_gives_up_waiting(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A refetch that fails is counted; one still running at ``timeout`` is not settled."""
        failing = Origin("v1", Failure("down"))
        slow = Origin(delay=100.0)
        async with sq.open_query_client(config(socket_path, retry=0)) as client:
            client.watch(sq.QueryOptions(query_key=("a",), query_fn=failing)).subscribe(
                lambda _state: None
            )
            await trio.sleep(1.0)
            peer = await Peer.connect(socket_path)
            failed = await peer.ask({"op": "refetch", "prefix": ["a"]})
            client.watch(sq.QueryOptions(query_key=("b",), query_fn=slow)).subscribe(
                lambda _state: None
            )
            await trio.sleep(1.0)
            started = trio.current_time()
            unsettled = await peer.ask({"op": "refetch", "prefix": ["b"], "timeout": 5})
            waited = trio.current_time() - started
        assert failed["result"] == {"matched": 1, "observed": 1, "settled": True, "failed": 1}
        assert unsettled["result"] == {"matched": 1, "observed": 1, "settled": False, "failed": 0}
        assert waited == 5.0

    async def test_remove_drops_the_keys(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """As client.remove_queries(prefix): the keys are gone from L1."""
        async with sq.open_query_client(config(socket_path)) as client:
            await self.observed_and_not(client, Origin())
            await client.set_query_data(("team", 1), "t")
            peer = await Peer.connect(socket_path)
            reply = await peer.ask({"op": "remove", "prefix": ["user"]})
            keys = sorted(record.key for record in client.snapshot())
        assert reply == {"ok": True, "result": {"matched": 2}}
        assert keys == [("team", 1)]

    async def test_hello(self, socket_path: Path) -> None:
        """The protocol version, the process, the ops and the limits."""
        async with sq.open_query_client(config(socket_path, key_prefix="app:")):
            peer = await Peer.connect(socket_path)
            reply = without_now(await peer.ask({"op": "hello"}))
        assert reply == {
            "protocol": 1,
            "pid": os.getpid(),
            "key_prefix": "app:",
            "ops": ["events", "hello", "invalidate", "refetch", "remove", "snapshot", "stats"],
            "limits": {
                "max_line": 65536,
                "max_connections": 16,
                "idle_timeout": 60.0,
                "send_timeout": 10.0,
                "events_kept": 1000,
                "max_snapshot_keys": 10000,
                "max_refetch_wait": 300.0,
            },
        }


BAD_REQUESTS = [
    (
        b"\xff\xfe garbage",
        "bad_request",
        "not JSON: str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)",
    ),
    (
        b"{not json}",
        "bad_request",
        "not JSON: unexpected character, expected a string key: line 1 column 2 (char 1)",
    ),
    (b"[1, 2]", "bad_request", "a request is a JSON object, got list"),
    (b'{"id": 3}', "bad_request", 'a request needs "op", a string'),
    (b'{"op": 5}', "bad_request", 'a request needs "op", a string'),
    (
        b'{"op": "drop_all"}',
        "unknown_op",
        "unknown op 'drop_all' (ops: hello, snapshot, stats, events, invalidate, refetch, remove)",
    ),
    (
        b'{"op": "snapshot", "prefx": []}',
        "bad_request",
        "op snapshot does not take 'prefx' (it takes prefix, limit, order)",
    ),
    (
        b'{"op": "snapshot", "prefix": "user"}',
        "bad_request",
        "a key prefix is a JSON array such as [\"user\"], got 'user'",
    ),
    (
        b'{"op": "snapshot", "limit": -1}',
        "bad_request",
        '"limit" must be an integer from 0 to 10000, got -1',
    ),
    (
        b'{"op": "snapshot", "limit": true}',
        "bad_request",
        '"limit" must be an integer from 0 to 10000, got True',
    ),
    (
        b'{"op": "snapshot", "order": "age"}',
        "bad_request",
        '"order" must be "key" or "fetches", got \'age\'',
    ),
    (
        b'{"op": "invalidate"}',
        "bad_request",
        'this op needs "prefix", a JSON array such as ["user"] ([]: all)',
    ),
    (
        b'{"op": "invalidate", "prefix": ["u"], "refetch": "yes"}',
        "bad_request",
        "\"refetch\" must be true or false, got 'yes'",
    ),
    (
        b'{"op": "refetch", "prefix": ["u"], "timeout": 301}',
        "bad_request",
        '"timeout" must be a number from 0 to 300, got 301',
    ),
    (
        b'{"op": "events", "limit": 1001}',
        "bad_request",
        '"limit" must be an integer from 0 to 1000, got 1001',
    ),
]


class TestBadRequests:
    @pytest.mark.parametrize(("line", "code", "message"), BAD_REQUESTS)
    async def test_get_an_error_reply_and_the_connection_goes_on(
        self, socket_path: Path, line: bytes, code: str, message: str
    ) -> None:
        """The reply names the problem; the same connection then answers a good request."""
        async with sq.open_query_client(config(socket_path)) as client:
            await client.set_query_data(("user", 1), "a")
            peer = await Peer.connect(socket_path)
            await peer.send(line + b"\n")
            assert await peer.reply() == error(code, message)
            assert (await peer.ask({"op": "hello"}))["ok"] is True
            assert client.get_query_data(("user", 1)) == "a"

    async def test_the_id_is_echoed_in_errors_too(self, socket_path: Path) -> None:
        """A request's ``id`` (any JSON) comes back with its reply, an error's included."""
        async with sq.open_query_client(config(socket_path)):
            peer = await Peer.connect(socket_path)
            reply = await peer.ask({"op": "nope", "id": {"n": [1]}})
        assert (reply["id"], reply["error"]["code"]) == ({"n": [1]}, "unknown_op")

    async def test_blank_lines_are_skipped(self, socket_path: Path) -> None:
        """Empty and whitespace-only lines get no reply."""
        async with sq.open_query_client(config(socket_path)):
            peer = await Peer.connect(socket_path)
            await peer.send(b"\n  \r\n")
            reply = await peer.ask({"op": "hello", "id": 1})
        assert reply["id"] == 1


class TestHostilePeers:
    async def test_a_line_past_64_kib_closes_that_connection_only(self, socket_path: Path) -> None:
        """``too_long``, then the end of the stream; another connection is served as before."""
        async with sq.open_query_client(config(socket_path)):
            flood = await Peer.connect(socket_path)
            with contextlib.suppress(trio.BrokenResourceError):
                await flood.send(b"x" * 200_000)
            assert await flood.reply() == error("too_long", "request line longer than 65536 bytes")
            assert await flood.reply() is None
            other = await Peer.connect(socket_path)
            assert (await other.ask({"op": "hello"}))["ok"] is True

    async def test_a_silent_connection_is_closed_after_the_idle_timeout(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Nothing, or half a request, for 60 s: ``timeout``, then the end of the stream."""
        async with sq.open_query_client(config(socket_path)):
            silent = await Peer.connect(socket_path)
            half = await Peer.connect(socket_path)
            await half.send(b'{"op": "hel')
            start = trio.current_time()
            expected = error("timeout", "no request within 60 s: closing")
            assert (await silent.reply(), await half.reply()) == (expected, expected)
            assert (await silent.reply(), await half.reply()) == (None, None)
            assert trio.current_time() - start == 60.0

    async def test_a_reader_that_never_reads_is_dropped_and_stalls_nothing(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Replies pile up unread: the others are served meanwhile; after 10 s it is closed."""
        origin = Origin(delay=1.0)
        async with sq.open_query_client(config(socket_path)) as client:
            for number in range(1000):
                await client.set_query_data(("k", number), "x" * 100)
            greedy = await Peer.connect(socket_path)
            requests = 200
            await greedy.send(b'{"op": "snapshot"}\n' * requests)
            await trio.testing.wait_all_tasks_blocked()  # its replies fill the socket's buffer
            start = trio.current_time()
            other = await Peer.connect(socket_path)
            assert (await other.ask({"op": "hello"}))["ok"] is True
            options = sq.QueryOptions(query_key=("user", 1), query_fn=origin)
            assert await client.fetch_query(options) == "v1"
            assert trio.current_time() - start == 1.0
            await trio.sleep(10.0)
            replies = 0
            while await greedy.reply() is not None:
                replies += 1
        assert 0 < replies < requests

    async def test_past_16_connections_a_new_one_is_told_busy(self, socket_path: Path) -> None:
        """The 17th gets ``busy`` and then closed; once one closes, a new one is served."""
        async with sq.open_query_client(config(socket_path)):
            peers = [await Peer.connect(socket_path) for _ in range(16)]
            for peer in peers:
                assert (await peer.ask({"op": "hello"}))["ok"] is True
            extra = await Peer.connect(socket_path)
            busy = error("busy", "16 connections are open already: try again later")
            assert (await extra.reply(), await extra.reply()) == (busy, None)
            await peers.pop().aclose()
            await trio.testing.wait_all_tasks_blocked()
            again = await Peer.connect(socket_path)
            assert (await again.ask({"op": "hello"}))["ok"] is True

    async def test_a_peer_that_hangs_up_mid_reply_changes_nothing(self, socket_path: Path) -> None:
        """A request sent, the connection reset at once: the client goes on and closes cleanly."""
        async with sq.open_query_client(config(socket_path)) as client:
            for number in range(2000):
                await client.set_query_data(("k", number), number)
            for _ in range(5):
                rude = await Peer.connect(socket_path)
                await rude.send(b'{"op": "snapshot", "limit": 2000}\n')
                rude.stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0"
                )
                await rude.aclose()
            await trio.testing.wait_all_tasks_blocked()
            peer = await Peer.connect(socket_path)
            assert without_now(await peer.ask({"op": "snapshot", "limit": 0}))["matched"] == 2000
