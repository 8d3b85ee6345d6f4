"""``stackquery inspect``: a table of what an L2 store holds under the key prefix."""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, TextIO

import attrs
import trio

from ._output import EXIT_OK, EXIT_PROBLEMS, Column, format_duration, print_json, print_table
from ._stores import (
    EntryInfo,
    EntryStatus,
    RawEntry,
    StoreTarget,
    decode_key,
    describe_entry,
    open_local_store,
    walk_redis,
)

COLUMNS = (
    Column("KEY"),
    Column("AGE", "right"),
    Column("TTL", "right"),
    Column("SIZE", "right"),
    Column("SERIALIZER"),
    Column("INVALIDATED"),
    Column("STATUS"),
)
_STATUSES: tuple[EntryStatus, ...] = ("ok", "lease", "foreign", "corrupt")


@attrs.frozen
class InspectReport:
    """What ``inspect`` found."""

    target: StoreTarget
    prefix: str
    entries: list[EntryInfo]
    """The entries shown, by key name (the first ``limit`` of them)."""
    counts: dict[EntryStatus, int]
    """How many keys under the prefix had each status (all of them, not only those shown)."""
    now: float
    """Wall-clock seconds at which ages are taken."""

    @property
    def total(self) -> int:
        """How many keys are under the prefix."""
        return sum(self.counts.values())

    @property
    def problems(self) -> int:
        """How many keys under the prefix are foreign or corrupt."""
        return self.counts["foreign"] + self.counts["corrupt"]


async def collect(target: StoreTarget, prefix: str, *, limit: int | None = None) -> InspectReport:
    """Walk the store under ``prefix`` and describe every key.

    Args:
        target: the store.
        prefix: the text in front of every canonical key.
        limit: keep only the first ``limit`` entries by key name (all are counted).

    Raises:
        CommandError: the store could not be opened, reached or read.
    """
    counts: Counter[EntryStatus] = Counter()
    kept: list[EntryInfo] = []
    async with aclosing(_walk(target, prefix)) as entries:
        async for entry in entries:
            info = describe_entry(entry, prefix)
            counts[info.status] += 1
            kept.append(info)
            # Trimmed now and then, so that a limited look at a big store stays small.
            if limit is not None and len(kept) >= 2 * limit + 1000:
                kept = _first(kept, limit)
    shown = _first(kept, len(kept) if limit is None else limit)
    return InspectReport(
        target, prefix, shown, {status: counts[status] for status in _STATUSES}, time.time()
    )


def _first(infos: list[EntryInfo], count: int) -> list[EntryInfo]:
    return sorted(infos, key=lambda info: info.name)[:count]


async def _walk(target: StoreTarget, prefix: str) -> AsyncGenerator[RawEntry, None]:
    if target.kind == "redis":
        async with aclosing(walk_redis(target.location, prefix)) as entries:
            async for entry in entries:
                yield entry
        return
    async with open_local_store(target) as store, aclosing(store.walk(prefix)) as entries:
        async for entry in entries:
            yield entry


def table_row(info: EntryInfo, prefix: str, now: float) -> list[str]:
    """Return the table cells of one entry."""
    age = "-" if info.data_updated_at is None else format_duration(now - info.data_updated_at)
    ttl = "never" if info.ttl is None else format_duration(info.ttl)
    invalidated = "-" if info.invalidated is None else ("yes" if info.invalidated else "no")
    return [
        info.key if info.key is not None else info.name[len(prefix) :],
        age,
        ttl,
        str(info.size),
        info.serializer or "-",
        invalidated,
        info.status,
    ]


def summary(report: InspectReport) -> str:
    """Return the line that counts what was found."""
    where = f"under {report.prefix!r} in the {report.target.describe()}"
    if report.total == 0:
        return f"no keys {where}"
    noun = "key" if report.total == 1 else "keys"
    counts = ", ".join(f"{report.counts[status]} {status}" for status in _STATUSES)
    line = f"{report.total} {noun} {where}: {counts}"
    if len(report.entries) < report.total:
        line += f"; showing the first {len(report.entries)} by name"
    return line


def suggested_prefix(report: InspectReport) -> str | None:
    """Return the prefix that foreign keys shown would be entries under, if they point to one.

    ``app:sq:["user",1]`` looked at under ``app:`` is foreign, but it is a
    canonical key behind ``app:sq:`` (a RedisStorage prefix, then the client's).
    """
    candidates: Counter[str] = Counter()
    for info in report.entries:
        if info.status != "foreign" or info.key is not None:
            continue
        rest = info.name[len(report.prefix) :]
        start = rest.find("[")
        if start > 0 and decode_key(rest[start:]) is not None:
            candidates[report.prefix + rest[:start]] += 1
    if not candidates:
        return None
    return candidates.most_common(1)[0][0]


def as_json(report: InspectReport) -> dict[str, Any]:
    """Return the report as a JSON-ready dict (``inspect --json``)."""
    return {
        "store": report.target.describe(),
        "prefix": report.prefix,
        "now": report.now,
        "total": report.total,
        "counts": report.counts,
        "entries": [
            {
                "name": info.name,
                "key": info.key,
                "status": info.status,
                "size": info.size,
                "ttl": info.ttl,
                "age": None if info.data_updated_at is None else report.now - info.data_updated_at,
                "data_updated_at": info.data_updated_at,
                "serializer": info.serializer,
                "invalidated": info.invalidated,
                "problem": info.problem,
            }
            for info in report.entries
        ],
    }


def print_report(report: InspectReport, *, out: TextIO, plain: bool = False) -> None:
    """Print the table, the problems found among the rows shown, and the summary."""
    if report.entries:
        rows = [table_row(info, report.prefix, report.now) for info in report.entries]
        print_table(COLUMNS, rows, stream=out, plain=plain)
        problems = [info for info in report.entries if info.problem is not None]
        if problems:
            print("\nproblems:", file=out)
            for info in problems:
                print(f"  {info.name}: {info.status}: {info.problem}", file=out)
        print(file=out)
    print(summary(report), file=out)
    hint = suggested_prefix(report)
    if hint is not None:
        print(f"hint: some foreign keys are entries under --prefix {hint!r}", file=out)


def run_inspect(
    target: StoreTarget,
    prefix: str,
    *,
    json_output: bool = False,
    limit: int | None = None,
    plain: bool = False,
    out: TextIO,
) -> int:
    """Run ``stackquery inspect``; return the exit code.

    Returns:
        ``EXIT_PROBLEMS`` when foreign or corrupt keys are under the prefix,
        else ``EXIT_OK``.

    Raises:
        CommandError: the store could not be opened, reached or read.
    """
    report = trio.run(functools.partial(collect, target, prefix, limit=limit))
    if json_output:
        print_json(as_json(report), stream=out)
    else:
        print_report(report, out=out, plain=plain)
    return EXIT_PROBLEMS if report.problems else EXIT_OK
