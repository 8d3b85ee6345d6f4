"""``stackquery top --attach PATH``: a live view of a running client.

Each refresh asks the endpoint for its statistics and for the most fetched
keys, and derives rates from the previous refresh (the first frame, and
``--once``, show averages since the client opened).  What the rates count:

* **cold/s**: fetches of keys that had no data (misses that reached the origin;
  concurrent callers of one key count once);
* **refetch/s**: fetches of keys that had data (stale or invalidated reads,
  observers' intervals);
* **failed/s**: fetches that failed after their retries;
* **L2 hit %**: of the keys read from the second tier, the share found there.

Fresh L1 hits are not counted: the hit path counts nothing, by design (a
decorated function's ``metrics=`` counts its own).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import attrs
import trio

from ..admin import AdminConnection, AdminError, open_admin_connection
from ._output import (
    EXIT_OK,
    Column,
    CommandError,
    format_duration,
    format_plain_table,
    key_text,
    load_rich,
)

KEY_COLUMNS = (
    Column("KEY"),
    Column("FETCH/S", "right"),
    Column("FETCHES", "right"),
    Column("ERRORS", "right"),
    Column("STATUS"),
    Column("AGE", "right"),
    Column("OBS", "right"),
)
_CANDIDATES = 5
"""Keys asked for per row shown: a key fetched often lately may not lead in total fetches."""


@attrs.frozen
class Sample:
    """What one refresh read from the endpoint."""

    stats: dict[str, Any]
    """The ``stats`` reply."""
    snapshot: dict[str, Any]
    """The ``snapshot`` reply (most fetched keys first)."""


async def take_sample(admin: AdminConnection, rows: int) -> Sample:
    """Read the statistics and the most fetched keys.

    Raises:
        AdminError: the endpoint refused, or the connection broke.
    """
    stats = await admin.request("stats")
    snapshot = await admin.request("snapshot", order="fetches", limit=max(rows * _CANDIDATES, 50))
    return Sample(stats, snapshot)


@attrs.frozen
class Frame:
    """One screenful of ``top``, ready to print."""

    title: str
    lines: tuple[str, ...]
    """The lines above the table."""
    rows: tuple[tuple[str, ...], ...]
    """The busiest keys' cells, in :data:`KEY_COLUMNS` order."""


def _counter(stats: dict[str, Any], *path: str) -> float:
    value: Any = stats
    for name in path:
        if not isinstance(value, dict):
            return 0.0
        value = value.get(name)
    return float(value) if isinstance(value, int | float) else 0.0


def build_frame(path: str, previous: Sample | None, current: Sample, *, rows: int) -> Frame:
    """Derive rates and the busiest keys from two samples (or one: averages since start).

    Args:
        path: the socket, for the title.
        previous: the sample before, or ``None``.
        current: the sample now.
        rows: how many keys to show.
    """
    stats = current.stats
    if previous is not None and current.stats["now"] > previous.stats["now"]:
        seconds = float(current.stats["now"] - previous.stats["now"])
        before = previous.stats
        over = f"rates over the last {seconds:.1f} s"
    else:
        seconds = max(float(stats["uptime"]), 1e-9)
        before = {}
        over = "rates since the client opened"

    def rate(*name: str) -> float:
        return (_counter(stats, *name) - _counter(before, *name)) / seconds

    uptime = format_duration(stats["uptime"])
    title = f"stackquery top: {path} (pid {stats['pid']}), up {uptime}; {over}"
    summary = current.snapshot["summary"]
    client = stats["client"]
    lines = [
        f"keys {summary['keys']}  actors {client['active_actors']}  fetching {summary['fetching']}"
        f"  stale {summary['stale']}  in error {summary['error']}"
        f"  observers {summary['observers']}  timers {client['timers']}",
        f"fetches/s  cold {rate('events', 'fetches', 'cold'):.1f}"
        f"  refetch {rate('events', 'fetches', 'refetch'):.1f}"
        f"  failed {rate('events', 'fetches', 'failed'):.1f}",
        _l2_line(stats.get("l2"), rate),
        _fleet_line(stats.get("fleet"), rate),
        _breakers_line(stats.get("breakers") or {}),
    ]
    return Frame(title, tuple(lines), _key_rows(previous, current, rows, seconds))


def _l2_line(l2: dict[str, Any] | None, rate: Any) -> str:
    if l2 is None:
        return "L2  none"
    hits, misses = rate("l2", "hits"), rate("l2", "misses")
    hit = f"{100 * hits / (hits + misses):.0f} %" if hits + misses else "-"
    return (
        f"L2  reads/s {rate('l2', 'reads'):.1f}  hit {hit}  writes/s {rate('l2', 'writes'):.1f}"
        f"  pending {l2['pending_writes']}  errors {l2['errors']}  corrupt {l2['corrupt']}"
    )


def _fleet_line(fleet: dict[str, Any] | None, rate: Any) -> str:
    if fleet is None:
        return "fleet  none"
    state = "connected" if fleet["connected"] else "DISCONNECTED"
    return (
        f"fleet  {state}  published/s {rate('fleet', 'published'):.1f}"
        f"  received/s {rate('fleet', 'received'):.1f}"
        f"  leases/s {rate('fleet', 'leases_taken'):.1f}  errors {fleet['errors']}"
    )


def _breakers_line(breakers: dict[str, Any]) -> str:
    if not breakers:
        return "breakers  none"
    states = "  ".join(
        f"{name} {info.get('state', '?') if isinstance(info, dict) else info}"
        for name, info in sorted(breakers.items())
    )
    return f"breakers  {states}"


def _key_rows(
    previous: Sample | None, current: Sample, rows: int, seconds: float
) -> tuple[tuple[str, ...], ...]:
    """The busiest keys: most fetches since the previous sample, then most fetches in all."""
    before: dict[str, int] | None = None
    if previous is not None:
        before = {key_text(r["key"]): r["fetches"] for r in previous.snapshot["keys"]}
    complete = previous is not None and not previous.snapshot["truncated"]
    ranked = []
    for record in current.snapshot["keys"]:
        text = key_text(record["key"])
        if before is None:
            recent: float | None = record["fetches"] / seconds
        elif text in before:
            recent = (record["fetches"] - before[text]) / seconds
        else:
            # Not among the previous sample's keys: new if that sample saw every key.
            recent = record["fetches"] / seconds if complete else None
        ranked.append((recent, record, text))
    ranked.sort(key=lambda item: (-(item[0] if item[0] is not None else -1), -item[1]["fetches"]))
    cells = []
    for recent, record, text in ranked[:rows]:
        status = record["status"]
        if record["fetch_status"] == "fetching":
            status += ", fetching"
        if record["invalidated"]:
            status += ", invalidated"
        elif record["stale"]:
            status += ", stale"
        cells.append(
            (
                text,
                "-" if recent is None else f"{recent:.1f}",
                str(record["fetches"]),
                str(record["errors"]),
                status,
                "-" if record["age"] is None else format_duration(record["age"]),
                str(record["observers"]),
            )
        )
    return tuple(cells)


def render_plain(frame: Frame) -> str:
    """The frame as plain text."""
    table = format_plain_table(KEY_COLUMNS, frame.rows) if frame.rows else "(no keys)"
    return "\n".join([frame.title, *frame.lines, "", table])


def render_rich(frame: Frame) -> Any:
    """The frame as a rich renderable (a title, the lines, the table of keys)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    for column in KEY_COLUMNS:
        table.add_column(column.title, justify=column.align, overflow="fold")
    for row in frame.rows:
        table.add_row(*(Text(cell) for cell in row))
    parts: list[Any] = [Text(frame.title, style="bold"), *(Text(line) for line in frame.lines)]
    parts += [Text(""), table if frame.rows else Text("(no keys)")]
    return Group(*parts)


def run_top(
    path: str,
    *,
    interval: float = 2.0,
    once: bool = False,
    rows: int = 10,
    plain: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Run ``stackquery top --attach PATH``; return the exit code (0; Ctrl+C ends it).

    Raises:
        CommandError: the endpoint could not be reached, or the connection broke.
    """
    rich = None if plain else load_rich()
    try:
        if once:
            frame = trio.run(_one_frame, path, rows)
            if rich is not None:
                from rich.console import Console

                Console(file=out, highlight=False).print(render_rich(frame))
            else:
                print(render_plain(frame), file=out)
            return EXIT_OK
        trio.run(_live, path, interval, rows, rich is not None, out)
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:
        pass
    return EXIT_OK


async def _one_frame(path: str, rows: int) -> Frame:
    async with open_admin_connection(path) as admin:
        return build_frame(path, None, await take_sample(admin, rows), rows=rows)


async def _live(path: str, interval: float, rows: int, use_rich: bool, out: TextIO) -> None:
    async with open_admin_connection(path) as admin:
        previous: Sample | None = None
        if use_rich:
            from rich.console import Console
            from rich.live import Live

            with Live(console=Console(file=out), auto_refresh=False, screen=False) as live:
                while True:
                    current = await take_sample(admin, rows)
                    live.update(render_rich(build_frame(path, previous, current, rows=rows)))
                    live.refresh()
                    previous = current
                    await trio.sleep(interval)
        clear = "\x1b[H\x1b[2J" if out.isatty() else ""
        while True:
            current = await take_sample(admin, rows)
            text = render_plain(build_frame(path, previous, current, rows=rows))
            print(f"{clear}{text}\n", file=out, flush=True)
            previous = current
            await trio.sleep(interval)
