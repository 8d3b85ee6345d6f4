"""What the fleet counts, and its one throttled error log."""

from __future__ import annotations

import logging

import attrs

from .._throttle import ThrottledWarning

logger = logging.getLogger("stackquery.fleet")


@attrs.frozen
class FleetStatistics:
    """Counts of what the fleet layer did since the client opened."""

    connected: bool
    """Whether the pub/sub subscription is up now."""
    subscriptions: int
    """Times the subscription was (re)established."""
    published: int
    overflows: int
    """Times the messages waiting for Redis passed ``MAX_PENDING_MESSAGES`` and were
    replaced by one telling every process to mark all it holds stale."""
    received: int
    """Messages from other processes that passed the checks and were applied (a newer
    client's operation: ignored)."""
    rejected: int
    """Messages that failed the checks (malformed or forged), or failed to apply; logged."""
    leases_taken: int
    leases_waited: int
    """Fetches that waited for another process's value instead of calling the origin."""
    takeovers: int
    """Leases taken after waiting (the holder finished without a value, or died)."""
    lease_wait_timeouts: int
    """Waits for another process's lease that ran out (3 x ``lease_time``, or the
    query's ``timeout``): the origin was called without the lease."""
    foreign_leases: int
    """Lease keys found without an expiry (no stackquery client sets one) and given one."""
    errors: int
    tracking: bool = False
    """Whether the server tells this client of every change to its keys (``redis_tracking``)."""
    keys_invalidated: int = 0
    """Keys the server said changed (a write by anybody, an expiry, an eviction)."""
    invalidations_checked: int = 0
    """Of those, keys held in L1 whose L2 entry was read to see what changed."""
    invalidations_applied: int = 0
    """Keys whose newer L2 entry (another process's) was taken into L1 that way."""
    invalidations_stale: int = 0
    """Keys marked stale because L2 no longer held their data (gone, foreign, invalidated)."""
    flushes: int = 0
    """Times the server said every key changed (``FLUSHDB``/``FLUSHALL``): all marked stale."""


class FleetCounters:
    """The counts behind :class:`FleetStatistics`, shared by the broadcast and the leases."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "subscriptions",
                "published",
                "overflows",
                "received",
                "rejected",
                "leases_taken",
                "leases_waited",
                "takeovers",
                "lease_wait_timeouts",
                "foreign_leases",
                "errors",
                "keys_invalidated",
                "invalidations_checked",
                "invalidations_applied",
                "invalidations_stale",
                "flushes",
            ),
            0,
        )
        self._error_log = ThrottledWarning(logger)

    def on_error(self, operation: str, error: BaseException) -> None:
        """Count a failed Redis call and log it (at most one warning every few seconds)."""
        self.counts["errors"] += 1
        self._error_log.warning("fleet %s failed: %r", operation, error)

    def statistics(self, *, connected: bool, tracking: bool = False) -> FleetStatistics:
        """Return the current :class:`FleetStatistics`."""
        return FleetStatistics(connected=connected, tracking=tracking, **self.counts)


__all__ = ["FleetCounters", "FleetStatistics", "logger"]
