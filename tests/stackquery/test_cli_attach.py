"""``stackquery inspect / invalidate / top --attach PATH``: the command line on a running client.

The client runs in the test's trio run; ``main()`` runs in a worker thread
(it starts a trio run of its own), as a shell would run it.  The ``top``
frames are also built from fixed samples and rendered to strings.
"""

from __future__ import annotations

import io
import math
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery.__main__ import main
from stackquery.cli._top import Sample, _live, build_frame, render_plain, render_rich
from tests.stackquery.admin_support import socket_path
from tests.stackquery.client_origin import Origin

__all__ = ["socket_path"]  # the fixture, used by name

HOUR_AGO = 3600.0


async def run_main(argv: list[str]) -> int:
    """``main(argv)`` in a worker thread (its own trio run); its output goes to capsys."""
    return await trio.to_thread.run_sync(main, argv)


async def three_keys(client: sq.QueryClient) -> None:
    """("team", 1), ("user", 1) observed, ("user", 2); all set an hour ago, fresh forever."""
    old = time.time() - HOUR_AGO
    for key, value in ((("user", 1), "a"), (("user", 2), "b"), (("team", 1), "t")):
        await client.set_query_data(key, value, updated_at=old)
    client.watch(sq.QueryOptions(query_key=("user", 1), query_fn=Origin())).subscribe(
        lambda _state: None
    )
    await trio.testing.wait_all_tasks_blocked()


def open_client(path: Path) -> Any:
    return sq.open_query_client(sq.QueryClientConfig(admin_socket=str(path), stale_time=math.inf))


class TestInspect:
    async def test_lists_every_key_the_client_holds(
        self, socket_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One row per key, by key; a summary line; exit 0."""
        async with open_client(socket_path) as client:
            await three_keys(client)
            assert await run_main(["inspect", "--attach", str(socket_path), "--plain"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "KEY         STATUS   FETCH    AGE  STALE  OBSERVERS  FETCHES  ERRORS  ACTOR",
            "----------  -------  -----  -----  -----  ---------  -------  ------  -------",
            '["team",1]  success  idle   1h00m  no             0        0       0  -',
            '["user",1]  success  idle   1h00m  no             1        0       0  running',
            '["user",2]  success  idle   1h00m  no             0        0       0  -',
            "",
            f"3 keys under [] in the client at {socket_path} (3 in all): 0 fetching, 0 stale, "
            "0 in error; observers: 1",
        ]

    async def test_a_prefix_and_a_limit(
        self, socket_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Only the keys under KEY-PREFIX; --limit shows the first by key and says so."""
        async with open_client(socket_path) as client:
            await three_keys(client)
            argv = ["inspect", "--attach", str(socket_path), '["user"]', "--limit", "1", "--plain"]
            assert await run_main(argv) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split()[0] for line in lines[2:3]] == ['["user",1]']
        assert lines[-1] == (
            f'2 keys under ["user"] in the client at {socket_path} (3 in all): 0 fetching, '
            "0 stale, 0 in error; observers: 1; showing the first 1 by key"
        )

    async def test_json(self, socket_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints the endpoint's snapshot reply."""
        async with open_client(socket_path) as client:
            await three_keys(client)
            argv = ["inspect", "--attach", str(socket_path), '["user", 2]', "--json"]
            assert await run_main(argv) == 0
        reply = orjson.loads(capsys.readouterr().out)
        assert (reply["matched"], [r["key"] for r in reply["keys"]]) == (1, [["user", 2]])

    async def test_a_prefix_that_matches_nothing_says_what_is_there(
        self, socket_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Exit 1, and the prefixes the client holds."""
        async with open_client(socket_path) as client:
            await three_keys(client)
            assert await run_main(["inspect", "--attach", str(socket_path), '["usr"]']) == 1
        assert capsys.readouterr().out == (
            f'no keys under ["usr"] in the client at {socket_path}; '
            'prefixes there: ["user"] (2 keys), ["team"] (1 key)\n'
        )

    async def test_nothing_listening(
        self, socket_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Exit 2, and why."""
        assert await run_main(["inspect", "--attach", str(socket_path)]) == 2
        assert capsys.readouterr().err == (
            f"stackquery inspect: error: cannot attach to {socket_path}: "
            "No such file or directory\n"
        )

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (
                ["inspect", "--attach", "x.sock", "--prefix", "app:"],
                "stackquery inspect: error: --prefix names a store's key prefix: "
                "it is not taken with --attach",
            ),
            (
                ["inspect", "--sqlite", "x.db", '["user"]'],
                "stackquery inspect: error: a KEY-PREFIX is taken only with --attach",
            ),
            (
                ["invalidate", "--sqlite", "x.db", "--wait", '["user"]'],
                "stackquery invalidate: error: --wait is taken only with --attach",
            ),
            (
                ["invalidate", "--attach", "x.sock", "user"],
                "stackquery invalidate: error: a key prefix is a JSON array such as "
                "'[\"user\"]', got 'user'",
            ),
        ],
    )
    def test_options_that_do_not_go_together(
        self, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Exit 2 before anything is opened."""
        assert main(argv) == 2
        assert capsys.readouterr().err == message + "\n"


class TestInvalidate:
    async def test_invalidates_what_the_process_holds(
        self, socket_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The keys under the prefix are invalidated in the process; the observed one refetched."""
        async with open_client(socket_path) as client:
            await three_keys(client)
            assert await run_main(["invalidate", "--attach", str(socket_path), '["user"]']) == 0
            await trio.testing.wait_all_tasks_blocked()
            states = [
                client.get_query_state(key) for key in (("user", 1), ("user", 2), ("team", 1))
            ]
        assert [(s.data, s.is_invalidated) for s in states if s is not None] == [
            ("v1", False),
            ("b", True),
            ("t", False),
        ]
        assert capsys.readouterr().out == (
            f'invalidated 2 keys under ["user"] in the client at {socket_path} '
            "(observed ones refetch now)\n"
        )

    async def test_wait_and_a_prefix_that_matches_nothing(
        self, socket_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--wait reports the observed refetches; a prefix without keys makes exit 1."""
        async with open_client(socket_path) as client:
            await three_keys(client)
            argv = ["invalidate", "--attach", str(socket_path), '["user"]', '["nobody"]', "--wait"]
            assert await run_main(argv) == 1
            data = client.get_query_data(("user", 1))
        assert data == "v1"
        assert capsys.readouterr().out == (
            f'invalidated 2 keys under ["user"] in the client at {socket_path}: '
            "1 observed key refetched\n"
            f'no keys under ["nobody"] in the client at {socket_path}; '
            'prefixes there: ["user"] (2 keys), ["team"] (1 key)\n'
        )


def sample(now: float, uptime: float, fetches: dict[str, int], **counters: int) -> Sample:
    """A sample as ``top`` reads it: statistics, and keys with their fetch counts."""
    keys = [
        {
            "key": orjson.loads(text),
            "status": "success",
            "fetch_status": "fetching" if text == '["user",1]' else "idle",
            "age": 12.0,
            "stale": text == '["team",1]',
            "invalidated": False,
            "observers": 1,
            "fetches": count,
            "errors": 0,
            "active": True,
        }
        for text, count in fetches.items()
    ]
    stats = {
        "now": now,
        "pid": 4242,
        "uptime": uptime,
        "client": {"active_actors": 2, "timers": 3},
        "l2": {
            "reads": counters.get("reads", 0),
            "hits": counters.get("hits", 0),
            "misses": counters.get("misses", 0),
            "writes": counters.get("writes", 0),
            "pending_writes": 0,
            "errors": 0,
            "corrupt": 0,
        },
        "fleet": None,
        "breakers": {},
        "events": {
            "fetches": {
                "cold": counters.get("cold", 0),
                "refetch": counters.get("refetch", 0),
                "failed": 0,
            },
        },
    }
    summary = {"keys": len(keys), "fetching": 1, "stale": 1, "error": 0, "observers": len(keys)}
    snapshot = {"keys": keys, "summary": summary, "truncated": False}
    return Sample(stats, snapshot)


FIRST = sample(1000.0, 10.0, {'["user",1]': 10, '["team",1]': 20}, cold=10, refetch=20, reads=10)
SECOND = sample(
    1002.0,
    12.0,
    {'["user",1]': 18, '["team",1]': 21, '["user",2]': 2},
    cold=14,
    refetch=27,
    reads=14,
    hits=3,
    misses=1,
)


class TestTopFrames:
    def test_the_first_frame_shows_averages_since_the_client_opened(self) -> None:
        """Rates are counts over the uptime; keys rank by fetches."""
        frame = build_frame("/run/app.sock", None, FIRST, rows=5)
        assert render_plain(frame) == textwrap.dedent(
            """\
            stackquery top: /run/app.sock (pid 4242), up 10s; rates since the client opened
            keys 2  actors 2  fetching 1  stale 1  in error 0  observers 2  timers 3
            fetches/s  cold 1.0  refetch 2.0  failed 0.0
            L2  reads/s 1.0  hit -  writes/s 0.0  pending 0  errors 0  corrupt 0
            fleet  none
            breakers  none

            KEY         FETCH/S  FETCHES  ERRORS  STATUS             AGE  OBS
            ----------  -------  -------  ------  -----------------  ---  ---
            ["team",1]      2.0       20       0  success, stale     12s    1
            ["user",1]      1.0       10       0  success, fetching  12s    1"""
        )

    def test_later_frames_show_rates_over_the_last_interval(self) -> None:
        """Each rate and each key's fetches/s from the two samples; the busiest key first."""
        frame = build_frame("/run/app.sock", FIRST, SECOND, rows=2)
        assert frame.lines[1:3] == (
            "fetches/s  cold 2.0  refetch 3.5  failed 0.0",
            "L2  reads/s 2.0  hit 75 %  writes/s 0.0  pending 0  errors 0  corrupt 0",
        )
        assert frame.title.endswith("rates over the last 2.0 s")
        assert [row[:3] for row in frame.rows] == [
            ('["user",1]', "4.0", "18"),
            ('["user",2]', "1.0", "2"),
        ]

    def test_rich_renders_the_same_frame(self) -> None:
        """The rich view holds the same title, lines and rows."""
        from rich.console import Console

        out = io.StringIO()
        frame = build_frame("/run/app.sock", FIRST, SECOND, rows=5)
        Console(file=out, width=100, color_system=None).print(render_rich(frame))
        text = out.getvalue()
        assert text.splitlines()[0] == (
            "stackquery top: /run/app.sock (pid 4242), up 12s; rates over the last 2.0 s"
        )
        assert "fetches/s  cold 2.0  refetch 3.5  failed 0.0" in text
        assert [line.split()[:2] for line in text.splitlines()[-3:]] == [
            ['["user",1]', "4.0"],
            ['["user",2]', "1.0"],
            ['["team",1]', "0.5"],
        ]


class TestTop:
    async def test_once_prints_one_frame(
        self, socket_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--once: the header, the lines and every key, then exit 0."""
        async with open_client(socket_path) as client:
            await three_keys(client)
            argv = ["top", "--attach", str(socket_path), "--once", "--plain"]
            assert await run_main(argv) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"stackquery top: {socket_path} (pid ")
        assert lines[1:6] == [
            "keys 3  actors 1  fetching 0  stale 0  in error 0  observers 1  timers 3",
            "fetches/s  cold 0.0  refetch 0.0  failed 0.0",
            "L2  none",
            "fleet  none",
            "breakers  none",
        ]
        assert sorted(line.split()[0] for line in lines[9:]) == [
            '["team",1]',
            '["user",1]',
            '["user",2]',
        ]

    async def test_the_live_view_refreshes_every_interval(
        self, socket_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Frames at 0 s and 2 s; the second one has rates over the last 2 s."""
        out = io.StringIO()
        async with open_client(socket_path) as client:
            await three_keys(client)
            with trio.move_on_after(3.0):
                await _live(str(socket_path), 2.0, 10, False, out)
        frames = out.getvalue().split("stackquery top: ")[1:]
        assert len(frames) == 2
        assert "rates since the client opened" in frames[0].splitlines()[0]
        assert frames[1].splitlines()[0].endswith("rates over the last 2.0 s")

    def test_nothing_listening(self, socket_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Exit 2, and why."""
        assert main(["top", "--attach", str(socket_path), "--once"]) == 2
        assert capsys.readouterr().err == (
            f"stackquery top: error: cannot attach to {socket_path}: No such file or directory\n"
        )
