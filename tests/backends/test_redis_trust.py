"""RedisClient on a network and a server it does not trust: refused commands, a half-open
connection, TLS verification failures, CLIENT SETINFO and the reconnect hook.

Every test runs against its own real redis-server; the half-open network is a loopback
proxy the test controls (tests/tcp_proxy.py).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from backends import (
    RedisCommandRefusedError,
    RedisStorage,
    StorageClosedError,
    StorageTLSError,
    StorageUnavailableError,
    Subscription,
)
from backends._redis_address import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    lib_version,
)
from backends._redis_client import RedisClient, RedisReplyError
from backends._resp import pack_command
from tests.redis_fixtures import require_redis_server_binary
from tests.redis_server import RedisServer, free_loopback_port
from tests.tcp_proxy import open_tcp_proxy
from tests.tls_certs import self_signed_certificate

SHARED = "the connection that every caller shares"
PING = pack_command(("PING",))
SETINFO = pack_command(("CLIENT", "SETINFO", "lib-name", "stackquery")) + pack_command(
    ("CLIENT", "SETINFO", "lib-ver", lib_version())
)


@pytest.fixture
def jumpy_clock() -> trio.testing.MockClock:
    """A mock clock that jumps after 100 ms of real idleness, so real replies arrive first."""
    return trio.testing.MockClock(autojump_threshold=0.1)


@attrs.frozen
class TLSServer:
    """A redis-server with a TLS port, its certificate (its own CA), and an unrelated CA."""

    server: RedisServer
    tls_port: int
    ca: str
    other_ca: str


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TLSServer]:
    """A redis-server speaking TLS with a fresh self-signed certificate for 'localhost'."""
    require_redis_server_binary()
    (tmp_path / "server").mkdir()
    (tmp_path / "other").mkdir()
    cert, key = self_signed_certificate(str(tmp_path / "server"))
    other_ca, _ = self_signed_certificate(str(tmp_path / "other"))
    tls_port = free_loopback_port()
    args = ["--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key]
    args += ["--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]
    with RedisServer(args) as server:
        yield TLSServer(server, tls_port, cert, other_ca)


async def next_message(messages: Subscription, *, within: float = 60.0) -> tuple[bytes, bytes]:
    """The subscription's next message, failing the test after ``within`` (clock) seconds."""
    with trio.fail_after(within):
        return await messages.__anext__()


async def message_after_quiet(
    client: RedisClient, messages: Subscription, seconds: float
) -> tuple[bytes, bytes]:
    """Wait for a message on "events" while ``seconds`` pass in silence, then publish "late"."""
    received: list[tuple[bytes, bytes]] = []

    async def receive_one() -> None:
        received.append(await next_message(messages))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_one)
        await trio.sleep(seconds)
        assert await client.publish("events", "late") == 1
    (message,) = received
    return message


@asynccontextmanager
async def waiting_for_reconnect(client: RedisClient) -> AsyncIterator[trio.Event]:
    """Run a task blocked in ``client.wait_reconnected()``; the event is set once it returns."""
    woken = trio.Event()

    async def waiter() -> None:
        await client.wait_reconnected()
        woken.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        yield woken


def proxied_url(port: int) -> str:
    """The redis:// URL of a proxy on ``port``."""
    return f"redis://127.0.0.1:{port}/0"


def sockets_connected_to(port: int) -> list[socket.socket]:
    """Duplicates of this process's sockets whose peer is 127.0.0.1:``port`` (Linux /proc)."""
    inodes: dict[int, int] = {}  # socket inode -> one fd; listed before any dup is made
    for name in os.listdir("/proc/self/fd"):
        try:
            status = os.fstat(int(name))
        except OSError:
            continue
        if stat.S_ISSOCK(status.st_mode):
            inodes.setdefault(status.st_ino, int(name))
    found = []
    for fd in inodes.values():
        sock = socket.socket(fileno=os.dup(fd))
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        if isinstance(peer, tuple) and peer[:2] == ("127.0.0.1", port):
            found.append(sock)
        else:
            sock.close()
    return found


def keepalive_settings(sock: socket.socket) -> tuple[int, int, int, int]:
    """SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT of ``sock``."""
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


class TestRefusedCommands:
    @pytest.mark.parametrize(
        ("command", "refused", "message"),
        [
            (
                (b"client", b"reply", b"off"),
                "CLIENT REPLY",
                f"CLIENT REPLY would make the server skip replies on {SHARED}, "
                "handing one caller's reply to another",
            ),
            (
                ("Client", "Reply", "SKIP"),
                "CLIENT REPLY",
                f"CLIENT REPLY would make the server skip replies on {SHARED}, "
                "handing one caller's reply to another",
            ),
            (
                ("CLIENT", "TRACKING", "on"),
                "CLIENT TRACKING",
                f"CLIENT TRACKING would change the key tracking of {SHARED}",
            ),
            (
                ("client", "caching", "yes"),
                "CLIENT CACHING",
                f"CLIENT CACHING would change the key tracking of another caller's "
                f"command on {SHARED}",
            ),
            (
                (b"CLIENT", "SETNAME", "me"),
                "CLIENT SETNAME",
                f"CLIENT SETNAME would rename {SHARED} (and be lost on reconnect)",
            ),
            (
                ("CLIENT", "SETINFO", "lib-name", "mine"),
                "CLIENT SETINFO",
                f"CLIENT SETINFO would change what {SHARED} tells the server about its library",
            ),
            (
                ("CLIENT", "NO-EVICT", "on"),
                "CLIENT NO-EVICT",
                f"CLIENT NO-EVICT would change the eviction mode of {SHARED}",
            ),
            (
                ("client", "no-touch", "on"),
                "CLIENT NO-TOUCH",
                f"CLIENT NO-TOUCH would change how every caller's reads on {SHARED} touch keys",
            ),
            (
                ("hello", 3),
                "HELLO",
                f"HELLO would change the protocol or the login of {SHARED}",
            ),
            (("RESET",), "RESET", f"RESET would reset {SHARED}"),
            ((b"quit",), "QUIT", f"QUIT would close {SHARED}"),
            (
                ("MONITOR",),
                "MONITOR",
                f"MONITOR would turn {SHARED} into a stream of every command the server runs",
            ),
            (
                ("auth", "pw"),
                "AUTH",
                "AUTH cannot run on the shared connection; put it in the redis URL",
            ),
            (
                ("select", 1),
                "SELECT",
                "SELECT cannot run on the shared connection; put it in the redis URL",
            ),
            (
                ("SUBSCRIBE", "c"),
                "SUBSCRIBE",
                "SUBSCRIBE cannot run on the shared connection; use RedisClient.subscribe()",
            ),
            (
                (b"psubscribe", "c*"),
                "PSUBSCRIBE",
                "PSUBSCRIBE cannot run on the shared connection; use RedisClient.subscribe()",
            ),
            (
                ("SSUBSCRIBE", "c"),
                "SSUBSCRIBE",
                "SSUBSCRIBE cannot run on the shared connection; use RedisClient.subscribe()",
            ),
            (
                ("unsubscribe",),
                "UNSUBSCRIBE",
                "UNSUBSCRIBE cannot run on the shared connection; leave the subscribe() block",
            ),
            (
                ("PUNSUBSCRIBE", "c*"),
                "PUNSUBSCRIBE",
                "PUNSUBSCRIBE cannot run on the shared connection; leave the subscribe() block",
            ),
            (
                ("SUNSUBSCRIBE",),
                "SUNSUBSCRIBE",
                "SUNSUBSCRIBE cannot run on the shared connection; leave the subscribe() block",
            ),
            (
                ("WATCH", "k"),
                "WATCH",
                f"WATCH would make other callers' transactions on {SHARED} fail",
            ),
            (
                ("ASKING",),
                "ASKING",
                f"ASKING would apply to another caller's next command on {SHARED}",
            ),
            (
                ("READONLY",),
                "READONLY",
                f"READONLY would change the cluster read mode of {SHARED}",
            ),
            (
                ("PSYNC", "?", -1),
                "PSYNC",
                f"PSYNC would turn {SHARED} into a replication stream",
            ),
            ((b"BLPOP", "q", 0), "BLPOP", f"BLPOP blocks {SHARED}"),
            (
                ("XREAD", "COUNT", 1, "block", 0, "STREAMS", "s", "$"),
                "XREAD BLOCK",
                f"XREAD BLOCK blocks {SHARED}",
            ),
            (
                (b"xreadgroup", "GROUP", "g", "c", b"BLOCK", 10, "STREAMS", "s", ">"),
                "XREADGROUP BLOCK",
                f"XREADGROUP BLOCK blocks {SHARED}",
            ),
            (
                ("MULTI",),
                "MULTI",
                "MULTI cannot run alone on the shared connection; use RedisClient.pipeline()",
            ),
        ],
    )
    async def test_refused_before_anything_is_sent(
        self, redis_url: str, command: tuple[str | bytes | int, ...], refused: str, message: str
    ) -> None:
        """A command that would change or block the shared connection is refused, unsent."""
        async with RedisClient.from_url(redis_url) as client:
            with pytest.raises(RedisCommandRefusedError, match=f"^{re.escape(message)}$") as info:
                await client.execute(*command)
            assert isinstance(info.value, ValueError)
            assert info.value.command == refused
            if refused not in ("MULTI",):
                with pytest.raises(RedisCommandRefusedError, match=f"^{re.escape(message)}$"):
                    await client.pipeline([("SET", "k", "v"), command])
            assert client.statistics().connections_made == 0

    async def test_reading_forms_are_allowed(self, redis_url: str) -> None:
        """CLIENT subcommands that only read, and XREAD without BLOCK, run as usual."""
        async with RedisClient.from_url(redis_url) as client:
            client_id = await client.execute("client", "id")
            assert isinstance(client_id, int)
            assert await client.execute("CLIENT", "GETNAME") is None
            info = await client.execute(b"CLIENT", b"INFO")
            assert isinstance(info, bytes) and info.startswith(b"id=%d " % client_id)
            await client.execute("XADD", "block", "*", "f", "v")
            # A stream named "block" after STREAMS is a key, not the BLOCK option.
            reply = await client.pipeline([("XREAD", "STREAMS", "block", "0")])
            assert isinstance(reply[0], list) and reply[0][0][0] == b"block"


class TestHalfOpenConnection:
    async def test_every_tcp_socket_has_keepalive(self, redis_server: RedisServer) -> None:
        """The command connection and a subscription's both have TCP keepalive, 15/5/3 s."""
        async with (
            RedisClient.from_url(redis_server.url) as client,
            client.subscribe("events"),
        ):
            await client.execute("PING")
            sockets = sockets_connected_to(redis_server.port)
            try:
                settings = [keepalive_settings(sock) for sock in sockets]
            finally:
                for sock in sockets:
                    sock.close()
        expected = (1, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        assert settings == [expected, expected]
        assert expected == (1, 15, 5, 3)

    async def test_deaf_subscription_is_lost_then_resubscribed(
        self, redis_server: RedisServer, jumpy_clock: trio.testing.MockClock
    ) -> None:
        """A black-holed subscription is lost 20 s after it last heard the server (one unanswered
        PING); subscribing again reconnects and hears the next message."""
        async with (
            open_tcp_proxy(redis_server.port) as proxy,
            RedisClient.from_url(proxied_url(proxy.port)) as client,
            RedisClient.from_url(redis_server.url) as publisher,
        ):
            async with client.subscribe("events") as messages:
                assert await publisher.publish("events", "before") == 1
                assert await next_message(messages) == (b"events", b"before")
                heard_at = trio.current_time()
                proxy.black_hole()
                with pytest.raises(
                    StorageUnavailableError,
                    match=r"^redis subscription lost: TimeoutError\('no answer to PING within "
                    r"10\.0 s'\)$",
                ) as info:
                    await next_message(messages, within=30.0)
                assert trio.current_time() == heard_at + 20.0
                assert isinstance(info.value.__cause__, TimeoutError)
                assert proxy.links[0].dropped == len(PING)
                assert client.statistics().subscriptions == 0
                with pytest.raises(StorageUnavailableError, match=r"^redis subscription lost: "):
                    await next_message(messages)
            async with client.subscribe("events") as messages:
                assert client.statistics().subscriptions == 1
                assert await publisher.publish("events", "after") == 1
                assert await next_message(messages) == (b"events", b"after")
            assert proxy.accepted == 2

    async def test_quiet_subscription_pings_and_stays(
        self, redis_server: RedisServer, jumpy_clock: trio.testing.MockClock
    ) -> None:
        """A healthy subscription silent for 35 s sends three PINGs, and hears the next message."""
        async with (
            open_tcp_proxy(redis_server.port) as proxy,
            RedisClient.from_url(proxied_url(proxy.port)) as client,
            client.subscribe("events") as messages,
        ):
            assert await message_after_quiet(client, messages, 35.0) == (b"events", b"late")
            assert proxy.links[0].sent_upstream.count(PING) == 3
            assert client.statistics().subscriptions == 1

    async def test_ping_interval_none_never_pings(
        self, redis_server: RedisServer, jumpy_clock: trio.testing.MockClock
    ) -> None:
        """With ping_interval=None a waiting subscription sends nothing, however long it waits."""
        async with (
            open_tcp_proxy(redis_server.port) as proxy,
            RedisClient.from_url(proxied_url(proxy.port), ping_interval=None) as client,
            client.subscribe("events") as messages,
        ):
            assert client.ping_interval is None
            with trio.move_on_after(1000.0):
                await messages.__anext__()
            assert proxy.links[0].sent_upstream == SETINFO + pack_command(("SUBSCRIBE", "events"))

    @pytest.mark.parametrize("interval", [0, -1.0, True, "10"])
    def test_bad_ping_interval(self, interval: object) -> None:
        """A ping_interval not a positive number or None is a ValueError, for stores too."""
        message = r"^ping_interval must be a positive number of seconds or None, not "
        with pytest.raises(ValueError, match=message):
            RedisClient.from_url("redis://h", ping_interval=interval)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            RedisStorage("redis://h", ping_interval=interval)  # type: ignore[arg-type]

    async def test_half_open_command_connection_times_out_and_reconnects(
        self, redis_server: RedisServer, jumpy_clock: trio.testing.MockClock
    ) -> None:
        """A command on a black-holed connection fails after exactly its timeout; the next one
        opens a new connection and works."""
        async with (
            open_tcp_proxy(redis_server.port) as proxy,
            RedisClient.from_url(proxied_url(proxy.port), timeout=2.5) as client,
        ):
            await client.execute("SET", "k", "v")
            proxy.black_hole()
            start = trio.current_time()
            with pytest.raises(
                StorageUnavailableError,
                match=r"^redis GET: connection lost: TimeoutError\('no reply from redis within "
                r"2\.5 s'\)$",
            ):
                await client.execute("GET", "k")
            assert trio.current_time() == start + 2.5
            assert client.statistics().connected is False
            assert await client.execute("GET", "k") == b"v"
            assert (client.statistics().connections_made, proxy.accepted) == (2, 2)

    async def test_abandoned_half_open_connection_is_replaced_before_use(
        self, redis_server: RedisServer, jumpy_clock: trio.testing.MockClock
    ) -> None:
        """A black-holed connection whose only caller gave up (its own 1 s deadline, as the L2
        tier's) is replaced once the reply is overdue: the next caller succeeds at once."""
        async with (
            open_tcp_proxy(redis_server.port) as proxy,
            RedisClient.from_url(proxied_url(proxy.port), timeout=2.5) as client,
        ):
            await client.execute("SET", "k", "v")
            proxy.black_hole()
            with trio.move_on_after(1.0):
                await client.execute("GET", "k")
            assert client.statistics().in_flight == 1
            await trio.sleep(10.0)
            start = trio.current_time()
            assert await client.execute("GET", "k") == b"v"
            assert trio.current_time() == start
            assert (client.statistics().connections_made, proxy.accepted) == (2, 2)


class TestTLSVerification:
    async def test_unknown_ca_is_a_tls_error_never_retried(self, tls_server: TLSServer) -> None:
        """A certificate from a CA the client does not trust: StorageTLSError with the SSL error
        chained; later commands and subscriptions raise it again without connecting."""
        context = ssl.create_default_context(cafile=tls_server.other_ca)
        async with open_tcp_proxy(tls_server.tls_port) as proxy:
            url = f"rediss://localhost:{proxy.port}/0"
            async with RedisClient.from_url(url, ssl_context=context) as client:
                with pytest.raises(
                    StorageTLSError,
                    match=r"^redis GET: TLS certificate or hostname verification failed: "
                    r"self[- ]signed certificate; not retried until the TLS settings or the "
                    r"server's certificate are fixed$",
                ) as info:
                    await client.execute("GET", "k")
                assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
                assert not isinstance(info.value, StorageUnavailableError)
                with pytest.raises(StorageTLSError, match=r"^redis SET: TLS certificate ") as again:
                    await client.execute("SET", "k", "v")
                assert again.value.__cause__ is info.value.__cause__
                with pytest.raises(StorageTLSError, match=r"^redis subscribe: TLS certificate "):
                    async with client.subscribe("events"):
                        pass
                assert (client.statistics().connections_made, proxy.accepted) == (1, 1)

    async def test_hostname_mismatch_is_a_tls_error(self, tls_server: TLSServer) -> None:
        """The right CA but a host the certificate does not name: StorageTLSError saying so."""
        context = ssl.create_default_context(cafile=tls_server.ca)
        url = f"rediss://127.0.0.1:{tls_server.tls_port}/0"
        async with RedisClient.from_url(url, ssl_context=context) as client:
            with pytest.raises(
                StorageTLSError,
                match=r"^redis subscribe: TLS certificate or hostname verification failed: "
                r"IP address mismatch, certificate is not valid for '127\.0\.0\.1'",
            ) as info:
                async with client.subscribe("events"):
                    pass
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)

    async def test_store_keeps_the_kind_and_the_right_ca_works(self, tls_server: TLSServer) -> None:
        """RedisStorage raises StorageTLSError as its own; with the server's CA the URL works."""
        url = f"rediss://localhost:{tls_server.tls_port}/0?ssl_ca_certs="
        async with RedisStorage(url + tls_server.other_ca) as store:
            with pytest.raises(
                StorageTLSError, match=r"^RedisStorage\.get: redis GET: TLS certificate "
            ) as info:
                await store.get("k")
            assert (info.value.backend, info.value.operation) == ("RedisStorage", "get")
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        async with RedisStorage(url + tls_server.ca) as store:
            await store.set("k", b"v", None)
            assert await store.get("k") == b"v"

    async def test_tls_subscription_survives_pings(
        self, tls_server: TLSServer, jumpy_clock: trio.testing.MockClock
    ) -> None:
        """Over TLS, waits interrupted to send PING leave the stream intact: 25 quiet s, then a
        message arrives."""
        context = ssl.create_default_context(cafile=tls_server.ca)
        url = f"rediss://localhost:{tls_server.tls_port}/0"
        async with (
            RedisClient.from_url(url, ssl_context=context) as client,
            client.subscribe("events") as messages,
        ):
            assert await message_after_quiet(client, messages, 25.0) == (b"events", b"late")


class TestClientSetinfo:
    async def test_handshake_announces_and_a_refusal_is_not_repeated(self) -> None:
        """The first connection writes CLIENT SETINFO lib-name and lib-ver; a server that refuses
        them is not asked again on the next connection, and commands work."""
        require_redis_server_binary()
        # Without a CLIENT command every server refuses SETINFO, whatever its version.
        with RedisServer(["--rename-command", "CLIENT", ""]) as server:
            async with (
                open_tcp_proxy(server.port) as proxy,
                RedisClient.from_url(proxied_url(proxy.port)) as client,
            ):
                assert await client.execute("SET", "k", "v") == b"OK"
                async with client.subscribe("events"):
                    assert await client.execute("GET", "k") == b"v"
        commands, subscription = (bytes(link.sent_upstream) for link in proxy.links)
        assert commands.startswith(SETINFO + pack_command(("SET", "k", "v")))
        assert subscription == pack_command(("SUBSCRIBE", "events"))

    async def test_setinfo_after_auth_and_select(self) -> None:
        """With a password and a database the four handshake commands go out together, in order."""
        require_redis_server_binary()
        with RedisServer(["--requirepass", "pw"]) as server:
            async with open_tcp_proxy(server.port) as proxy:
                url = f"redis://:pw@127.0.0.1:{proxy.port}/2"
                async with RedisClient.from_url(url) as client:
                    assert await client.execute("PING") == b"PONG"
        handshake = pack_command(("AUTH", "pw")) + pack_command(("SELECT", 2)) + SETINFO
        assert bytes(proxy.links[0].sent_upstream) == handshake + pack_command(("PING",))

    async def test_server_view(self, redis_url: str) -> None:
        """Redis 7.2+ lists lib-name=stackquery and lib-ver in CLIENT INFO; older servers (7.0
        here) know neither, and the client works without them."""
        async with RedisClient.from_url(redis_url) as client:
            server_info = await client.execute("INFO", "server")
            assert isinstance(server_info, bytes)
            found = re.search(rb"redis_version:(\d+)\.(\d+)", server_info)
            assert found is not None
            info = await client.execute("CLIENT", "INFO")
            assert isinstance(info, bytes)
            if (int(found[1]), int(found[2])) >= (7, 2):
                assert f" lib-name=stackquery lib-ver={lib_version()} ".encode() in info
            else:
                assert b"lib-name" not in info


class TestWaitReconnected:
    async def test_not_woken_by_an_open_connection(self, redis_url: str) -> None:
        """A waiter is not woken by commands on the open connection, nor by their error replies;
        the next connection that opens (a subscription's here) wakes it."""
        async with RedisClient.from_url(redis_url) as client:
            await client.execute("SET", "text", "v")
            async with waiting_for_reconnect(client) as woken:
                assert await client.execute("GET", "text") == b"v"
                with pytest.raises(RedisReplyError):
                    await client.execute("LPUSH", "text", "x")
                await trio.testing.wait_all_tasks_blocked()
                assert not woken.is_set()
                async with client.subscribe("events"):
                    with trio.fail_after(5):
                        await woken.wait()
            assert client.statistics().connections_made == 1

    async def test_woken_by_the_next_connect_after_an_outage(
        self, redis_server: RedisServer
    ) -> None:
        """After a failure a waiter sleeps while Redis is down, and wakes when another task's
        command gets through."""
        async with RedisClient.from_url(redis_server.url) as client:
            await client.execute("PING")
            redis_server.kill()
            with pytest.raises(StorageUnavailableError):
                await client.execute("PING")
            async with waiting_for_reconnect(client) as woken:
                with pytest.raises(StorageUnavailableError):
                    await client.execute("PING")
                await trio.testing.wait_all_tasks_blocked()
                assert not woken.is_set()
                redis_server.restart()
                assert await client.execute("PING") == b"PONG"
                with trio.fail_after(5):
                    await woken.wait()

    async def test_closing_wakes_waiters_with_an_error(self) -> None:
        """aclose() makes a waiter raise StorageClosedError, and so does every later call."""
        client = RedisClient.from_url(f"redis://127.0.0.1:{free_loopback_port()}")
        errors: list[str] = []

        async def waiter() -> None:
            with pytest.raises(StorageClosedError) as info:
                await client.wait_reconnected()
            errors.append(str(info.value))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await client.aclose()
        assert errors == ["the redis client is closed"]
        with pytest.raises(StorageClosedError, match=r"^the redis client is closed$"):
            await client.wait_reconnected()
