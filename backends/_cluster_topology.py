"""Where a Redis Cluster is: its seed nodes (from a URL) and its slot map, kept current.

:class:`ClusterTopology` holds the slot map a :class:`~backends.RedisClusterClient`
routes by, and reads it again when the cluster says it changed.  Reads are
single-flight and counted by generation: a hundred callers told ``MOVED``
at once cause one read, and a caller whose map was replaced since it
looked does not read again.
"""

from __future__ import annotations

import contextlib
import math
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Final

import trio

from ._cluster_slots import MalformedTopologyError, NodeAddress, SlotMap, parse_shards, parse_slots
from ._errors import StorageError, StorageUnavailableError
from ._redis_address import RedisAddress
from ._redis_client import RedisClient, RedisReplyError

CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
"""URL schemes that name a cluster (``rediss+cluster``: TLS)."""

_TOPOLOGY_TIMEOUT: Final = 1.0
"""Seconds one node may take to describe the cluster before the next one is asked."""
FIRST_BACKOFF: Final = 0.025
"""Seconds before the first retry of a call that met an outage or a transient error."""
MAX_BACKOFF: Final = 0.5
"""Seconds at most between two retries."""


class ClusterTopology:
    """The slot map of one client, read from the nodes it knows.

    Args:
        seeds: nodes to ask when no map is known (and after every node of the map failed).
        node: returns the client of a node.
        timeout: the client's ``timeout`` (bounds each node's answer, with 1 s).
    """

    def __init__(
        self,
        seeds: list[NodeAddress],
        node: Callable[[NodeAddress], RedisClient],
        timeout: float | None,
    ) -> None:
        self.seeds = seeds
        self._node = node
        self._timeout = timeout
        self.map: SlotMap | None = None
        """The slot map as last read (``None`` before the first read)."""
        self.generation = 0
        """How many times the map was read: a caller notes it before using the map."""
        self._refreshing: trio.Event | None = None
        self._read = trio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: the map is read no more."""
        return self._closed

    async def current(self) -> SlotMap:
        """The slot map, read first if there is none.

        Raises:
            StorageUnavailableError: no node described the cluster.
        """
        slot_map = self.map
        if slot_map is None:
            await self.refresh(self.generation)
            slot_map = self.map
            if slot_map is None:
                raise StorageUnavailableError(
                    "redis cluster: no node described the cluster",
                    backend="RedisClusterClient",
                    operation="CLUSTER SHARDS",
                )
        return slot_map

    async def complete(self, deadline: float) -> SlotMap:
        """A slot map in which every slot has a master, read again (with backoff) until then.

        Raises:
            StorageUnavailableError: no complete map by ``deadline``.
        """
        delay = FIRST_BACKOFF
        while True:
            with contextlib.suppress(StorageError):
                slot_map = await self.current()
                if slot_map.complete:
                    return slot_map
            now = trio.current_time()
            if now >= deadline:
                raise StorageUnavailableError(
                    "redis cluster: some slots have no master (a failover under way?)",
                    backend="RedisClusterClient",
                    operation="CLUSTER SHARDS",
                )
            await trio.sleep(min(delay, deadline - now))
            delay = min(delay * 2, MAX_BACKOFF)
            with contextlib.suppress(StorageError):
                await self.refresh(self.generation)

    async def moved(self, generation: int, slot: int, node: NodeAddress) -> None:
        """Follow a ``MOVED``: the slot at once, the rest of the map by reading it again."""
        if self.map is not None:
            self.map = self.map.moved(slot, node)
        with contextlib.suppress(StorageError):
            await self.refresh(generation)

    async def refresh(self, generation: int) -> None:
        """Read the slot map again, unless it was read since ``generation``; one read at a time.

        Raises:
            StorageUnavailableError: no node described the cluster.
        """
        if generation != self.generation or self._closed:
            return
        if self._refreshing is not None:
            await self._refreshing.wait()
            return
        done = self._refreshing = trio.Event()
        try:
            self.map = await self._read_map()
            self.generation += 1
            read, self._read = self._read, trio.Event()
            read.set()
        finally:
            self._refreshing = None
            done.set()

    async def wait_read(self, generation: int) -> None:
        """Return once the map was read since ``generation``, or the topology closed."""
        while self.generation == generation and not self._closed:
            await self._read.wait()

    async def successor(self, node: NodeAddress, old_map: SlotMap, deadline: float) -> NodeAddress:
        """The master now serving the slots ``node`` served in ``old_map``; waits for a failover.

        Raises:
            StorageUnavailableError: ``node`` is still the master (or none
                serves its slots) at ``deadline``.
        """
        slot = old_map.owners.index(node)
        delay = FIRST_BACKOFF
        while True:
            with contextlib.suppress(StorageError):
                await self.refresh(self.generation)
            owner = None if self.map is None else self.map.owners[slot]
            if owner is not None and owner != node:
                return owner
            now = trio.current_time()
            if now >= deadline:
                raise StorageUnavailableError(
                    f"redis cluster: node {node[0]}:{node[1]} cannot be reached "
                    "and no other master took over its slots",
                    backend="RedisClusterClient",
                    operation="SCAN",
                )
            await trio.sleep(min(delay, deadline - now))
            delay = min(delay * 2, MAX_BACKOFF)

    def close(self) -> None:
        """Stop reading; whoever waits for a read is let go."""
        self._closed = True
        self._read.set()
        if self._refreshing is not None:
            self._refreshing.set()

    async def _read_map(self) -> SlotMap:
        known = [] if self.map is None else list(self.map.nodes)
        candidates = list(dict.fromkeys([*known, *self.seeds]))
        fallback: SlotMap | None = None
        last: BaseException | None = None
        # Without a timeout nothing is bounded by time (a test's mock clock would jump it).
        patience = math.inf if self._timeout is None else min(self._timeout, _TOPOLOGY_TIMEOUT)
        for node in candidates:
            if self._closed:
                break
            last = TimeoutError(f"{node[0]}:{node[1]} did not answer within {patience} s")
            with trio.move_on_after(patience):
                try:
                    slot_map = await self._describe(node)
                except (StorageError, MalformedTopologyError) as exc:
                    last = exc
                    continue
                if slot_map.complete:
                    return slot_map
                fallback = fallback or slot_map
        if fallback is not None:
            return fallback
        error = StorageUnavailableError(
            f"redis cluster: no node described the cluster: {last!r}",
            backend="RedisClusterClient",
            operation="CLUSTER SHARDS",
        )
        error.__cause__ = last
        raise error

    async def _describe(self, node: NodeAddress) -> SlotMap:
        client = self._node(node)
        try:
            reply = await client.execute("CLUSTER", "SHARDS")
        except RedisReplyError:  # older than Redis 7.0
            return parse_slots(await client.execute("CLUSTER", "SLOTS"), default_host=node[0])
        return parse_shards(reply, default_host=node[0])


def cluster_seeds(url: str, *, ssl_context: ssl.SSLContext | None = None) -> list[RedisAddress]:
    """The seed nodes of a ``redis+cluster://`` (or ``rediss+cluster://``) URL.

    Raises:
        ValueError: another scheme, no host, a database other than 0, or a bad option.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(
            "a redis cluster URL starts with redis+cluster:// or rediss+cluster://, "
            f"not {url!r:.50}"
        )
    scheme = parts.scheme.split("+", 1)[0]
    credentials, _, hosts = parts.netloc.rpartition("@")
    login = f"{credentials}@" if credentials else ""
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a redis cluster has database 0 only")
    query = f"?{parts.query}" if parts.query else ""
    seeds = [
        RedisAddress.from_url(f"{scheme}://{login}{host.strip()}/0{query}", ssl_context=ssl_context)
        for host in hosts.split(",")
        if host.strip()
    ]
    if not seeds:
        raise ValueError("a redis cluster URL needs at least one host:port")
    return seeds


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES
