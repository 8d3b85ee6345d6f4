"""How long writes stop when the Redis master dies under Sentinel: measured end to end.

Each round starts its own deployment (a master, a replica, three sentinels on
free loopback ports; ``down-after-milliseconds`` 500, ``failover-timeout``
2000, see ``tests/redis_sentinel.py``), puts two ``redis+sentinel://``
clients under load (each a ``backends.RedisClient`` writing ``SET``s in a loop,
one also running ``follow_failovers()``; a failed write is retried after
10 ms, as the write-behind queue would), kills the master with SIGKILL and
measures:

* kill -> promotion: until a sentinel names the replica as the master
  (Sentinel's own detection and election; polled every 10 ms);
* promotion -> first write: until each client's first write lands on the new master;
* kill -> first write: the outage as a writer sees it;
* errors: failed writes per client during the outage (retried).

Then ``SENTINEL FAILOVER`` (a live master demoted): how long until the client
that follows ``+switch-master`` writes to the new master, and until the other
one (which moves on ``READONLY`` once Sentinel demotes the old master) does.

Run: ``python tests/benchmarks/sentinel_failover.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backends import RedisClient, StorageError
from tests.redis_sentinel import SERVICE, SentinelSetup, command

_PAUSE = 0.002
_RETRY = 0.01


class Writer:
    """A client writing in a loop; records when each write landed and where."""

    def __init__(self, url: str, *, follow: bool) -> None:
        self.client = RedisClient.from_url(url, timeout=2.0)
        self.follow = follow
        self.landed: list[tuple[float, tuple[str, int] | None]] = []
        self.errors = 0

    async def run(self, name: str) -> None:
        async with trio.open_nursery() as nursery:
            if self.follow:
                nursery.start_soon(self.client.follow_failovers)
            n = 0
            while True:
                try:
                    await self.client.execute("SET", name, n)
                except StorageError:
                    self.errors += 1
                    await trio.sleep(_RETRY)
                    continue
                self.landed.append((time.monotonic(), self.client.master))
                n += 1
                await trio.sleep(_PAUSE)

    def first_on(self, master: tuple[str, int], after: float) -> float:
        return next(t for t, where in self.landed if where == master and t >= after)


async def wait_for(check: object) -> float:
    """Poll ``check`` every 10 ms (in a thread: it may block); return when it held."""
    assert callable(check)
    with trio.fail_after(30):
        # Polled: the state is other processes', nothing signals its change.
        while not await trio.to_thread.run_sync(check):  # noqa: ASYNC110
            await trio.sleep(0.01)
    return time.monotonic()


async def kill_round() -> dict[str, float]:
    with SentinelSetup() as setup:
        assert setup.replica is not None
        new = ("127.0.0.1", setup.replica.port)
        writers = [Writer(setup.url, follow=True), Writer(setup.url, follow=False)]
        async with trio.open_nursery() as nursery:
            for index, writer in enumerate(writers):
                nursery.start_soon(writer.run, f"w{index}")
            await wait_for(lambda: all(len(w.landed) > 50 for w in writers))
            killed = time.monotonic()
            setup.master.kill()
            promoted = await wait_for(lambda: setup.master_port() == new[1])
            await wait_for(lambda: all(w.landed[-1][1] == new for w in writers))
            nursery.cancel_scope.cancel()
        firsts = [w.first_on(new, killed) for w in writers]
        for writer in writers:
            await writer.client.aclose()
        return {
            "kill -> promotion": promoted - killed,
            "promotion -> first write (slowest client)": max(firsts) - promoted,
            "kill -> first write (slowest client)": max(firsts) - killed,
            "failed writes per client (retried)": statistics.mean(w.errors for w in writers),
        }


async def manual_round() -> dict[str, float]:
    with SentinelSetup() as setup:
        assert setup.replica is not None
        new = ("127.0.0.1", setup.replica.port)
        follower, plain = Writer(setup.url, follow=True), Writer(setup.url, follow=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.run, "f")
            nursery.start_soon(plain.run, "p")
            await wait_for(lambda: len(follower.landed) > 50 and len(plain.landed) > 50)
            asked = time.monotonic()
            command(setup.sentinels[0].port, "SENTINEL", "FAILOVER", SERVICE)
            await wait_for(lambda: plain.landed[-1][1] == new and follower.landed[-1][1] == new)
            nursery.cancel_scope.cancel()
        for writer in (follower, plain):
            await writer.client.aclose()
        return {
            "FAILOVER -> first write, +switch-master follower": follower.first_on(new, asked)
            - asked,
            "FAILOVER -> first write, READONLY only": plain.first_on(new, asked) - asked,
            "failed writes, both clients": follower.errors + plain.errors,
        }


def report(title: str, rounds: list[dict[str, float]]) -> None:
    print(title)
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        print(
            f"  {name:<52} median {statistics.median(values):7.3f}"
            f"  min {min(values):7.3f}  max {max(values):7.3f}"
        )


async def main(rounds: int) -> None:
    kills = [await kill_round() for _ in range(rounds)]
    report(f"kill -9 of the master under two writers, {rounds} rounds (seconds)", kills)
    manual = [await manual_round() for _ in range(rounds)]
    report(f"SENTINEL FAILOVER under two writers, {rounds} rounds (seconds)", manual)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    trio.run(main, parser.parse_args().rounds)
