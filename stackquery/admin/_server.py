"""The attach endpoint: a Unix socket in the client's nursery that operators talk to.

One task accepts connections; each connection is a task that reads one
request line at a time and writes its reply.  Nothing a peer sends or fails
to read reaches the client: a request line is bounded, a connection that
sends nothing for ``idle_timeout`` or leaves a reply unread for
``send_timeout`` is closed, past ``max_connections`` a new connection is told
``busy`` and closed, and an error in a request (or a bug in the endpoint) is
an error reply, never an exception in the client's nursery.

The socket is made owner-only and put in place atomically: bound under a
temporary name beside the final one, ``chmod 0600``, listening, then renamed
over the path.  A stale socket file (no one listening) is replaced; a live
one, or anything that is not a socket, is left alone and opening fails.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from .._errors import ClientClosedError, StackqueryError
from .._events import EventHub
from .._keys import QueryKey
from .._l2 import L2Cache
from .._owners import QueryOwners
from .._query_cache import QueryCache
from .._records import ClientStatistics
from .._throttle import ThrottledWarning
from ..fleet._fleet import Fleet
from . import _views
from ._event_log import EventLog
from ._protocol import (
    MAX_REQUEST_LINE,
    PROTOCOL_VERSION,
    ErrorCode,
    LineTooLongError,
    RequestError,
    bool_argument,
    encode,
    error_reply,
    int_argument,
    number_argument,
    ok_reply,
    parse_request,
    prefix_argument,
    receive_line,
)

logger = logging.getLogger("stackquery.admin")

_ACCEPT_RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_BACKLOG = 16
_TEMP_ATTEMPTS = 8


class AdminSocketError(StackqueryError, OSError):
    """The attach endpoint could not be set up at its path (raised when the client opens)."""


@attrs.frozen
class AdminLimits:
    """The bounds that keep an operator's tool, broken or hostile, from hurting the client."""

    max_line: int = MAX_REQUEST_LINE
    """Bytes a request line may hold; a longer one gets ``too_long`` and the connection closes."""
    max_connections: int = 16
    """Connections served at once; one more gets ``busy`` and is closed."""
    idle_timeout: float = 60.0
    """Seconds a connection may take to send its next whole request line."""
    send_timeout: float = 10.0
    """Seconds a reply may wait for the peer to read it before the connection is closed."""
    events_kept: int = 1000
    """Recent events the ring keeps (the ``events`` op's largest ``limit``)."""
    max_snapshot_keys: int = 10_000
    """Largest ``limit`` of the ``snapshot`` op (a reply of about 1.5 MB)."""
    max_refetch_wait: float = 300.0
    """Largest ``timeout`` of the ``refetch`` op, in seconds."""


class ClientCommands(Protocol):
    """The client's changes the endpoint's commands make (the client's own public methods)."""

    async def invalidate_queries(self, key: QueryKey = (), *, refetch: bool = True) -> int:
        """Mark the keys under ``key`` invalidated; observed ones refetch if ``refetch``."""
        ...

    async def remove_queries(self, key: QueryKey = ()) -> int:
        """Drop the keys under ``key`` from L1 and L2."""
        ...


@attrs.frozen
class AdminParts:
    """What the endpoint reads and changes: the client's parts, handed over when it opens."""

    cache: QueryCache
    owners: QueryOwners
    commands: ClientCommands
    statistics: Callable[[], ClientStatistics]
    events: EventHub
    l2: L2Cache | None
    fleet: Fleet | None
    key_prefix: str


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class AdminServer:
    """The attach endpoint of one client.

    Args:
        path: where the socket goes.
        parts: what it reports on and acts on.
        limits: its bounds.
    """

    def __init__(self, path: str, parts: AdminParts, limits: AdminLimits | None = None) -> None:
        self.path = os.path.abspath(path)
        self.parts = parts
        self.limits = limits if limits is not None else AdminLimits()
        self.connections = 0
        """Connections being served now."""
        self._log: EventLog | None = None
        self._started_at = 0.0
        self._identity: tuple[int, int] | None = None
        self._accept_errors = ThrottledWarning(logger)
        self._ops: dict[str, tuple[Handler, tuple[str, ...]]] = {
            "hello": (self._hello, ()),
            "snapshot": (self._snapshot, ("prefix", "limit", "order")),
            "stats": (self._stats, ()),
            "events": (self._events, ("limit", "after")),
            "invalidate": (self._invalidate, ("prefix", "refetch")),
            "refetch": (self._refetch, ("prefix", "timeout")),
            "remove": (self._remove, ("prefix",)),
        }

    # -- the socket -------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen at the path and serve until cancelled; then close and remove the socket.

        Reports started once the socket is in place.

        Raises:
            AdminSocketError: the socket could not be made at the path (a
                missing directory, no permission, a path too long, another
                process listening there, a file that is not a socket).
        """
        sock = self._listen()
        parts = self.parts
        self._log = EventLog(self.limits.events_kept, parts.cache.clock)
        parts.events.recorder = self._log.record
        self._started_at = trio.current_time()
        try:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            async with trio.open_nursery() as nursery:
                task_status.started()
                await self._accept(listener, nursery)
        finally:
            parts.events.recorder = None
            sock.close()
            self._remove_file()

    def _listen(self) -> socket.socket:
        directory = os.path.dirname(self.path)
        for _ in range(_TEMP_ATTEMPTS):
            temp = os.path.join(directory, f".sq{secrets.token_hex(2)}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(temp)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise self._error(exc) from exc
            try:
                os.chmod(temp, 0o600)
                sock.listen(_BACKLOG)
                self._check_replaceable()
                os.rename(temp, self.path)
                info = os.stat(self.path)
            except BaseException as exc:
                sock.close()
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                if isinstance(exc, OSError) and not isinstance(exc, AdminSocketError):
                    raise self._error(exc) from exc
                raise
            self._identity = (info.st_dev, info.st_ino)
            return sock
        raise AdminSocketError(
            f"cannot serve the admin socket at {self.path}: no free temporary name"
        )

    def _error(self, exc: OSError) -> AdminSocketError:
        return AdminSocketError(
            f"cannot serve the admin socket at {self.path}: {exc.strerror or exc}"
        )

    def _check_replaceable(self) -> None:
        """Refuse to replace anything at the path but a socket no one listens on."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise AdminSocketError(
                f"cannot serve the admin socket at {self.path}: a file that is not a socket "
                "is there (left alone)"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except OSError:
            return  # a socket left by a process that died: replaced
        finally:
            probe.close()
        raise AdminSocketError(
            f"cannot serve the admin socket at {self.path}: another process listens there"
        )

    def _remove_file(self) -> None:
        # Only if it is still ours: a later process may have put its own socket there.
        try:
            info = os.stat(self.path)
        except OSError:
            return
        if (info.st_dev, info.st_ino) == self._identity:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # Out of file descriptors or memory: wait for some to be freed.
                self._accept_errors.warning("admin socket: accept failed: %r", exc)
                await trio.sleep(0.1 if exc.errno in _ACCEPT_RETRY_ERRNOS else 1.0)
                continue
            if self.connections >= self.limits.max_connections:
                await self._refuse(stream)
                continue
            self.connections += 1
            nursery.start_soon(self._serve_connection, stream)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        busy = error_reply(
            ErrorCode.BUSY,
            f"{self.limits.max_connections} connections are open already: try again later",
        )
        with trio.move_on_after(1.0), _suppress_peer_errors():
            await stream.send_all(encode(busy))
        await trio.aclose_forcefully(stream)

    # -- one connection ---------------------------------------------------------------------

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            with _suppress_peer_errors():
                await self._converse(stream)
        except Exception:
            logger.exception("admin socket: a connection failed (the client goes on)")
        finally:
            self.connections -= 1
            await trio.aclose_forcefully(stream)

    async def _converse(self, stream: trio.SocketStream) -> None:
        limits = self.limits
        buffer = bytearray()
        while True:
            line: bytes | None = b""
            with trio.move_on_after(limits.idle_timeout) as idle:
                try:
                    line = await receive_line(stream, buffer, limits.max_line)
                except LineTooLongError as exc:
                    await self._send(stream, error_reply(exc.code, str(exc)))
                    return
            if idle.cancelled_caught:
                message = f"no request within {limits.idle_timeout:g} s: closing"
                await self._send(stream, error_reply(ErrorCode.TIMEOUT, message))
                return
            if line is None:
                return
            if not line.strip():
                continue
            if not await self._send(stream, await self.answer(line)):
                return

    async def _send(self, stream: trio.SocketStream, reply: dict[str, Any]) -> bool:
        """Send ``reply``; ``False`` when the peer did not take it in time (then close)."""
        try:
            data = encode(reply)
        except TypeError as exc:
            logger.error("admin socket: a reply could not be encoded: %s", exc)
            data = encode(error_reply(ErrorCode.INTERNAL, str(exc), reply.get("id")))
        with trio.move_on_after(self.limits.send_timeout):
            await stream.send_all(data)
            return True
        return False

    async def answer(self, line: bytes) -> dict[str, Any]:
        """The reply to one request line; never raises but for cancellation."""
        request_id = None
        try:
            request = parse_request(line)
            request_id = request.get("id")
            op = request["op"]
            if op not in self._ops:
                known = ", ".join(self._ops)
                raise RequestError(f"unknown op {op!r:.100} (ops: {known})", ErrorCode.UNKNOWN_OP)
            handler, takes = self._ops[op]
            unknown = sorted(set(request) - {"op", "id", *takes})
            if unknown:
                accepted = ", ".join(takes) or "no arguments"
                raise RequestError(
                    f"op {op} does not take {unknown[0]!r:.100} (it takes {accepted})"
                )
            return ok_reply(await handler(request), request_id)
        except RequestError as exc:
            return error_reply(exc.code, str(exc), request_id)
        except ClientClosedError:
            return error_reply(ErrorCode.CLOSING, "the client is closing", request_id)
        except Exception as exc:
            logger.exception("admin socket: a request failed (the client goes on)")
            message = f"internal error: {type(exc).__name__}: {exc}"[:500]
            return error_reply(ErrorCode.INTERNAL, message, request_id)

    # -- the ops ----------------------------------------------------------------------------

    def _now(self) -> float:
        return self.parts.cache.clock.wall()

    async def _hello(self, _request: dict[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return {
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "key_prefix": self.parts.key_prefix,
            "ops": sorted(self._ops),
            "now": self._now(),
            "limits": attrs.asdict(self.limits),
        }

    async def _snapshot(self, request: dict[str, Any]) -> dict[str, Any]:
        key, _ = prefix_argument(request, required=False)
        limit = int_argument(request, "limit", 1000, maximum=self.limits.max_snapshot_keys)
        order = request.get("order", "key")
        if order not in ("key", "fetches"):
            raise RequestError(f'"order" must be "key" or "fetches", got {order!r:.100}')
        parts = self.parts
        return await _views.snapshot(
            parts.cache, parts.owners, key, limit=limit, order=order, now=self._now()
        )

    async def _stats(self, _request: dict[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        parts = self.parts
        assert self._log is not None
        l2 = parts.l2.statistics() if parts.l2 is not None else None
        fleet = parts.fleet.statistics() if parts.fleet is not None else None
        return {
            "now": self._now(),
            "pid": os.getpid(),
            "uptime": trio.current_time() - self._started_at,
            # The client's breakers are under "breakers", by name.
            "client": attrs.asdict(parts.statistics(), filter=_not_circuits),
            "l2": attrs.asdict(l2) if l2 is not None else None,
            "fleet": attrs.asdict(fleet) if fleet is not None else None,
            # Circuit breakers by name, each {"state": "closed" | "open" | "half_open", ...}.
            "breakers": parts.cache.origin.breakers_json(),
            "events": self._log.statistics(),
        }

    async def _events(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._log is not None
        limit = int_argument(request, "limit", 100, maximum=self.limits.events_kept)
        after = int_argument(request, "after", 0, maximum=2**62)
        await trio.lowlevel.checkpoint()
        records = self._log.recent(limit, after)
        return {
            "events": [record.as_json() for record in records],
            "seq": self._log.seq,
            "kept": self._log.size,
        }

    async def _invalidate(self, request: dict[str, Any]) -> dict[str, Any]:
        key, _ = prefix_argument(request, required=True)
        refetch = bool_argument(request, "refetch", True)
        matched = await self.parts.commands.invalidate_queries(key, refetch=refetch)
        return await self._with_prefixes({"matched": matched}, key, matched)

    async def _refetch(self, request: dict[str, Any]) -> dict[str, Any]:
        key, _ = prefix_argument(request, required=True)
        timeout = number_argument(request, "timeout", 30.0, maximum=self.limits.max_refetch_wait)
        parts = self.parts
        hashes = parts.cache.matching(key, False, None)
        errors_before = _views.count_errors(parts.cache, hashes)
        observed = sum(_views.is_observed(parts.owners, key_hash) for key_hash in hashes)
        matched = await parts.commands.invalidate_queries(key, refetch=True)
        with trio.move_on_after(timeout) as waited:
            await parts.owners.fetches_settled(hashes)
        errors_after = _views.count_errors(parts.cache, hashes)
        failed = sum(errors_after[key_hash] > errors_before[key_hash] for key_hash in hashes)
        reply = {
            "matched": matched,
            "observed": observed,
            "settled": not waited.cancelled_caught,
            "failed": failed,
        }
        return await self._with_prefixes(reply, key, matched)

    async def _remove(self, request: dict[str, Any]) -> dict[str, Any]:
        key, _ = prefix_argument(request, required=True)
        removed = await self.parts.commands.remove_queries(key)
        return await self._with_prefixes({"matched": removed}, key, removed)

    async def _with_prefixes(
        self, reply: dict[str, Any], key: QueryKey, matched: int
    ) -> dict[str, Any]:
        if matched == 0:
            reply["prefixes"] = await _views.found_prefixes(self.parts.cache, key)
        return reply


def _not_circuits(attribute: attrs.Attribute[Any], _value: object) -> bool:
    return attribute.name != "circuits"


def _suppress_peer_errors() -> contextlib.suppress:
    """A peer that went away (reset, closed) ends its conversation, nothing more."""
    return contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError)


__all__ = ["AdminLimits", "AdminParts", "AdminServer", "AdminSocketError", "ClientCommands"]
