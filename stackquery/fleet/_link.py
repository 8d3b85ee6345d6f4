"""Where a client's fleet reaches Redis: a ``RedisStorage`` in its store, wrappers and all.

The store may be a ``RedisStorage``, or wrap one (``InstrumentedStorage``,
``ChainStorage``, or any store that names what it wraps in ``inner_stores``).
The fleet runs on the trio-native :class:`~backends.RedisClient` of the
lowest such store (in a chain, the most authoritative level).  Its channel
and lease keys are named after that store's ``prefix``, the client's
``key_prefix`` and the database number, so that clients that do not share
entries never share messages or leases either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from backends import ops

if TYPE_CHECKING:  # the Redis client is imported when a store holds one, not with stackquery
    from backends import RedisClient, RedisClusterClient

    FleetRedis = RedisClient | RedisClusterClient
    """What a fleet talks through: one server, or a cluster (the same command surface)."""


@attrs.frozen
class RedisLink:
    """The Redis a fleet runs on."""

    client: FleetRedis
    """The trio-native client of the ``RedisStorage`` found (a cluster's, on a cluster)."""
    prefix: str
    """That store's own ``prefix``: in front of every key the fleet names."""
    db: int
    """The database number (pub/sub channels are shared by every database)."""


def find_redis(store: object) -> RedisLink | str:
    """Return the :class:`RedisLink` of the ``RedisStorage`` in ``store``, or why there is none.

    Returns:
        the link, or a sentence saying why the fleet cannot run on ``store``.
    """
    from backends import RedisClient, RedisClusterClient, RedisStorage

    found = [s for s in ops.stores_within(store) if isinstance(s, RedisStorage)]
    usable = [s for s in found if isinstance(s.redis, RedisClient | RedisClusterClient)]
    if usable:
        redis_storage = usable[-1]
        client = redis_storage.redis
        assert isinstance(client, RedisClient | RedisClusterClient)
        return RedisLink(client, redis_storage.prefix, client.address.db)
    if found:
        return (
            "the RedisStorage talks through a redis.asyncio client; "
            "give it a URL or a backends.RedisClient"
        )
    return f"no RedisStorage in the {type(store).__name__}"


def channel_name(prefix: str, db: int = 0) -> str:
    """The pub/sub channel of the clients whose entries live under ``prefix`` in database ``db``.

    ``prefix`` is the whole text in front of each canonical key in Redis: the
    ``RedisStorage``'s own prefix followed by the client's ``key_prefix``.
    """
    return f"{prefix}events:db{db}"


__all__ = ["FleetRedis", "RedisLink", "channel_name", "find_redis"]
