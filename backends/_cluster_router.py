"""Sending commands to the master of their hash slot: redirects followed, outages ridden out.

The routing half of :class:`~backends.RedisClusterClient`, which checks
commands and adds pub/sub and the walks over every master on top.  A
:class:`ClusterRouter` owns one :class:`~backends.RedisClient` per node and
the :class:`~backends._cluster_topology.ClusterTopology` (the slot map), and
follows what the cluster answers:

* ``MOVED``: the slot has a new master; the map is read again and the
  command sent there.
* ``ASK``: the slot is being migrated and this key is already on the
  target; the command is sent there once, after ``ASKING``.
* ``TRYAGAIN`` / ``CLUSTERDOWN`` / ``MASTERDOWN`` / ``LOADING``, and a node
  that cannot be reached (a master that died, until its replica takes over):
  the command is tried again with backoff, the map read again, until the
  call's budget has passed; then the last error is raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Final

import attrs
import trio

from ._cluster_slots import (
    CrossSlotError,
    NodeAddress,
    SlotMap,
    command_slot,
    key_slot,
    parse_redirect,
)
from ._cluster_topology import FIRST_BACKOFF, MAX_BACKOFF, ClusterTopology
from ._errors import StorageClosedError, StorageError, StorageUnavailableError
from ._redis_address import RedisAddress
from ._redis_client import RedisClient, RedisReplyError
from ._resp import CommandArg, RedisReply

SPLITTABLE: Final = frozenset({"MGET", "DEL", "UNLINK", "EXISTS", "TOUCH"})
"""Multi-key commands run as one command per slot when their keys span slots."""
_MAX_REDIRECTS: Final = 16
"""``MOVED``/``ASK`` replies a call follows at once; past them it backs off like on an outage."""
_RETRY_BUDGET_WITHOUT_TIMEOUT: Final = 30.0
"""Seconds a call rides out redirects and outages when the client has no ``timeout``."""


class ClusterRouter:
    """Runs checked commands on the right master; one :class:`RedisClient` per node.

    Args:
        seeds: nodes to ask for the cluster's layout; the first one's
            credentials and TLS settings are used for every node.
        timeout: seconds each attempt may take (``None``: forever); also the
            budget for riding out redirects and outages (30 s when ``None``).
        ping_interval: the node clients' (for their subscriptions).
        use_hiredis: parse with hiredis when it is installed.

    Raises:
        ValueError: a bad ``timeout`` or ``ping_interval`` (checked by the
            first node client, built at once).
    """

    def __init__(
        self,
        seeds: Sequence[RedisAddress],
        *,
        timeout: float | None,
        ping_interval: float | None,
        use_hiredis: bool,
    ) -> None:
        self._template = seeds[0]
        self._timeout = timeout
        self._budget = timeout if timeout is not None else _RETRY_BUDGET_WITHOUT_TIMEOUT
        self._ping_interval = ping_interval
        self._use_hiredis = use_hiredis
        self._nodes: dict[NodeAddress, RedisClient] = {}
        # Built now: it checks timeout and ping_interval, and imports the parser.
        self.node((seeds[0].host, seeds[0].port))
        self.topology = ClusterTopology(
            [(seed.host, seed.port) for seed in seeds], self.node, timeout
        )
        self.counts = dict.fromkeys(("moved", "asked", "retries"), 0)
        """``MOVED`` and ``ASK`` replies followed, commands tried again."""
        self.closed = False

    def node(self, node: NodeAddress) -> RedisClient:
        """The client of ``node``, made on first use; never raises (its address is checked)."""
        client = self._nodes.get(node)
        if client is None:
            host, port = node
            address = attrs.evolve(self._template, host=host, port=port)
            client = RedisClient(
                address,
                timeout=self._timeout,
                ping_interval=self._ping_interval,
                use_hiredis=self._use_hiredis,
            )
            self._nodes[node] = client
        return client

    def node_clients(self) -> list[RedisClient]:
        """Every node client made so far."""
        return list(self._nodes.values())

    def check_open(self) -> None:
        """Raise :class:`StorageClosedError` once the cluster client is closed."""
        if self.closed:
            raise StorageClosedError(
                "the redis cluster client is closed", backend="RedisClusterClient"
            )

    async def aclose(self) -> None:
        """Close every node client; calls waiting fail with :class:`StorageClosedError`."""
        self.closed = True
        self.topology.close()
        for client in self.node_clients():
            await client.aclose()

    def deadline(self) -> float:
        """Trio time until which a call begun now rides out outages."""
        return trio.current_time() + self._budget

    async def execute(self, name: str, args: Sequence[CommandArg]) -> RedisReply:
        """Run a checked command (``name`` its upper-cased name) on the master of its slot.

        Under cancellation it behaves like :meth:`RedisClient.execute`.

        Raises:
            CrossSlotError: its keys span slots and it cannot be split.
            RedisReplyError, StorageUnavailableError, StorageError: as for
                :meth:`~backends.RedisClusterClient.execute`.
        """
        try:
            slot = command_slot(name, args)
        except CrossSlotError:
            if name not in SPLITTABLE:
                raise
            return await self._split(name, args)
        return await self.routed(slot, args, name)

    async def pipeline(
        self, batch: list[tuple[CommandArg, ...]], names: list[str]
    ) -> list[RedisReply]:
        """Run checked commands, each node's together, the nodes in parallel.

        A command's error reply is returned in its place; a command redirected
        is sent again alone after the rest of its node's batch.

        Raises:
            CrossSlotError: a command's keys span slots and it cannot be split.
            StorageUnavailableError, StorageError: a command could not run.
        """
        replies: list[RedisReply] = [None] * len(batch)
        if not batch:
            await trio.lowlevel.checkpoint()
            return replies
        slot_map: SlotMap | None = self.topology.map
        if slot_map is None:
            # No map and none to be had now: every command goes alone, riding it out.
            with contextlib.suppress(StorageUnavailableError):
                slot_map = await self.topology.current()
        groups: dict[NodeAddress, list[int]] = {}
        alone: list[int] = []
        for index, (name, command) in enumerate(zip(names, batch, strict=True)):
            try:
                slot = command_slot(name, command)
            except CrossSlotError:
                if name not in SPLITTABLE:
                    raise
                alone.append(index)
                continue
            node = None if slot_map is None else _owner_in(slot_map, slot)
            if node is None:
                alone.append(index)
            else:
                groups.setdefault(node, []).append(index)
        run = _PipelineRun(self, batch, names, replies)
        if len(groups) == 1 and not alone:
            ((node, indexes),) = groups.items()
            await run.on_node(node, indexes)
        else:
            async with trio.open_nursery() as nursery:
                for node, indexes in groups.items():
                    nursery.start_soon(run.on_node, node, indexes)
                for index in alone:
                    nursery.start_soon(run.alone, index)
        if run.failures:
            raise run.failures[0]
        return replies

    async def routed(self, slot: int | None, args: Sequence[CommandArg], name: str) -> RedisReply:
        """Run ``args`` on the master of ``slot``, following redirects and riding out outages.

        Raises:
            RedisReplyError: the server's error (not a redirect nor a transient
                one), or the last transient one when the budget ran out.
            StorageUnavailableError: no master could run it within the budget.
            StorageClosedError: the client was closed.
        """
        deadline: float | None = None  # set by the first failure: the hot path reads no clock
        delay = FIRST_BACKOFF
        redirects = 0
        asking: NodeAddress | None = None
        while True:
            self.check_open()
            generation = self.topology.generation
            failure: Exception
            try:
                if asking is not None:
                    node, asking = asking, None
                    replies = await self.node(node).pipeline(
                        [("ASKING",), args], raise_on_error=False
                    )
                    if isinstance(replies[1], Exception):
                        raise reply_error(replies[1], name)
                    return replies[1]
                slot_map = self.topology.map
                if slot_map is None:
                    slot_map = await self.topology.current()
                node_or_none = _owner_in(slot_map, slot)
                if node_or_none is None:
                    raise StorageUnavailableError(
                        f"redis cluster: no master serves slot {slot}",
                        backend="RedisClusterClient",
                        operation=name,
                    )
                return await self.node(node_or_none).execute(*args)
            except RedisReplyError as exc:
                redirect = _redirect(exc.error)
                if redirect is None:
                    raise
                kind, target = redirect
                # Bounded: nodes that send a caller round in circles (a cluster
                # misconfigured, or not what it claims) get the retry path below.
                if target is not None and redirects < _MAX_REDIRECTS:
                    redirects += 1
                    if kind == "ASK":
                        self.counts["asked"] += 1
                        asking = target[1]
                        continue
                    self.counts["moved"] += 1
                    await self.topology.moved(generation, *target)
                    continue
                failure = exc
            except StorageUnavailableError as exc:
                failure = exc
            except StorageClosedError as exc:
                if self.closed:
                    raise
                failure = exc  # a node client closed under us: cannot happen, but never fatal
            now = trio.current_time()
            if deadline is None:
                deadline = now + self._budget
            if now >= deadline:
                raise failure
            self.counts["retries"] += 1
            await trio.sleep(min(delay, deadline - now))
            delay = min(delay * 2, MAX_BACKOFF)
            with contextlib.suppress(StorageError):
                await self.topology.refresh(generation)

    async def on_node(
        self, node: NodeAddress, args: Sequence[CommandArg], *, retry: bool = True
    ) -> RedisReply:
        """Run ``args`` on ``node`` itself (no routing), retrying transient errors if ``retry``.

        Raises:
            RedisReplyError, StorageUnavailableError: the node's error, once
                ``retry`` is off or the budget ran out.
            StorageError, StorageClosedError: as for :meth:`RedisClient.execute`.
        """
        deadline = self.deadline()
        delay = FIRST_BACKOFF
        while True:
            try:
                return await self.node(node).execute(*args)
            except (StorageUnavailableError, RedisReplyError) as exc:
                if isinstance(exc, RedisReplyError) and _redirect(exc.error) is None:
                    raise
                now = trio.current_time()
                if not retry or now >= deadline:
                    raise
                await trio.sleep(min(delay, deadline - now))
                delay = min(delay * 2, MAX_BACKOFF)

    async def _split(self, name: str, args: Sequence[CommandArg]) -> RedisReply:
        """Run a multi-key command whose keys span slots as one command per slot."""
        by_slot: dict[int, list[int]] = {}
        keys = args[1:]
        for position, key in enumerate(keys):
            by_slot.setdefault(key_slot(key), []).append(position)
        parts = list(by_slot.values())
        replies = await self.pipeline(
            [(args[0], *(keys[position] for position in part)) for part in parts],
            [name] * len(parts),
        )
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply_error(reply, name)
        if name == "MGET":
            values: list[RedisReply] = [None] * len(keys)
            for part, reply in zip(parts, replies, strict=True):
                if not isinstance(reply, list) or len(reply) != len(part):
                    raise unexpected_reply(name, reply)
                for position, value in zip(part, reply, strict=True):
                    values[position] = value
            return values
        total = 0
        for reply in replies:
            if not isinstance(reply, int):
                raise unexpected_reply(name, reply)
            total += reply
        return total


@attrs.define(eq=False)
class _PipelineRun:
    """One :meth:`ClusterRouter.pipeline` call: its commands, and the replies the nodes'
    groups fill in as they run in parallel (a failure to run is kept, not raised, so that
    the other groups finish)."""

    router: ClusterRouter
    batch: list[tuple[CommandArg, ...]]
    names: list[str]
    replies: list[RedisReply]
    failures: list[Exception] = attrs.Factory(list)

    async def on_node(self, node: NodeAddress, indexes: list[int]) -> None:
        """Send the commands at ``indexes`` to ``node`` together; redirected ones go alone."""
        try:
            try:
                group = await self.router.node(node).pipeline(
                    [self.batch[index] for index in indexes], raise_on_error=False
                )
            except (StorageUnavailableError, StorageClosedError):
                if self.router.closed:
                    raise
                # The node is gone: each command finds its way alone (it may have run).
                for index in indexes:
                    self.replies[index] = await self._one(index)
                return
            for index, reply in zip(indexes, group, strict=True):
                if isinstance(reply, Exception) and _redirect(reply) is not None:
                    reply = await self._one(index)
                self.replies[index] = reply
        except Exception as exc:
            self.failures.append(exc)

    async def alone(self, index: int) -> None:
        """Run the command at ``index`` by itself, routed as :meth:`ClusterRouter.execute`."""
        try:
            self.replies[index] = await self._one(index)
        except Exception as exc:
            self.failures.append(exc)

    async def _one(self, index: int) -> RedisReply:
        """The reply to the command at ``index`` run alone: an error reply returned in place."""
        try:
            return await self.router.execute(self.names[index], self.batch[index])
        except RedisReplyError as exc:
            return exc.error


def reply_error(error: Exception, operation: str) -> RedisReplyError:
    """The :class:`RedisReplyError` raised for the error reply ``error`` to ``operation``."""
    from redis.exceptions import RedisError

    assert isinstance(error, RedisError)
    raised = RedisReplyError(
        f"redis {operation}: {type(error).__name__}: {error}", error=error, operation=operation
    )
    raised.__cause__ = error
    return raised


def unexpected_reply(operation: str, reply: object) -> StorageError:
    """The error raised for a reply to ``operation`` of a shape it cannot have."""
    return StorageError(
        f"redis {operation}: unexpected reply {reply!r:.100}",
        backend="RedisClusterClient",
        operation=operation,
    )


def _owner_in(slot_map: SlotMap, slot: int | None) -> NodeAddress | None:
    if slot is None:
        primaries = slot_map.primaries
        return primaries[0] if primaries else None
    return slot_map.owners[slot]


def _redirect(error: object) -> tuple[str, tuple[int, NodeAddress] | None] | None:
    """What a cluster error reply asks for: ``("MOVED"|"ASK", target)`` or ``(kind, None)``.

    ``None``: not a reply the client follows (a real error for the caller).
    """
    if not isinstance(error, Exception):
        return None
    text = str(error)
    kind = type(error).__name__
    if kind == "MovedError":
        return "MOVED", parse_redirect(text)
    if kind == "AskError":
        return "ASK", parse_redirect(text)
    if kind in ("TryAgainError", "ClusterDownError", "MasterDownError", "BusyLoadingError"):
        return "RETRY", None
    return None


__all__ = ["SPLITTABLE", "ClusterRouter", "reply_error", "unexpected_reply"]
