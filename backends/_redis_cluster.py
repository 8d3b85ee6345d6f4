"""A trio-native Redis Cluster client: our own pipelined connections, routed by hash slot.

One :class:`~backends.RedisClient` per node (one multiplexed connection
each, as fast as on a single server), and a slot map read from
``CLUSTER SHARDS`` (``CLUSTER SLOTS`` on servers without it).  Each command
is checked here and sent to the master of its key's slot by a
:class:`~backends._cluster_router.ClusterRouter`, which follows ``MOVED``
and ``ASK`` and rides out failovers (see there).

Pub/sub is classic (``SUBSCRIBE``/``PUBLISH``): in a cluster every node
forwards every published message to every other node, so a subscriber on
any node hears every message, whichever node it was published on.  Key
tracking is not forwarded: :meth:`RedisClusterClient.subscribe_tracking`
tracks on every master (see :mod:`backends._cluster_tracking`).
"""

from __future__ import annotations

import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Final, final

import attrs
import trio

from ._cluster_router import ClusterRouter, reply_error, unexpected_reply
from ._cluster_slots import NodeAddress, SlotMap, key_slot
from ._cluster_topology import cluster_seeds, is_cluster_url
from ._cluster_tracking import ClusterSubscription, open_cluster_subscription
from ._errors import StorageClosedError, StorageError, StorageUnavailableError
from ._redis_address import RedisAddress
from ._redis_client import (
    DEFAULT_PING_INTERVAL,
    DEFAULT_TIMEOUT,
    RedisClient,
    RedisCommandRefusedError,
)
from ._redis_subscription import Subscription
from ._redis_tracking import tracking_command
from ._resp import CommandArg, RedisReply

_CLUSTER_REFUSALS: Final[dict[str, str]] = {
    "SELECT": "cannot run on a cluster: it has database 0 only",
    "MULTI": "cannot run on a cluster client: a transaction needs one node; "
    "use a RedisClient on the node of its keys' slot",
    "EXEC": "cannot run on a cluster client (see MULTI)",
    "DISCARD": "cannot run on a cluster client (see MULTI)",
    "SCAN": "walks one node only on a cluster: use RedisClusterClient.scan()",
    "KEYS": "walks one node only on a cluster: use RedisClusterClient.scan()",
}


@attrs.frozen
class RedisClusterStatistics:
    """A snapshot of a :class:`RedisClusterClient`."""

    primaries: int
    """Masters in the slot map (0 before the first command)."""
    nodes_connected: int
    """Nodes with an open command connection."""
    refreshes: int
    """Times the slot map was read."""
    moved: int
    """``MOVED`` replies followed."""
    asked: int
    """``ASK`` replies followed."""
    retries: int
    """Commands tried again after ``TRYAGAIN``, ``CLUSTERDOWN`` or a node out of reach."""
    subscriptions: int
    """Open subscriptions not known to be lost, one per node: a ``subscribe`` holds
    one, a ``subscribe_tracking`` one per master besides."""


@final
class RedisClusterClient:
    """Commands routed to the master of their key's hash slot; one pipelined connection per node.

    The same command surface as :class:`RedisClient` (``execute``,
    ``pipeline``, ``publish``, ``subscribe``, ``subscribe_tracking``,
    ``wait_reconnected``, ``statistics``, ``aclose``), plus :meth:`scan` over
    every master.  It runs no background task of its own (a tracking
    subscription runs its own while open): the slot map is read on the first
    command and again when the cluster says it changed.

    A command's keys must share one slot, except ``MGET``, ``DEL``,
    ``UNLINK``, ``EXISTS`` and ``TOUCH``, which are split per slot and run on
    their nodes in parallel (so they are not atomic across slots).  A
    :meth:`pipeline` sends each node its commands together, all nodes in
    parallel.  A command that names no key (``PING``, ``SCRIPT LOAD``,
    ``INFO``) runs on one master.

    Cancellation and timeouts are :class:`RedisClient`'s, per attempt; a call
    rides out outages and transient errors for ``timeout`` after the first
    one (30 s when ``timeout`` is ``None``), and follows up to 16 redirects
    at once.  A command whose connection broke after it was
    written is sent again: it may run twice (every command stackquery sends
    may).

    Args:
        seeds: nodes to ask for the cluster's layout (one that answers is
            enough); their credentials and TLS settings are used for every node.
        timeout: seconds each call may take, retries included; ``None``:
            each attempt waits forever, retries stop after 30 s.
        ping_interval: as for :class:`RedisClient`, for :meth:`subscribe`;
            also how often a :meth:`subscribe_tracking` reads the slot map
            to see whether the masters changed.
        use_hiredis: parse with hiredis when it is installed.

    Raises:
        ValueError: no seed, a seed with a database other than 0, or a bad
            ``timeout`` / ``ping_interval``.
    """

    def __init__(
        self,
        seeds: Sequence[RedisAddress],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        use_hiredis: bool = True,
    ) -> None:
        if not seeds:
            raise ValueError("a redis cluster client needs at least one seed node")
        if any(seed.db != 0 or seed.path is not None for seed in seeds):
            raise ValueError("redis cluster nodes are TCP addresses with database 0 only")
        self._template = seeds[0]
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._router = ClusterRouter(
            seeds, timeout=timeout, ping_interval=ping_interval, use_hiredis=use_hiredis
        )
        self._topology = self._router.topology
        self._subscription_turn = random.randrange(1 << 16)
        self._subscriptions: set[Subscription] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ssl_context: ssl.SSLContext | None = None,
        use_hiredis: bool = True,
    ) -> RedisClusterClient:
        """Make a client for ``redis+cluster://[[user]:password@]host:port[,host:port...][/0]``.

        ``rediss+cluster://`` is TLS; query options as for :meth:`RedisAddress.from_url`.

        Raises:
            ValueError: not a cluster URL, no host, a database other than 0,
                or a bad option, ``timeout`` or ``ping_interval``.
        """
        seeds = cluster_seeds(url, ssl_context=ssl_context)
        return cls(seeds, timeout=timeout, ping_interval=ping_interval, use_hiredis=use_hiredis)

    @property
    def address(self) -> RedisAddress:
        """The first seed node (credentials, TLS and database 0 hold for every node)."""
        return self._template

    @property
    def timeout(self) -> float | None:
        """Seconds each call may take, retries included, or ``None``."""
        return self._timeout

    @property
    def slot_map(self) -> SlotMap | None:
        """The slot map as last read (``None`` before the first command)."""
        return self._topology.map

    async def execute(self, *args: CommandArg) -> RedisReply:
        """Run one command on the master of its keys' slot and return its reply.

        Under cancellation it behaves like :meth:`RedisClient.execute`.

        Raises:
            CrossSlotError: (a ``ValueError``) the command's keys are in
                different slots and it is not one that can be split.
            RedisCommandRefusedError: the command cannot run through this
                client (``SELECT``, ``MULTI``, ``SCAN``, ``KEYS``, and what
                :class:`RedisClient` refuses).  Nothing was sent.
            RedisReplyError: the server answered with an error (``MOVED``,
                ``ASK`` and the transient cluster errors are followed first).
            StorageUnavailableError: no node could run it within ``timeout``.
            StorageError, StorageTLSError, StorageClosedError, ValueError,
            TypeError: as for :meth:`RedisClient.execute`.
        """
        if not args:
            raise ValueError("a redis command needs at least a command name")
        name = _command_name(args[0])
        _check_cluster_command(name)
        return await self._router.execute(name, args)

    async def pipeline(
        self, commands: Iterable[Sequence[CommandArg]], *, raise_on_error: bool = True
    ) -> list[RedisReply]:
        """Run several commands and return their replies in order.

        Each node gets its commands written together; the nodes are sent to
        in parallel.  Commands on different nodes are not ordered against
        each other; commands on one key keep their order, except that a
        command redirected (``MOVED``, ``ASK``) is sent again after the rest
        of its node's batch.  No transactions (``MULTI``).

        Raises:
            RedisReplyError: a command failed and ``raise_on_error``.
            As :meth:`execute` otherwise.
        """
        batch = [tuple(command) for command in commands]
        names: list[str] = []
        for command in batch:
            if not command:
                raise ValueError("a redis command needs at least a command name")
            names.append(_command_name(command[0]))
            _check_cluster_command(names[-1])
        replies = await self._router.pipeline(batch, names)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply_error(reply, "PIPELINE")
        return replies

    async def publish(self, channel: str | bytes, message: str | bytes) -> int:
        """Publish ``message`` on ``channel`` (through the master of the channel's slot).

        Every node forwards it to its own subscribers, so every subscriber in
        the cluster gets it.

        Returns:
            The subscribers on the node it went through (Redis counts no
            others); :meth:`count_subscribers` counts the whole cluster.

        Raises:
            As :meth:`execute`.
        """
        command = ("PUBLISH", channel, message)
        reply = await self._router.routed(key_slot(channel), command, "PUBLISH")
        if not isinstance(reply, int):
            raise StorageError(
                f"redis PUBLISH: unexpected reply {reply!r:.100}",
                backend="RedisClusterClient",
                operation="PUBLISH",
            )
        return reply

    async def count_subscribers(self, channel: str | bytes) -> int:
        """The subscribers of ``channel`` on every node, masters and replicas (``PUBSUB NUMSUB``).

        Raises:
            StorageUnavailableError: a node of the map did not answer (a
                partial count is not returned).
            As :meth:`execute` otherwise.
        """
        slot_map = await self._topology.complete(self._deadline())
        total = 0
        for node in slot_map.nodes:
            reply = await self._router.on_node(node, ("PUBSUB", "NUMSUB", channel))
            if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], int):
                raise StorageError(
                    f"redis PUBSUB NUMSUB: unexpected reply {reply!r:.100}",
                    backend="RedisClusterClient",
                    operation="PUBSUB",
                )
            total += reply[1]
        return total

    @asynccontextmanager
    async def subscribe(self, *channels: str | bytes) -> AsyncIterator[Subscription]:
        """Subscribe to ``channels`` on one node of the cluster (see :meth:`RedisClient.subscribe`).

        Classic pub/sub reaches every node, so any node will do: each
        subscription takes the next node of the map in turn (a client's
        first one a random node), and a node that cannot be reached is
        skipped.  When the node goes away the subscription is lost like any
        other; subscribe again and another node is taken.

        Raises:
            StorageUnavailableError: no node of the map could be reached.
            ValueError, StorageTLSError, StorageError, StorageClosedError:
                as for :meth:`RedisClient.subscribe`.
        """
        if not channels:
            raise ValueError("subscribe() needs at least one channel")
        self._check_open()
        try:
            nodes = list((await self._topology.current()).nodes)
        except StorageUnavailableError:
            nodes = []
        nodes = nodes or list(self._topology.seeds)
        self._subscription_turn += 1
        start = self._subscription_turn % len(nodes)
        last: StorageUnavailableError | None = None
        async with contextlib.AsyncExitStack() as stack:
            subscription: Subscription | None = None
            for node in nodes[start:] + nodes[:start]:
                try:
                    subscription = await stack.enter_async_context(
                        self._router.node(node).subscribe(*channels)
                    )
                except StorageUnavailableError as exc:
                    last = exc
                    continue
                break
            if subscription is None:
                assert last is not None
                raise last
            self._subscriptions.add(subscription)
            try:
                yield subscription
            finally:
                self._subscriptions.discard(subscription)

    @asynccontextmanager
    async def subscribe_tracking(
        self, *channels: str | bytes, prefixes: Sequence[str]
    ) -> AsyncIterator[ClusterSubscription]:
        """As :meth:`subscribe`, also hearing of each change to a key under ``prefixes``.

        A master tracks only its own keys: this tracks on every master of the
        slot map (:meth:`RedisClient.subscribe_tracking` on each, with no
        channel) besides subscribing ``channels`` on one node, and reads all
        of them as one :class:`~backends._cluster_tracking.ClusterSubscription`,
        whose ``next_event`` returns every master's invalidations
        (:class:`~backends._redis_tracking.Invalidation`) among the messages.
        It is lost, as a whole, when any of its connections is, and when the
        slot map (read every ``ping_interval`` seconds, or whenever a command
        met ``MOVED``) names other masters: subscribe again to track the new
        ones, and take what changed meanwhile as unknown.

        Raises:
            ValueError: no channel, no prefix, or overlapping prefixes.
            StorageUnavailableError: some slots have no master within
                ``timeout`` (a failover under way), or a node could not be
                reached.
            TrackingRefusedError: (a ``StorageError``) a master refused
                ``CLIENT TRACKING``.
            StorageTLSError, StorageError, StorageClosedError: as for
                :meth:`RedisClient.subscribe`.
        """
        if not channels:
            raise ValueError("subscribe_tracking() needs at least one channel")
        tracking_command(0, prefixes)  # bad prefixes fail here, before connecting
        self._check_open()
        async with open_cluster_subscription(
            self._topology,
            lambda node: self._tracking_on(node, prefixes),
            lambda: self.subscribe(*channels),
            recheck_interval=self._ping_interval,
            deadline=self._deadline(),
        ) as subscription:
            yield subscription

    @asynccontextmanager
    async def _tracking_on(
        self, node: NodeAddress, prefixes: Sequence[str]
    ) -> AsyncIterator[Subscription]:
        """The invalidations of ``node``'s keys under ``prefixes`` (no channel), counted."""
        async with self._router.node(node).subscribe_tracking(prefixes=prefixes) as subscription:
            self._subscriptions.add(subscription)
            try:
                yield subscription
            finally:
                self._subscriptions.discard(subscription)

    async def scan(self, match: str | bytes, *, count: int = 1000) -> AsyncIterator[list[bytes]]:
        """Yield batches of the key names matching ``match`` on every master.

        Each master is walked with ``SCAN`` to its end.  A master lost
        midway is walked again from the start on its successor, so a name
        may be yielded twice.  Keys that exist for the whole walk and stay on
        their slot are yielded; a key migrated to a master already walked
        may be missed (as a single server's ``SCAN`` may miss nothing but
        keys that come and go).

        Raises:
            StorageUnavailableError: a master (or its successor) could not be
                walked to its end within ``timeout`` per step: a partial walk
                is an error, never a short result.
            StorageError, StorageClosedError: as for :meth:`execute`.
        """
        slot_map = await self._topology.complete(self._deadline())
        pending = list(slot_map.primaries)
        walked: set[NodeAddress] = set()
        while pending:
            node = pending.pop(0)
            if node in walked:
                continue
            cursor = 0
            try:
                while True:
                    reply = await self._router.on_node(
                        node, ("SCAN", cursor, "MATCH", match, "COUNT", count), retry=False
                    )
                    cursor, names = _scan_reply(reply)
                    if names:
                        yield names
                    if cursor == 0:
                        break
            except StorageUnavailableError:
                # Walk its successor instead (found once the cluster has failed it over).
                successor = await self._topology.successor(node, slot_map, self._deadline())
                pending.append(successor)
                continue
            walked.add(node)

    async def wait_reconnected(self) -> None:
        """Wait until a connection to any node is next opened (see ``RedisClient``'s).

        Raises:
            StorageClosedError: the client is closed, or gets closed while waiting.
        """
        self._check_open()
        async with trio.open_nursery() as nursery:
            for client in self._router.node_clients():

                async def wait(client: RedisClient = client) -> None:
                    with contextlib.suppress(StorageClosedError):
                        await client.wait_reconnected()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wait)
        self._check_open()

    def statistics(self) -> RedisClusterStatistics:
        """Return a snapshot of the client's state."""
        slot_map = self._topology.map
        return RedisClusterStatistics(
            primaries=0 if slot_map is None else len(slot_map.primaries),
            nodes_connected=sum(c.statistics().connected for c in self._router.node_clients()),
            refreshes=self._topology.generation,
            moved=self._router.counts["moved"],
            asked=self._router.counts["asked"],
            retries=self._router.counts["retries"],
            subscriptions=sum(s.connected for s in self._subscriptions),
        )

    async def aclose(self) -> None:
        """Close every node's connections and subscriptions; idempotent.

        Calls waiting fail with :class:`StorageClosedError`, and so does every later call.
        """
        await self._router.aclose()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> RedisClusterClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        self._router.check_open()

    def _deadline(self) -> float:
        return self._router.deadline()


def redis_client_from_url(
    url: str, *, timeout: float | None = DEFAULT_TIMEOUT, ssl_context: ssl.SSLContext | None = None
) -> RedisClient | RedisClusterClient:
    """A :class:`RedisClusterClient` for a ``redis+cluster://`` URL, else a :class:`RedisClient`.

    Raises:
        ValueError: the URL or ``timeout`` is not valid.
    """
    if is_cluster_url(url):
        return RedisClusterClient.from_url(url, timeout=timeout, ssl_context=ssl_context)
    return RedisClient.from_url(url, timeout=timeout, ssl_context=ssl_context)


async def scan_names(
    client: RedisClient | RedisClusterClient, match: str | bytes, *, count: int = 1000
) -> AsyncIterator[list[bytes]]:
    """Yield batches of the key names matching ``match``: on every master of a cluster.

    Raises:
        StorageError: as for :meth:`RedisClusterClient.scan` / ``SCAN``.
    """
    if isinstance(client, RedisClusterClient):
        async for names in client.scan(match, count=count):
            yield names
        return
    cursor = 0
    while True:
        cursor, names = _scan_reply(
            await client.execute("SCAN", cursor, "MATCH", match, "COUNT", count)
        )
        if names:
            yield names
        if cursor == 0:
            return


def _scan_reply(reply: RedisReply) -> tuple[int, list[bytes]]:
    if (
        isinstance(reply, list)
        and len(reply) == 2
        and isinstance(reply[0], bytes)
        and reply[0].isdigit()
        and isinstance(reply[1], list)
        and all(isinstance(name, bytes) for name in reply[1])
    ):
        return int(reply[0]), reply[1]  # type: ignore[return-value]
    raise unexpected_reply("SCAN", reply)


def _command_name(name: CommandArg) -> str:
    if isinstance(name, str):
        return name.upper()
    if isinstance(name, bytes | bytearray | memoryview):
        return bytes(name).decode("utf-8", "replace").upper()
    return str(name)


def _check_cluster_command(name: str) -> None:
    reason = _CLUSTER_REFUSALS.get(name)
    if reason is not None:
        raise RedisCommandRefusedError(name, reason)
