"""A loopback TCP proxy a test controls, in front of a real server.

It forwards bytes both ways, records what each client sent upstream, and can
*black-hole* its connections: from then on it reads and drops every byte in
both directions without closing either side, which is what a half-open
connection (a vanished peer, a NAT that forgot the flow) looks like to both
ends.  Connections accepted after that are forwarded normally, as a
reconnect through a healthy network would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio


@attrs.define(eq=False)
class ProxyLink:
    """One client connection and its upstream connection."""

    forwarding: bool = True
    """False once black-holed: bytes are read and dropped, both ways."""
    sent_upstream: bytearray = attrs.field(factory=bytearray)
    """Every byte the client sent that was forwarded to the server."""
    dropped: int = 0
    """Bytes read and dropped (both ways) since the link was black-holed."""


@attrs.define(eq=False)
class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream_port``; see :func:`open_tcp_proxy`."""

    upstream_port: int
    """Where the real server listens."""
    port: int = 0
    """Where the proxy listens (set once it runs)."""
    accepted: int = 0
    """Client connections accepted so far."""
    links: list[ProxyLink] = attrs.field(factory=list)
    """The forwarded connections, in the order they were accepted."""

    def black_hole(self) -> None:
        """Stop forwarding on every current connection, closing nothing; new ones still work."""
        for link in self.links:
            link.forwarding = False

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and forward connections until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        async with client:
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
            except OSError:
                return
            link = ProxyLink()
            self.links.append(link)
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pump, link, client, upstream, True, nursery.cancel_scope)
                nursery.start_soon(_pump, link, upstream, client, False, nursery.cancel_scope)


async def _pump(
    link: ProxyLink,
    source: trio.SocketStream,
    sink: trio.SocketStream,
    upstream: bool,
    both: trio.CancelScope,
) -> None:
    """Copy ``source`` to ``sink`` (or drop, when black-holed); end both directions at EOF."""
    try:
        while data := await source.receive_some():
            if not link.forwarding:
                link.dropped += len(data)
                continue
            if upstream:
                link.sent_upstream += data
            await sink.send_all(data)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    both.cancel()


@asynccontextmanager
async def open_tcp_proxy(upstream_port: int) -> AsyncIterator[TcpProxy]:
    """Run a :class:`TcpProxy` to ``upstream_port`` for the duration of the block."""
    proxy = TcpProxy(upstream_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        yield proxy
        nursery.cancel_scope.cancel()
