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
            ),
            0,
        )
        self._error_log = ThrottledWarning(logger)

    def on_error(self, operation: str, error: BaseException) -> None:
        """Count a failed Redis call and log it (at most one warning every few seconds)."""
        self.counts["errors"] += 1
        self._error_log.warning("fleet %s failed: %r", operation, error)

    def statistics(self, *, connected: bool) -> FleetStatistics:
        """Return the current :class:`FleetStatistics`."""
        return FleetStatistics(connected=connected, **self.counts)


__all__ = ["FleetCounters", "FleetStatistics", "logger"]
