"""RedisClient against a real redis-server: commands, cancellation, failures, pub/sub."""

from __future__ import annotations

import os
import random
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis.exceptions
import trio
import trio.testing

from backends import (
    Invalidation,
    StorageClosedError,
    StorageError,
    StorageUnavailableError,
    _redis_connection,
)
from backends._redis_address import RedisAddress
from backends._redis_client import RedisClient, RedisClientStatistics, RedisReplyError
from backends._redis_connection import HandshakeRefused
from tests.redis_fixtures import require_redis_server_binary
from tests.redis_server import RedisServer, free_loopback_port
from tests.tls_certs import self_signed_certificate

PASSWORD = "s3cret pass/word"


@pytest.fixture
def password_server() -> Iterator[RedisServer]:
    """A redis-server that requires PASSWORD."""
    require_redis_server_binary()
    with RedisServer(["--requirepass", PASSWORD]) as server:
        yield server


@pytest.fixture
def slow_autojump_clock() -> trio.testing.MockClock:
    """A mock clock that jumps only after 50 ms of real idleness: real replies still arrive."""
    return trio.testing.MockClock(autojump_threshold=0.05)


def password_url(server: RedisServer) -> str:
    """The server's URL with PASSWORD in it, percent-encoded."""
    return f"redis://:s3cret%20pass%2Fword@127.0.0.1:{server.port}/0"


class TestCommands:
    async def test_round_trip(self, redis_url: str) -> None:
        """SET, GET, INCR and DEL answer exactly what Redis answers."""
        async with RedisClient.from_url(redis_url) as client:
            assert await client.execute("SET", "k", b"v\x00\xff") == b"OK"
            assert await client.execute("GET", "k") == b"v\x00\xff"
            assert await client.execute("INCR", "n") == 1
            assert await client.execute("INCRBY", "n", 41) == 42
            assert await client.execute("DEL", "k", "n", "absent") == 2
            assert await client.execute("GET", "k") is None

    async def test_lease_commands(self, redis_url: str) -> None:
        """SET NX PX takes a lease once, and a Lua compare-and-delete releases it."""
        release = (
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"
            " return 0"
        )
        async with RedisClient.from_url(redis_url) as client:
            assert await client.execute("SET", "lease", "token-1", "NX", "PX", 30000) == b"OK"
            assert await client.execute("SET", "lease", "token-2", "NX", "PX", 30000) is None
            pttl = await client.execute("PTTL", "lease")
            assert isinstance(pttl, int) and 29000 < pttl <= 30000
            assert await client.execute("EVAL", release, 1, "lease", "token-2") == 0
            sha = await client.execute("SCRIPT", "LOAD", release)
            assert isinstance(sha, bytes)
            assert await client.execute("EVALSHA", sha, 1, "lease", "token-1") == 1
            assert await client.execute("EXISTS", "lease") == 0

    async def test_unknown_script_is_a_no_script_error_reply(self, redis_url: str) -> None:
        """EVALSHA of a script the server does not know: a reply error holding NoScriptError."""
        async with RedisClient.from_url(redis_url) as client:
            with pytest.raises(
                RedisReplyError, match=r"^redis EVALSHA: NoScriptError: No matching script"
            ) as info:
                await client.execute("EVALSHA", "0" * 40, 0)
            assert isinstance(info.value.error, redis.exceptions.NoScriptError)
            assert info.value.__cause__ is info.value.error
            assert (info.value.backend, info.value.operation) == ("RedisClient", "EVALSHA")

    async def test_error_reply_raises_and_connection_goes_on(self, redis_url: str) -> None:
        """An error reply raises RedisReplyError with the server's message; the next call works."""
        async with RedisClient.from_url(redis_url) as client:
            await client.execute("SET", "text", "v")
            with pytest.raises(
                RedisReplyError, match=r"^redis LPUSH: ResponseError: WRONGTYPE Operation"
            ):
                await client.execute("LPUSH", "text", "x")
            with pytest.raises(
                RedisReplyError, match=r"^redis NOSUCH: ResponseError: unknown command 'NOSUCH'"
            ):
                await client.execute("NOSUCH")
            assert await client.execute("GET", "text") == b"v"
            assert client.statistics().connections_made == 1

    async def test_pipeline_replies_in_order(self, redis_url: str) -> None:
        """A pipeline returns one reply per command, in order."""
        async with RedisClient.from_url(redis_url) as client:
            replies = await client.pipeline(
                [("SET", "a", 1), ("INCR", "a"), ("GET", "a"), ("MGET", "a", "b")]
            )
            assert replies == [b"OK", 2, b"2", [b"2", None]]
            assert await client.pipeline([]) == []

    async def test_pipeline_errors(self, redis_url: str) -> None:
        """A failing command raises after the pipeline, or is returned in place on request."""
        async with RedisClient.from_url(redis_url) as client:
            commands = [("SET", "s", "v"), ("LPUSH", "s", "x"), ("GET", "s")]
            with pytest.raises(RedisReplyError, match=r"^redis PIPELINE: ResponseError: WRONGTYPE"):
                await client.pipeline(commands)
            ok, error, value = await client.pipeline(commands, raise_on_error=False)
            assert (ok, value) == (b"OK", b"v")
            assert isinstance(error, redis.exceptions.ResponseError)
            assert await client.execute("GET", "s") == b"v"

    async def test_transaction_inside_a_pipeline(self, redis_url: str) -> None:
        """MULTI ... EXEC inside one pipeline is a transaction and returns EXEC's array."""
        async with RedisClient.from_url(redis_url) as client:
            replies = await client.pipeline([("MULTI",), ("INCR", "t"), ("INCR", "t"), ("EXEC",)])
            assert replies == [b"OK", b"QUEUED", b"QUEUED", [1, 2]]

    async def test_unbalanced_transaction_in_pipeline(self, redis_url: str) -> None:
        """A pipeline whose MULTI is not closed, or whose EXEC has no MULTI, is refused."""
        async with RedisClient.from_url(redis_url) as client:
            with pytest.raises(ValueError, match=r"^a redis pipeline must close its MULTI with "):
                await client.pipeline([("MULTI",), ("INCR", "t")])
            with pytest.raises(ValueError, match=r"^EXEC without MULTI in a redis pipeline$"):
                await client.pipeline([("EXEC",)])

    async def test_bad_arguments(self, redis_url: str) -> None:
        """An empty command, a bool or None argument is refused with a clear message."""
        async with RedisClient.from_url(redis_url) as client:
            with pytest.raises(
                ValueError, match=r"^a redis command needs at least a command name$"
            ):
                await client.execute()
            with pytest.raises(TypeError, match=r"^redis command argument 2 is a bool; "):
                await client.execute("SET", "k", True)
            with pytest.raises(
                TypeError, match=r"^redis command argument 1 must be str, bytes, int or float, not "
            ):
                await client.execute("GET", None)  # type: ignore[arg-type]

    async def test_buffer_arguments(self, redis_url: str) -> None:
        """bytearray and memoryview arguments are sent as their bytes."""
        async with RedisClient.from_url(redis_url) as client:
            await client.execute("SET", bytearray(b"ba"), memoryview(b"mv"))
            assert await client.execute("GET", "ba") == b"mv"

    async def test_ten_megabyte_value(self, redis_url: str) -> None:
        """A 10 MB value goes out and comes back byte for byte."""
        value = bytes(range(256)) * (10 * 1024 * 1024 // 256)
        async with RedisClient.from_url(redis_url) as client:
            await client.execute("SET", "big", value)
            assert await client.execute("GET", "big") == value

    async def test_concurrent_callers_share_one_connection(self, redis_url: str) -> None:
        """500 concurrent callers each get their own reply, over a single connection."""
        async with RedisClient.from_url(redis_url) as client:
            await client.pipeline([("SET", f"k{i}", f"v{i}") for i in range(500)])
            replies: dict[int, object] = {}

            async def get(i: int) -> None:
                replies[i] = await client.execute("GET", f"k{i}")

            async with trio.open_nursery() as nursery:
                for i in range(500):
                    nursery.start_soon(get, i)
            assert replies == {i: f"v{i}".encode() for i in range(500)}
            assert client.statistics() == RedisClientStatistics(
                connected=True, queued=0, in_flight=0, connections_made=1, subscriptions=0
            )
            clients = await client.execute("CLIENT", "LIST")
            assert isinstance(clients, bytes) and clients.count(b"\n") == 1

    async def test_python_parser(self, redis_url: str) -> None:
        """Without hiredis, redis-py's pure-Python parser gives the same replies."""
        value = bytes(range(256)) * 4096
        async with RedisClient.from_url(redis_url, use_hiredis=False) as client:
            await client.execute("SET", "big", value)
            replies = await client.pipeline(
                [("GET", "big"), ("INCR", "n"), ("MGET", "big", "none"), ("GET", "none")]
            )
            assert replies == [value, 1, [value, None], None]
            with pytest.raises(RedisReplyError, match=r"^redis LPUSH: ResponseError: WRONGTYPE"):
                await client.execute("LPUSH", "big", "x")


class TestCancellation:
    @pytest.mark.parametrize("use_hiredis", [True, False], ids=["hiredis", "python-parser"])
    async def test_cancelled_calls_never_shift_replies(
        self, redis_url: str, use_hiredis: bool
    ) -> None:
        """GETs, pipelines and MGETs cancelled at random points by hundreds: no reply is wrong."""
        async with RedisClient.from_url(redis_url, use_hiredis=use_hiredis) as client:
            await cancellation_storm(client, rounds=4)

    async def test_cancelled_before_written_never_runs(self, redis_server: RedisServer) -> None:
        """A SET cancelled while queued behind a blocked write never reaches the server."""
        big = b"x" * (48 * 1024 * 1024)  # more than the kernel buffers: the write blocks
        async with RedisClient.from_url(redis_server.url, timeout=None) as client:
            await client.execute("PING")
            redis_server.pause()
            small = trio.CancelScope()

            async def set_small() -> None:
                with small:
                    await client.execute("SET", "small", "v")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.execute, "SET", "big", big)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(set_small)
                await trio.testing.wait_all_tasks_blocked()
                assert client.statistics().queued == 1
                small.cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert client.statistics().queued == 0
                redis_server.resume()
            assert small.cancelled_caught
            assert await client.execute("EXISTS", "small") == 0
            assert await client.execute("STRLEN", "big") == len(big)

    async def test_cancelled_after_written_reply_is_dropped(
        self, redis_server: RedisServer
    ) -> None:
        """A GET cancelled while its reply is owed: the reply is read and dropped in turn."""
        async with RedisClient.from_url(redis_server.url, timeout=None) as client:
            await client.pipeline([("SET", "a", "A"), ("SET", "b", "B")])
            redis_server.pause()
            with trio.move_on_after(0.05) as scope:  # real time: the server is frozen
                await client.execute("GET", "a")
            assert scope.cancelled_caught
            assert client.statistics().in_flight == 1
            redis_server.resume()
            assert await client.execute("GET", "b") == b"B"
            assert client.statistics().in_flight == 0

    async def test_callers_cancelled_together_do_not_scan_what_the_others_left(
        self, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """2,000 GETs owed by a frozen server, cancelled together: as each caller leaves it
        hands its role over, and with nobody left parked it looks at no request (each looked
        at the 2,000 the others abandoned: 4 million looks, seconds of CPU).  The abandoned
        replies are read and dropped once the server answers again."""
        looked_at = 0
        wake_first = _redis_connection._wake_first

        def counting(requests: Iterable[Any]) -> None:
            nonlocal looked_at
            requests = list(requests)
            looked_at += len(requests)
            wake_first(requests)

        async with RedisClient.from_url(redis_server.url, timeout=None) as client:
            await client.execute("PING")
            redis_server.pause()
            try:
                async with trio.open_nursery() as nursery:
                    for n in range(2000):
                        nursery.start_soon(client.execute, "GET", f"k{n}")
                    await trio.testing.wait_all_tasks_blocked()
                    assert client.statistics().in_flight == 2000
                    monkeypatch.setattr(_redis_connection, "_wake_first", counting)
                    nursery.cancel_scope.cancel()
                assert looked_at == 0
                assert client.statistics().in_flight == 2000
            finally:
                redis_server.resume()
            assert await client.execute("PING") == b"PONG"
            assert client.statistics().in_flight == 0

    async def test_cancelled_connector_hands_over(self, password_server: RedisServer) -> None:
        """A caller cancelled while connecting leaves; a queued caller connects instead."""
        async with RedisClient.from_url(password_url(password_server), timeout=None) as client:
            password_server.pause()  # TCP connects, AUTH hangs
            first = trio.CancelScope()
            replies: list[object] = []

            async def ping_first() -> None:
                with first:
                    await client.execute("PING")

            async def ping_second() -> None:
                replies.append(await client.execute("PING"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping_first)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(ping_second)
                await trio.testing.wait_all_tasks_blocked()
                first.cancel()
                await trio.testing.wait_all_tasks_blocked()
                password_server.resume()
            assert first.cancelled_caught
            assert replies == [b"PONG"]
            assert client.statistics().connections_made == 1


class TestFailures:
    async def test_unreachable_server(self) -> None:
        """Nothing listening: StorageUnavailableError, the refusal chained."""
        async with RedisClient.from_url(f"redis://127.0.0.1:{free_loopback_port()}") as client:
            with pytest.raises(
                StorageUnavailableError, match=r"^redis GET: connection lost: "
            ) as info:
                await client.execute("GET", "k")
            assert isinstance(info.value.__cause__, OSError)
            assert (info.value.backend, info.value.operation) == ("RedisClient", "GET")

    async def test_kill_fails_waiters_then_reconnects(self, redis_server: RedisServer) -> None:
        """Every caller waiting on a killed server fails; after restart the next call reconnects."""
        async with RedisClient.from_url(redis_server.url, timeout=None) as client:
            await client.execute("SET", "k", "v")
            redis_server.pause()
            errors: list[BaseException] = []

            async def get() -> None:
                try:
                    await client.execute("GET", "k")
                except StorageUnavailableError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(get)
                await trio.testing.wait_all_tasks_blocked()
                redis_server.kill()
            assert len(errors) == 20
            assert all(
                isinstance(error.__cause__, OSError | trio.BrokenResourceError) for error in errors
            )
            redis_server.restart()
            assert await client.execute("SET", "k", "again") == b"OK"
            assert client.statistics().connections_made == 2

    async def test_idle_connection_dropped_by_server_is_replaced(
        self, redis_server: RedisServer
    ) -> None:
        """A connection the server closed while idle is replaced before the next call fails."""
        async with RedisClient.from_url(redis_server.url) as client:
            await client.execute("SET", "k", "v")
            redis_server.kill()
            redis_server.restart()
            assert await client.execute("GET", "k") is None
            assert client.statistics().connections_made == 2

    async def test_paused_server_times_out(
        self, redis_server: RedisServer, slow_autojump_clock: trio.testing.MockClock
    ) -> None:
        """A frozen server: the call fails after exactly its timeout; the next one reconnects."""
        async with RedisClient.from_url(redis_server.url, timeout=2.5) as client:
            await client.execute("SET", "k", "v")
            redis_server.pause()
            start = trio.current_time()
            with pytest.raises(
                StorageUnavailableError,
                match=r"^redis GET: connection lost: TimeoutError\('no reply",
            ) as info:
                await client.execute("GET", "k")
            assert trio.current_time() == start + 2.5
            assert isinstance(info.value.__cause__, TimeoutError)
            assert client.statistics().connected is False
            redis_server.resume()
            assert await client.execute("GET", "k") == b"v"
            assert client.statistics().connections_made == 2

    async def test_wrong_password_is_a_refusal(self, password_server: RedisServer) -> None:
        """A wrong password is StorageError (not 'unavailable'), AUTH's error chained."""
        url = f"redis://:wrong@127.0.0.1:{password_server.port}"
        async with RedisClient.from_url(url) as client:
            with pytest.raises(StorageError, match=r"^redis GET: the server refused the ") as info:
                await client.execute("GET", "k")
            assert type(info.value) is StorageError
            assert isinstance(info.value.__cause__, HandshakeRefused)

    async def test_no_password_is_an_error_reply(self, password_server: RedisServer) -> None:
        """Without the password the server answers NOAUTH: a reply error around redis-py's."""
        async with RedisClient.from_url(password_server.url) as client:
            with pytest.raises(
                RedisReplyError, match=r"^redis GET: AuthenticationError: Authentication required"
            ) as info:
                await client.execute("GET", "k")
            assert isinstance(info.value.error, redis.exceptions.AuthenticationError)

    async def test_closed_client(self, redis_server: RedisServer) -> None:
        """Closing fails the calls in flight and every later call with StorageClosedError."""
        client = RedisClient.from_url(redis_server.url, timeout=None)
        await client.execute("PING")
        redis_server.pause()
        errors: list[BaseException] = []

        async def get() -> None:
            try:
                await client.execute("GET", "k")
            except StorageClosedError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            await client.aclose()
        redis_server.resume()
        assert [str(error) for error in errors] == ["redis GET: the client is closed"]
        with pytest.raises(StorageClosedError, match=r"^the redis client is closed$"):
            await client.execute("GET", "k")
        await client.aclose()


class TestPubSub:
    async def test_publish_and_receive(self, redis_url: str) -> None:
        """A subscriber gets every message published after the block starts, in order."""
        async with RedisClient.from_url(redis_url) as client:
            async with client.subscribe("events", b"other") as messages:
                assert client.statistics().subscriptions == 1
                assert await client.publish("events", b"one") == 1
                assert await client.publish("other", "two") == 1
                assert await client.publish("events", b"three") == 1
                received = []
                async for channel, data in messages:
                    received.append((channel, data))
                    if len(received) == 3:
                        break
            assert received == [(b"events", b"one"), (b"other", b"two"), (b"events", b"three")]
            assert client.statistics().subscriptions == 0
            # The server drops the closed connection's subscription on its own
            # time, and nothing tells us when: look (bounded) until it has.
            with trio.fail_after(5):
                while await client.execute("PUBSUB", "NUMSUB", "events") != [b"events", 0]:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            assert await client.publish("events", b"nobody") == 0

    async def test_subscription_lost_when_server_dies(self, redis_server: RedisServer) -> None:
        """A subscriber waiting on a killed server gets StorageUnavailableError."""
        async with (
            RedisClient.from_url(redis_server.url) as client,
            client.subscribe("events") as messages,
        ):
            redis_server.kill()
            with pytest.raises(StorageUnavailableError, match=r"^redis subscription lost: "):
                await messages.__anext__()

    async def test_closing_the_client_ends_subscriptions(self, redis_url: str) -> None:
        """aclose() makes a waiting subscriber raise StorageClosedError."""
        client = RedisClient.from_url(redis_url)
        errors: list[BaseException] = []

        async def listen(task_status: trio.TaskStatus[None]) -> None:
            async with client.subscribe("events") as messages:
                task_status.started()
                try:
                    await messages.__anext__()
                except StorageClosedError as exc:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            await nursery.start(listen)
            await client.aclose()
        assert [str(error) for error in errors] == ["the subscription is closed"]

    async def test_bad_subscriptions(self, redis_url: str) -> None:
        """No channel is a ValueError; an unreachable server is StorageUnavailableError."""
        async with RedisClient.from_url(redis_url) as client:
            with pytest.raises(ValueError, match=r"^subscribe\(\) needs at least one channel$"):
                async with client.subscribe():
                    pass
        url = f"redis://127.0.0.1:{free_loopback_port()}"
        async with RedisClient.from_url(url) as client:
            with pytest.raises(
                StorageUnavailableError, match=r"^redis subscribe: connection lost: OSError\("
            ):
                async with client.subscribe("events"):
                    pass

    async def test_tracking_with_no_channel_hears_the_invalidations_only(
        self, redis_url: str
    ) -> None:
        """subscribe_tracking() with no channel (a cluster's per-master part) names changed keys."""
        async with (
            RedisClient.from_url(redis_url) as client,
            client.subscribe_tracking(prefixes=["tracked:"]) as events,
        ):
            await client.execute("SET", "untracked", "x")
            await client.execute("SET", "tracked:1", "x")
            with trio.fail_after(5):
                assert await events.next_event() == Invalidation((b"tracked:1",))


class TestAddresses:
    def test_parse_tcp_url(self) -> None:
        """Host, port, database and percent-encoded credentials come from the URL."""
        address = RedisAddress.from_url("redis://alice:p%40ss%2Fw@cache.local:6380/3")
        assert address == RedisAddress(
            host="cache.local", port=6380, db=3, username="alice", password="p@ss/w"
        )
        assert "p@ss" not in repr(address)

    def test_parse_unix_url(self) -> None:
        """A unix:// URL gives the socket path and the db query option."""
        address = RedisAddress.from_url("unix:///run/redis.sock?db=2")
        assert (address.path, address.db, address.ssl_context) == ("/run/redis.sock", 2, None)

    def test_parse_tls_url(self) -> None:
        """rediss:// makes a verifying TLS context unless ssl_cert_reqs=none."""
        verifying = RedisAddress.from_url("rediss://cache.local")
        assert verifying.ssl_context is not None
        assert verifying.ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert verifying.ssl_context.check_hostname is True
        lax = RedisAddress.from_url("rediss://cache.local?ssl_cert_reqs=none")
        assert lax.ssl_context is not None
        assert lax.ssl_context.verify_mode == ssl.CERT_NONE
        assert lax.ssl_context.check_hostname is False

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("http://h", r"^Redis URL must specify one of the following schemes"),
            ("redis://h?max_connections=5", r"^unsupported option\(s\) in redis URL: max_conn"),
            ("redis://h?ssl_cert_reqs=none", r"^ssl_\* options in a redis URL need the rediss://"),
            ("rediss://h?ssl_cert_reqs=maybe", r"^ssl_cert_reqs must be none, optional or requ"),
        ],
    )
    def test_bad_urls(self, url: str, message: str) -> None:
        """A URL this client cannot honour is a ValueError saying why."""
        with pytest.raises(ValueError, match=message):
            RedisAddress.from_url(url)

    @pytest.mark.parametrize("timeout", [0, -1, True, "5"])
    def test_bad_timeout(self, timeout: object) -> None:
        """A timeout that is not a positive number or None is a ValueError."""
        with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds or "):
            RedisClient.from_url("redis://h", timeout=timeout)  # type: ignore[arg-type]

    async def test_password_url(self, password_server: RedisServer) -> None:
        """A password in the URL authenticates, as the default user or by name."""
        async with RedisClient.from_url(password_url(password_server)) as client:
            assert await client.execute("SET", "k", "v") == b"OK"
        named = f"redis://default:s3cret%20pass%2Fword@127.0.0.1:{password_server.port}"
        async with RedisClient.from_url(named) as client:
            assert await client.execute("GET", "k") == b"v"

    async def test_database_from_url(self, redis_server: RedisServer) -> None:
        """The URL's database is selected on connect, so db 3 and db 0 are apart."""
        async with (
            RedisClient.from_url(f"redis://127.0.0.1:{redis_server.port}/3") as db3,
            RedisClient.from_url(redis_server.url) as db0,
        ):
            await db3.execute("SET", "k", "three")
            assert await db0.execute("GET", "k") is None
            assert await db3.execute("GET", "k") == b"three"

    async def test_unix_socket(self) -> None:
        """unix:// reaches the server through its unix socket."""
        require_redis_server_binary()
        with RedisServer(unix_socket=True) as server:
            async with RedisClient.from_url(server.unix_url) as client:
                assert await client.execute("SET", "k", "v") == b"OK"
                assert await client.execute("GET", "k") == b"v"

    async def test_tls(self, tmp_path: os.PathLike[str]) -> None:
        """rediss:// speaks TLS; cancelled calls there never shift replies either."""
        require_redis_server_binary()
        cert, key = self_signed_certificate(str(tmp_path))
        tls_port = free_loopback_port()
        args = ["--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key]
        args += ["--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]
        with RedisServer(args) as server:
            context = ssl.create_default_context(cafile=cert)
            url = f"rediss://localhost:{tls_port}/0"
            async with RedisClient.from_url(url, ssl_context=context) as client:
                await client.execute("SET", "k", b"x" * 100_000)
                replies = await client.pipeline([("GET", "k"), ("TYPE", "k")])
                assert replies == [b"x" * 100_000, b"string"]
                await cancellation_storm(client, rounds=2)
            assert server.port != tls_port


async def cancellation_storm(client: RedisClient, *, rounds: int) -> None:
    """Cancel reads at random points, then check every reply, concurrent and sequential."""
    rng = random.Random(20240601)
    values = {
        f"key:{i}": f"value:{i}:".encode() * rng.choice([1, 100, 5000, 30000]) for i in range(200)
    }
    keys = list(values)
    wrong: list[str] = []
    outcomes = {"completed": 0, "cancelled": 0}
    await client.pipeline([("SET", key, value) for key, value in values.items()])

    async def read(picked: list[str], scope: trio.CancelScope) -> None:
        with scope:
            if len(picked) == 1:
                got: object = [await client.execute("GET", picked[0])]
            elif rng.random() < 0.5:
                got = await client.execute("MGET", *picked)
            else:
                got = await client.pipeline([("GET", key) for key in picked])
            if got != [values[key] for key in picked]:
                wrong.append(",".join(picked))
        outcomes["cancelled" if scope.cancelled_caught else "completed"] += 1

    for _ in range(rounds):
        scopes = [trio.CancelScope() for _ in range(300)]
        async with trio.open_nursery() as nursery:
            for scope in scopes:
                nursery.start_soon(read, rng.sample(keys, rng.choice([1, 1, 1, 3, 10])), scope)
            for _ in range(150):
                for _ in range(rng.randrange(4)):
                    await trio.lowlevel.checkpoint()
                rng.choice(scopes).cancel()

    assert wrong == []
    assert outcomes["completed"] + outcomes["cancelled"] == 300 * rounds
    assert outcomes["cancelled"] > 0
    assert outcomes["completed"] > 0

    async def check(key: str) -> None:
        if await client.execute("GET", key) != values[key]:
            wrong.append(key)

    for key in keys:
        await check(key)
    async with trio.open_nursery() as nursery:
        for key in keys * 3:
            nursery.start_soon(check, key)
    assert wrong == []
    stats = client.statistics()
    assert (stats.queued, stats.in_flight, stats.connections_made) == (0, 0, 1)
