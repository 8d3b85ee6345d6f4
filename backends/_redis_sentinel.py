"""Finding the master through Redis Sentinel, and following it when it moves.

``redis+sentinel://[user:pass@]host:port[,host:port...]/service_name[/db]``
names the sentinels, not the master.  Every new connection asks them where
the master is (``SENTINEL get-master-addr-by-name``), connects there, and
checks with ``ROLE`` that the server it reached is a master, so that a
connection never lands on a demoted master (a write there would be lost on
its resync, or refused with ``READONLY``).  While no master can be reached
(the failover in progress) it keeps asking until the caller's deadline.

The credentials and the database are the master's; the sentinels are asked
without ``AUTH`` and without TLS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final
from urllib.parse import unquote

import attrs
import trio

from ._redis_address import RedisAddress, RedisConnector, enable_keepalive
from ._redis_connection import close_now
from ._resp import (
    NOT_ENOUGH_DATA,
    CommandArg,
    RedisReply,
    ReplyReader,
    new_reply_reader,
    pack_command,
)

SENTINEL_SCHEME: Final = "redis+sentinel"
DEFAULT_SENTINEL_PORT: Final = 26379
SWITCH_MASTER_CHANNEL: Final = "+switch-master"

_RETRY_PAUSE: Final = 0.05
"""Seconds between two rounds of asking the sentinels while no master answers."""
_SENTINEL_TIMEOUT: Final = 1.0
"""Seconds one sentinel may take to answer, so that a dead one does not hold up the others."""
_MAX_REPLY_BYTES: Final = 1 << 16
"""A sentinel's or ROLE's reply longer than this is not one: the connection is dropped."""


@attrs.frozen
class SentinelAddress:
    """The sentinels that know where the master of ``service_name`` is, and how to log in there."""

    sentinels: tuple[tuple[str, int], ...]
    """``(host, port)`` of every sentinel, in the order they are asked first."""
    service_name: str
    """The name the sentinels monitor the master under (``sentinel monitor <name> ...``)."""
    db: int = 0
    """The database selected on every connection to the master."""
    username: str | None = None
    """ACL user for ``AUTH`` on the master (``None``: the default user)."""
    password: str | None = attrs.field(default=None, repr=False)
    """Password for ``AUTH`` on the master (``None``: no ``AUTH``)."""

    @classmethod
    def from_url(cls, url: str) -> SentinelAddress:
        """Parse ``redis+sentinel://[user:pass@]host:port[,host:port...]/service_name[/db]``.

        A sentinel without a port is on 26379.

        Raises:
            ValueError: another scheme, no sentinel, no service name, a bad
                port or database number, or a query string (no option is
                supported).
        """
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != SENTINEL_SCHEME:
            raise ValueError(f"a sentinel URL starts with {SENTINEL_SCHEME}://, not {url!r:.80}")
        if "?" in rest or "#" in rest:
            raise ValueError("a redis+sentinel:// URL takes no query options")
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
            if not colon:  # redis-py reads "redis://secret@host" as a password too
                username, password = None, unquote(user)
        sentinels = tuple(_host_port(part) for part in hosts.split(","))
        parts = path.split("/") if path else []
        if not parts or not parts[0]:
            raise ValueError("a redis+sentinel:// URL needs its service name: .../service_name")
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ValueError(f"a redis+sentinel:// URL ends with /service_name[/db], not /{path}")
        db = int(parts[1]) if len(parts) == 2 else 0
        return cls(sentinels, unquote(parts[0]), db, username, password)

    def master_address(self, host: str, port: int) -> RedisAddress:
        """The address of the master at ``host:port``, with this address's login and database."""
        return RedisAddress(
            host=host, port=port, db=self.db, username=self.username, password=self.password
        )


def is_sentinel_url(url: object) -> bool:
    """Whether ``url`` is a ``redis+sentinel://`` URL."""
    return isinstance(url, str) and url.lower().startswith(SENTINEL_SCHEME + "://")


def _host_port(text: str) -> tuple[str, int]:
    if not text:
        raise ValueError("a redis+sentinel:// URL needs at least one sentinel host[:port]")
    if text.startswith("["):  # [IPv6]:port
        host, _, tail = text[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad sentinel port in {text!r}")
    return host, int(port_text)


@attrs.define(eq=False)
class SentinelConnector:
    """Opens ready connections to the current master of a Sentinel-monitored service.

    The same shape as :class:`~backends._redis_address.RedisConnector`: the
    :class:`~backends.RedisClient` calls :meth:`open_stream` for each new
    connection, command and subscription alike, so every reconnect asks the
    sentinels again.
    """

    address: SentinelAddress
    use_hiredis: bool = True
    master: tuple[str, int] | None = attrs.field(default=None, init=False)
    """The master the last connection was opened to (``None`` before the first)."""
    masters_seen: int = attrs.field(default=0, init=False)
    """How many times the master changed since the first connection (failovers followed)."""
    certificate_failure: None = attrs.field(default=None, init=False)
    """No TLS under Sentinel: always ``None`` (the RedisConnector shape)."""
    _first_sentinel: int = attrs.field(default=0, init=False)
    _connectors: dict[tuple[str, int], RedisConnector] = attrs.field(factory=dict, init=False)

    async def open_stream(self) -> trio.abc.Stream:
        """Ask the sentinels for the master, connect, log in and check its ``ROLE``.

        Keeps asking, every 50 ms, while no sentinel names a master that
        answers as one: bounded only by the caller's deadline (cancel it).
        Cancelled, it closes whatever it had opened.

        Raises:
            HandshakeRefused: the master refused ``AUTH`` or ``SELECT``.
        """
        while True:
            for host, port in await self._ask_sentinels():
                stream = await self._open_master(host, port)
                if stream is not None:
                    return stream
            # That sentinel may be the one with stale news: start with the next.
            self._first_sentinel = (self._first_sentinel + 1) % len(self.address.sentinels)
            await trio.sleep(_RETRY_PAUSE)

    async def _ask_sentinels(self) -> list[tuple[str, int]]:
        """The masters the sentinels name, the one that answered first first; may be empty."""
        sentinels = self.address.sentinels
        named: list[tuple[str, int]] = []
        for step in range(len(sentinels)):
            index = (self._first_sentinel + step) % len(sentinels)
            with trio.move_on_after(_SENTINEL_TIMEOUT):
                try:
                    master = await self._ask_one(sentinels[index])
                except Exception:  # unreachable, or an answer that is not RESP
                    continue
                if master is not None and master not in named:
                    if not named:
                        self._first_sentinel = index  # ask a sentinel that answers first
                    named.append(master)
                    # One answer is enough unless its master fails the ROLE check;
                    # then the others are asked on the next round.
                    return named
        return named

    async def _ask_one(self, sentinel: tuple[str, int]) -> tuple[str, int] | None:
        stream = await trio.open_tcp_stream(*sentinel)
        try:
            reply = await exchange(
                stream,
                ("SENTINEL", "get-master-addr-by-name", self.address.service_name),
                use_hiredis=self.use_hiredis,
            )
        finally:
            await trio.aclose_forcefully(stream)
        return parse_master_reply(reply)

    async def _open_master(self, host: str, port: int) -> trio.abc.Stream | None:
        """A stream to ``host:port`` if it is reachable and a master, else ``None``."""
        connector = self._connectors.get((host, port))
        if connector is None:
            address = self.address.master_address(host, port)
            connector = RedisConnector(address, use_hiredis=self.use_hiredis)
            if len(self._connectors) > 16:  # masters come and go; keep what they taught us bounded
                self._connectors.clear()
            self._connectors[(host, port)] = connector
        try:
            stream = await connector.open_stream()
        except (OSError, trio.BrokenResourceError):
            return None
        try:
            with trio.move_on_after(_SENTINEL_TIMEOUT):
                role = await exchange(stream, ("ROLE",), use_hiredis=self.use_hiredis)
                if isinstance(role, list) and role and role[0] == b"master":
                    if self.master is not None and self.master != (host, port):
                        self.masters_seen += 1
                    self.master = (host, port)
                    return stream
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        await trio.aclose_forcefully(stream)
        return None

    async def follow_switches(self, on_switch: Callable[[], None], ping_interval: float) -> None:
        """Call ``on_switch`` whenever a sentinel announces a new master of the service; forever.

        Subscribes to ``+switch-master`` on one sentinel after another (the
        next when one is lost or silent past twice ``ping_interval``).
        Messages are untrusted: one that is not an announcement for this
        service is ignored.  Never raises but Cancelled.
        """
        sentinels = self.address.sentinels
        index = 0
        while True:
            sentinel = sentinels[index % len(sentinels)]
            index += 1
            # Lost, silent, or not speaking RESP: on to the next sentinel.
            with contextlib.suppress(Exception):
                await self._listen(sentinel, on_switch, ping_interval)
            await trio.sleep(_RETRY_PAUSE if index % len(sentinels) else 1.0)

    async def _listen(
        self, sentinel: tuple[str, int], on_switch: Callable[[], None], ping_interval: float
    ) -> None:
        with trio.fail_after(_SENTINEL_TIMEOUT):
            stream = await trio.open_tcp_stream(*sentinel)
        try:
            enable_keepalive(stream.socket)
            await stream.send_all(pack_command(("SUBSCRIBE", SWITCH_MASTER_CHANNEL)))
            reader = new_reply_reader(use_hiredis=self.use_hiredis)
            pong_due: float | None = None
            while True:
                reply = reader.gets()
                if reply is NOT_ENOUGH_DATA:
                    due = trio.current_time() + ping_interval if pong_due is None else pong_due
                    with trio.move_on_at(due):
                        data = await stream.receive_some(_MAX_REPLY_BYTES)
                        if not data:
                            raise ConnectionResetError("the sentinel closed the connection")
                        reader.feed(data)
                        pong_due = None
                        continue
                    if pong_due is not None:
                        raise TimeoutError("the sentinel did not answer PING")
                    pong_due = trio.current_time() + ping_interval
                    await stream.send_all(pack_command(("PING",)))
                    continue
                if self._is_switch(reply):
                    on_switch()
        finally:
            close_now(stream)

    def _is_switch(self, reply: object) -> bool:
        # "message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"
        if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"):
            return False
        body = reply[2]
        if not isinstance(body, bytes) or len(body) > 1024:
            return False
        fields = body.split(b" ")
        return len(fields) == 5 and fields[0] == self.address.service_name.encode()


def parse_master_reply(reply: object) -> tuple[str, int] | None:
    """``(host, port)`` from a ``get-master-addr-by-name`` reply; ``None`` for anything else."""
    if not (isinstance(reply, list) and len(reply) == 2):
        return None
    host, port = reply
    if not (isinstance(host, bytes) and isinstance(port, bytes) and 0 < len(host) <= 255):
        return None
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    try:
        return host.decode("ascii"), int(port)
    except UnicodeDecodeError:
        return None


async def exchange(
    stream: trio.abc.Stream, command: tuple[CommandArg, ...], *, use_hiredis: bool
) -> RedisReply:
    """Send one command on a fresh stream and return its one reply (an error reply as is).

    Raises:
        ConnectionResetError: the server closed the stream first.
        ValueError: the reply is not RESP or too long.
    """
    await stream.send_all(pack_command(command))
    reader: ReplyReader = new_reply_reader(use_hiredis=use_hiredis)
    received = 0
    while (reply := reader.gets()) is NOT_ENOUGH_DATA:
        data = await stream.receive_some(_MAX_REPLY_BYTES)
        if not data:
            raise ConnectionResetError("redis closed the connection before answering")
        received += len(data)
        if received > _MAX_REPLY_BYTES:
            raise ValueError("reply too long")
        reader.feed(data)
    return reply  # type: ignore[no-any-return]


__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SentinelAddress",
    "SentinelConnector",
    "is_sentinel_url",
    "parse_master_reply",
]
