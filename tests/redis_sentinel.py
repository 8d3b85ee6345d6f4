"""A throwaway Sentinel deployment: a master, a replica and three sentinels on free loopback ports.

Built from :class:`tests.redis_server.RedisServer` (never the system Redis).
Failovers are made fast (``down-after-milliseconds`` 500, ``failover-timeout``
2000), so that a test can kill the master and see the replica promoted in a
couple of seconds.  Every wait is bounded and fails with a message saying what
did not happen.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from types import TracebackType

import pytest
import trio

from tests.redis_server import RedisServer, RedisServerError

SERVICE = "sq-master"
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 2000
_READY_TIMEOUT = 15.0
_FAST_SYNC = ("--repl-diskless-sync-delay", "0")
"""A replica (re)syncs at once instead of after the default 5 s."""


class SentinelServer(RedisServer):
    """One ``redis-server --sentinel`` watching ``master_port``, with its own config file."""

    def __init__(self, master_port: int, *, quorum: int = 2) -> None:
        super().__init__()
        self.master_port = master_port
        self.quorum = quorum

    def _command(self) -> list[str]:
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            "loglevel warning\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        return [self.binary, str(config), "--sentinel"]


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one inline command to ``127.0.0.1:port`` and return its raw reply (blocking).

    For test set-up and checks only, outside trio (reads until the reply looks complete).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(b" ".join(arg.encode() for arg in args) + b"\r\n")
        data = b""
        while True:
            chunk = conn.recv(65536)
            data += chunk
            if not chunk or _complete(data):
                return data


def _complete(data: bytes) -> bool:
    # Enough for the replies used here: a line, a bulk string or a flat array of them.
    if data[:1] in b"+-:":
        return data.endswith(b"\r\n")
    if data[:1] == b"$":
        head, _, rest = data.partition(b"\r\n")
        return int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2
    if data[:1] == b"*":
        head, _, rest = data.partition(b"\r\n")
        count = int(head[1:])
        lines = rest.split(b"\r\n")
        return count <= 0 or len(lines) > 2 * count
    return False


def info_field(port: int, section: str, field: str) -> str | None:
    """One ``field:value`` of ``INFO section`` on the server at ``port``; ``None`` if absent."""
    for line in command(port, "INFO", section).decode().splitlines():
        name, sep, value = line.partition(":")
        if sep and name == field:
            return value.strip()
    return None


def wait_until(what: str, check: object, timeout: float = _READY_TIMEOUT) -> None:
    """Poll ``check()`` every 20 ms until it is true; raise naming ``what`` after ``timeout``."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError as exc:  # a server not up yet
            last = exc
        time.sleep(0.02)
    raise RedisServerError(f"{what} did not happen within {timeout} s (last error: {last!r})")


async def eventually(what: str, check: Callable[[], bool], seconds: float) -> None:
    """In trio: poll ``check`` (in a thread: it may block) until true, or fail the test.

    A connection error counts as "not yet": a server changing its role (a replica
    promoted in a failover) resets the connections it has open, a poll's among them.
    """
    last: OSError | None = None
    with trio.move_on_after(seconds):
        # Polled: the state is another process's, and nothing signals its change.
        while True:
            try:
                if await trio.to_thread.run_sync(check):
                    return
            except OSError as exc:
                last = exc
            await trio.sleep(0.02)
    pytest.fail(f"{what} did not happen within {seconds} s (last error: {last!r})")


class SentinelSetup:
    """A master, a replica of it, and three sentinels that agree about both.

    Use as a context manager: on entry every process runs, the replica is in
    sync, and every sentinel knows the replica and the two other sentinels (so
    that a failover can start as soon as the master is down).
    """

    def __init__(self, sentinels: int = 3) -> None:
        self.master = RedisServer(_FAST_SYNC)
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelServer] = []
        self._sentinel_count = sentinels

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL naming every sentinel and the service."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def servers(self) -> list[RedisServer]:
        """The master and the replica (whichever is the master now)."""
        assert self.replica is not None
        return [self.master, self.replica]

    def start(self) -> None:
        """Start everything and wait until the sentinels can fail over.

        Raises:
            RedisServerError: a process did not start, or the deployment did
                not settle within 15 s.
        """
        self.master.start()
        self.replica = RedisServer((*_FAST_SYNC, "--replicaof", "127.0.0.1", str(self.master.port)))
        self.replica.start()
        replica = self.replica
        wait_until(
            "the replica syncing with the master",
            lambda: info_field(replica.port, "replication", "master_link_status") == "up",
        )
        for _ in range(self._sentinel_count):
            sentinel = SentinelServer(self.master.port)
            sentinel.start()
            self.sentinels.append(sentinel)
        others = str(self._sentinel_count - 1)
        for sentinel in self.sentinels:
            port = sentinel.port
            wait_until(
                f"sentinel {port} seeing the replica and {others} other sentinels",
                lambda port=port: (  # type: ignore[misc]
                    info_field(port, "sentinel", "master0") or ""
                ).endswith(f"slaves=1,sentinels={self._sentinel_count}"),
            )

    def master_port(self) -> int:
        """The port of the master as the first sentinel that answers names it now."""
        for sentinel in self.sentinels:
            try:
                reply = command(sentinel.port, "SENTINEL", "get-master-addr-by-name", SERVICE)
            except OSError:
                continue
            return int(reply.split(b"\r\n")[4])
        raise RedisServerError("no sentinel answered")

    def role(self, server: RedisServer) -> str:
        """``master`` or ``slave``, as ``server`` says itself."""
        return info_field(server.port, "replication", "role") or "?"

    def stop(self) -> None:
        """Kill every process and remove their directories; idempotent."""
        for server in [*self.sentinels, *([self.replica] if self.replica else []), self.master]:
            server.stop()

    def __enter__(self) -> SentinelSetup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = [
    "SERVICE",
    "SentinelServer",
    "SentinelSetup",
    "command",
    "eventually",
    "info_field",
    "wait_until",
]
