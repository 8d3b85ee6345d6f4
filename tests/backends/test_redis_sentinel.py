"""A RedisClient on ``redis+sentinel://`` against a real master, replica and three sentinels.

Real time (a failover cannot run on a mock clock): every wait is a condition
with a deadline that fails naming what did not happen.
"""

from __future__ import annotations

import pytest
import trio

from backends import RedisClient, StorageError, StorageUnavailableError
from backends._redis_sentinel import SentinelAddress, SentinelConnector
from tests.redis_sentinel import SERVICE, SentinelSetup, command, eventually, info_field
from tests.redis_server import RedisServer, free_loopback_port

pytestmark = pytest.mark.slow


def our_clients(port: int) -> list[str]:
    """Connections to ``port`` that last ran a data command, the replication link left out."""
    lines = command(port, "CLIENT", "LIST").decode(errors="replace").splitlines()
    return [
        line for line in lines
        if " flags=M " not in line
        and any(f" cmd={name} " in line for name in ("set", "get", "role", "eval"))
    ]  # fmt: skip


async def write_forever(
    client: RedisClient, index: int, written: list[int], errors: list[BaseException], pause: float
) -> None:
    """SET ``w<index>`` in a loop, counting writes in ``written[index]``, keeping every error."""
    while True:
        try:
            await client.execute("SET", f"w{index}", written[index])
        except StorageError as exc:
            errors.append(exc)
        written[index] += 1
        await trio.sleep(pause)


async def test_a_client_finds_the_master_and_follows_a_manual_failover_without_an_error(
    sentinel_setup: SentinelSetup,
) -> None:
    """SENTINEL FAILOVER demotes a live master: both writers move, none sees an error.

    One writer follows ``+switch-master``; the other does not and moves when
    the demoted master answers READONLY (the write is sent again, once, to
    the new master).  Afterwards no connection of ours is left on the old master.
    """
    setup = sentinel_setup
    old, new = setup.master, setup.replica
    assert new is not None
    errors: list[BaseException] = []
    written = [0, 0]
    async with (
        RedisClient.from_url(setup.url, timeout=5.0) as follower,
        RedisClient.from_url(setup.url, timeout=5.0) as plain,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(follower.follow_failovers)

        nursery.start_soon(write_forever, follower, 0, written, errors, 0.002)
        nursery.start_soon(write_forever, plain, 1, written, errors, 0.002)
        await eventually("the first writes", lambda: min(written) > 10, 5)
        assert follower.master == plain.master == ("127.0.0.1", old.port)
        assert "+OK" in command(setup.sentinels[0].port, "SENTINEL", "FAILOVER", SERVICE).decode()
        await eventually(
            "the replica's promotion",
            lambda: info_field(new.port, "replication", "role") == "master",
            10,
        )
        await eventually(
            "the follower moving on +switch-master",
            lambda: follower.master == ("127.0.0.1", new.port),
            5,
        )
        # Sentinel demotes a live old master only after ~10 s (it waits for
        # it to report its role for 8 s); until then the plain client, which
        # does not follow +switch-master, still writes there.
        await eventually(
            "the old master's demotion",
            lambda: info_field(old.port, "replication", "role") == "slave",
            20,
        )
        await eventually(
            "the plain client moving on READONLY",
            lambda: plain.master == ("127.0.0.1", new.port),
            5,
        )
        before = list(written)
        await eventually(
            "writes after the demotion",
            lambda: min(a - b for a, b in zip(written, before, strict=True)) > 20,
            5,
        )
        await eventually(
            "our connections leaving the old master", lambda: not our_clients(old.port), 5
        )
        nursery.cancel_scope.cancel()
    assert errors == [], [repr(e) for e in errors]


async def test_the_role_check_refuses_a_replica() -> None:
    """A server that is not a master (what a sentinel with stale news may name) is not used."""
    with (
        RedisServer() as master,
        RedisServer(("--replicaof", "127.0.0.1", str(master.port))) as replica,
    ):
        connector = SentinelConnector(SentinelAddress(((("127.0.0.1", 1)),), "svc"))
        assert await connector._open_master("127.0.0.1", replica.port) is None
        stream = await connector._open_master("127.0.0.1", master.port)
        assert stream is not None
        await stream.aclose()
        assert connector.master == ("127.0.0.1", master.port)


async def test_no_sentinel_reachable_fails_within_the_timeout() -> None:
    """Every sentinel down: the command keeps asking, then fails as unavailable."""
    ports = (free_loopback_port(), free_loopback_port())
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/svc"
    async with RedisClient.from_url(url, timeout=0.3) as client:
        with pytest.raises(StorageUnavailableError, match="could not connect"):
            await client.execute("PING")
        assert client.master is None


async def test_connections_killed_on_the_master_are_reopened_and_the_commands_sent_again(
    sentinel_setup: SentinelSetup,
) -> None:
    """Sentinel ends every client of a master it demotes (CLIENT KILL TYPE normal).

    A command in flight on such a connection is sent again, once, on a new
    connection to the master the sentinels name: the callers see no error.
    """
    setup = sentinel_setup
    errors: list[BaseException] = []
    written = [0, 0, 0, 0]
    async with (
        RedisClient.from_url(setup.url, timeout=5.0) as client,
        trio.open_nursery() as nursery,
    ):
        for index in range(len(written)):
            nursery.start_soon(write_forever, client, index, written, errors, 0)
        for _ in range(5):
            before = sum(written)
            await eventually("writes", lambda b=before: sum(written) > b + 50, 5)  # type: ignore[misc]
            killed = command(setup.master.port, "CLIENT", "KILL", "TYPE", "normal")
            assert int(killed[1:]) >= 1  # ":<count>": our connection was among them
        before = sum(written)
        await eventually("writes after the last kill", lambda: sum(written) > before + 50, 5)
        made = client.statistics().connections_made
        nursery.cancel_scope.cancel()
    assert errors == []
    assert made > 1  # the killed connections were replaced
