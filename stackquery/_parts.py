"""ClientParts: what a query client owns, built from its config, and the tasks they run.

The client is a facade; this is where its parts are made and wired, once:
the L1 table, the L2 store and its tier, the fleet (only on Redis), and,
when the client opens, the supervisor and registry of the key actors, the
callers' cold reads and :class:`~stackquery._owners.QueryOwners` over them,
and the attach endpoint when ``admin_socket`` is set.  Each part is handed the
parts it uses; none of them knows the client (the endpoint's commands go
through the client's public methods, handed over as :class:`ClientCommands`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from actors import Registry, Supervisor

from ._clock import Clock
from ._events import EventHub
from ._fetch_lanes import FetchLanes
from ._hydration import ColdReads
from ._l2 import L2Cache
from ._l2_tier import L2Tier
from ._options import QueryClientConfig
from ._owners import QueryOwners
from ._query_actor import ActorParts, QueryActor
from ._query_cache import QueryCache
from ._records import ClientStatistics
from .fleet._counters import logger as fleet_logger
from .fleet._link import RedisLink, find_redis
from .serializers import Serializer, as_serializer
from .serializers import json as json_serializer

if TYPE_CHECKING:
    from .admin._server import ClientCommands
    from .fleet._fleet import Fleet


def require_trio() -> None:
    """Raise a clear error when called outside ``trio.run`` (under asyncio, say).

    Raises:
        RuntimeError: not running under trio.
    """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise RuntimeError(
            "stackquery runs under trio: use the client inside trio.run "
            "(from asyncio code, through trio-asyncio)"
        ) from None


class ClientParts:
    """The parts of one query client.

    Args:
        config: the client's configuration.
    """

    def __init__(self, config: QueryClientConfig) -> None:
        self.config = config
        # With an attach endpoint, the hub also feeds its ring of recent events.
        self.events = EventHub()
        self.cache = QueryCache(config, self.events)
        configured = config.serializer
        self.serializer: Serializer = (
            as_serializer(configured) if configured is not None else json_serializer
        )
        self.l2: L2Cache | None = None
        self.tier: L2Tier | None = None
        self.fleet: Fleet | None = None
        self._fleet_off: str | None = None
        """Why the client runs without a fleet it was asked for (logged when it opens)."""
        if config.storage is not None:
            redis = find_redis(config.storage)
            self.l2 = L2Cache(
                config.storage,
                self.serializer,
                config.key_prefix,
                config.l2_timeout,
                reconnected=redis.client.wait_reconnected if isinstance(redis, RedisLink) else None,
            )
            self.tier = L2Tier(self.cache, self.l2, config.storage_ttl)
            self.fleet = self._build_fleet(self.l2, self.tier, redis)
        self.supervisor: Supervisor | None = None
        self.registry: Registry[str, QueryActor] | None = None
        self.owners: QueryOwners | None = None
        self._writer_scope = trio.CancelScope(shield=True)

    def _build_fleet(self, l2: L2Cache, tier: L2Tier, redis: RedisLink | str) -> Fleet | None:
        config = self.config
        if config.broadcast is False and config.single_flight is False:
            return None
        if not isinstance(redis, RedisLink):
            # Off without a word when nobody asked for it and there is no Redis at all.
            asked = config.broadcast or config.single_flight
            if asked or not redis.startswith("no RedisStorage"):
                self._fleet_off = redis
            return None
        from .fleet._fleet import Fleet  # here: only a client on Redis runs a fleet

        fleet = Fleet(
            redis.client,
            self.cache,
            tier,
            key_prefix=redis.prefix + config.key_prefix,
            db=redis.db,
            lease_time=config.lease_time,
            poll_interval=config.lease_poll_interval,
            timeout=config.l2_timeout,
            broadcast=config.broadcast,
            single_flight=config.single_flight,
            tracking=config.redis_tracking,
        )
        l2.on_written = fleet.written
        if fleet.broadcasts:
            l2.on_deleted = fleet.announce_deleted
        return fleet

    @asynccontextmanager
    async def running(self, commands: ClientCommands | None = None) -> AsyncIterator[QueryOwners]:
        """Run the parts in a nursery of their own for the duration of the block.

        With ``admin_socket`` set and ``commands`` given, the attach endpoint
        is listening when the block starts.

        Leaving lets pending L2 writes land (bounded by ``shutdown_timeout``,
        shielded: a block left by cancellation still gets its writes in),
        then closes and cancels every actor, fetch and timer.  The block's
        own exception leaves as it was raised, not in an exception group, so
        ``except KeyError`` around the block works; anything else (an
        escalated actor crash) stays a group: structured concurrency fails
        loudly.
        """
        raised: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    owners = self.open(nursery)
                    if self.config.admin_socket is not None and commands is not None:
                        await self._start_admin(nursery, owners, commands)
                    yield owners
                except BaseException as exc:
                    raised = exc
                    raise
                finally:
                    try:
                        await self.flush()
                    finally:
                        self.close()
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if raised is None or len(group.exceptions) != 1 or group.exceptions[0] is not raised:
                raise
        finally:
            if self.owners is not None:
                self.owners.stop_actors()
            if self.l2 is not None:
                self.l2.stop_writes()
        # Raised here, outside the handler: the group does not become its context.
        if raised is not None:
            raise raised

    def open(self, nursery: trio.Nursery) -> QueryOwners:
        """Build the actors' registry and the owners, and start every task in ``nursery``."""
        cache, tier, fleet, config = self.cache, self.tier, self.fleet, self.config
        leases = fleet.leases if fleet is not None else None
        supervisor = Supervisor(nursery, config.restart_intensity)
        registry: Registry[str, QueryActor] = Registry(
            supervisor, lambda key_hash: QueryActor(key_hash, parts)
        )
        parts = ActorParts(
            cache=cache,
            config=config,
            tier=tier,
            leases=leases,
            registry=registry,
            spawn=nursery.start_soon,
            lanes=FetchLanes(nursery),
        )
        cold_reads = ColdReads(cache, tier, registry, nursery) if tier is not None else None
        owners = QueryOwners(cache, registry, tier, cold_reads, nursery)
        self.supervisor, self.registry, self.owners = supervisor, registry, owners
        cache.open(Clock.start(), owners.is_busy)
        if self._fleet_off is not None:
            fleet_logger.warning("fleet off (no broadcast, no single flight): %s", self._fleet_off)
        nursery.start_soon(cache.run_timers, name="stackquery-timers")
        nursery.start_soon(cache.run_use_clock, name="stackquery-use-clock")
        if self.l2 is not None:
            nursery.start_soon(self.l2.run_reader, name="stackquery-l2-reader")
            nursery.start_soon(self._run_writer, self.l2, name="stackquery-l2-writer")
        if fleet is not None and fleet.broadcasts:
            fleet.open(owners)
            nursery.start_soon(fleet.run_subscriber, name="stackquery-fleet-subscriber")
            nursery.start_soon(fleet.run_publisher, name="stackquery-fleet-publisher")
        return owners

    async def _start_admin(
        self, nursery: trio.Nursery, owners: QueryOwners, commands: ClientCommands
    ) -> None:
        """Start the attach endpoint; it listens once this returns.

        Raises:
            AdminSocketError: the socket could not be made at ``admin_socket``.
        """
        assert self.config.admin_socket is not None
        # Here: most clients serve no attach endpoint, and need not import it.
        from .admin._server import AdminParts, AdminServer

        parts = AdminParts(
            cache=self.cache,
            owners=owners,
            commands=commands,
            statistics=self.statistics,
            events=self.events,
            l2=self.l2,
            fleet=self.fleet,
            key_prefix=self.config.key_prefix,
        )
        server = AdminServer(os.fspath(self.config.admin_socket), parts)
        await nursery.start(server.serve, name="stackquery-admin-socket")

    async def _run_writer(self, l2: L2Cache) -> None:
        # Shielded until close: a block left by cancellation must still be able
        # to flush its writes, and the writer is the one who writes them.
        with self._writer_scope:
            await l2.run_writer()

    async def flush(self) -> None:
        """Let pending L2 writes land (within ``shutdown_timeout``, shielded); stop the writer."""
        if self.l2 is None:
            await trio.lowlevel.checkpoint()
            return
        try:
            with trio.CancelScope(shield=True):
                await self.l2.flush(self.config.shutdown_timeout)
        finally:
            self._writer_scope.cancel()

    def close(self) -> None:
        """Accept nothing more; end the event streams.  The tasks end with the nursery."""
        if self.owners is not None:
            self.owners.close()
        self.events.close_all()

    def statistics(self) -> ClientStatistics:
        """Return the current :class:`ClientStatistics`."""
        reg = self.registry.statistics() if self.registry is not None else None
        sup = self.supervisor.statistics() if self.supervisor is not None else None
        return ClientStatistics(
            queries=len(self.cache),
            active_actors=reg.active if reg else 0,
            activations=reg.activations if reg else 0,
            passivations=reg.passivations if reg else 0,
            restarts=sup.restarts if sup else 0,
            timers=self.cache.timer_count,
            circuits=self.cache.origin.circuit_statistics(),
            stale_if_error_served=self.cache.origin.stale_if_error_served,
            freshness_errors=self.cache.freshness.errors,
        )


__all__ = ["ClientParts", "require_trio"]
