"""The attach endpoint of a real daemon process: ``examples/http_daemon.py --admin-socket PATH``.

The daemon runs as its own process; the command line reaches it through
``main()`` (in a worker thread) and, once, as ``python -m stackquery``.
Waits on the other process are bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from stackquery.__main__ import main
from tests.stackquery.admin_support import Peer, error, socket_path
from tests.stackquery.cli_process import run_cli
from tests.test_examples import assert_stopped_cleanly, running_daemon, wait_for_origin_call

pytestmark = pytest.mark.slow

__all__ = ["socket_path"]  # the fixture, used by name


async def test_operators_see_and_invalidate_what_the_daemon_holds(
    socket_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inspect shows the daemon's keys, invalidate makes it refetch, top draws a frame."""
    async with (
        running_daemon("--admin-socket", str(socket_path), stop=signal.SIGTERM) as daemon,
        httpx.AsyncClient(base_url=daemon.url) as http,
    ):
        assert (await http.get("/users/7")).json() == {"id": 7, "origin_call": 1}
        peer = await Peer.connect(socket_path)
        hello = await peer.ask({"op": "hello"})
        assert hello["result"]["pid"] == daemon.process.pid

        argv = ["inspect", "--attach", str(socket_path), '["user"]', "--json"]
        assert await trio.to_thread.run_sync(main, argv) == 0
        snapshot = orjson.loads(capsys.readouterr().out)
        assert [(r["key"], r["status"], r["fetches"]) for r in snapshot["keys"]] == [
            (["user", 7], "success", 1)
        ]

        argv = ["invalidate", "--attach", str(socket_path), '["user"]']
        assert await trio.to_thread.run_sync(main, argv) == 0
        assert capsys.readouterr().out == (
            f'invalidated 1 key under ["user"] in the client at {socket_path} '
            "(observed ones refetch now)\n"
        )
        # Unobserved, so refetched at its next read: the stale value first, then the new one.
        assert await wait_for_origin_call(http, "/users/7", 2) == {"id": 7, "origin_call": 2}

        top = await trio.to_thread.run_sync(
            run_cli, "top", "--attach", str(socket_path), "--once", "--plain"
        )
        assert (top.returncode, top.stderr) == (0, "")
        lines = top.stdout.splitlines()
        assert lines[0].startswith(f"stackquery top: {socket_path} (pid {daemon.process.pid}), up ")
        assert lines[1].startswith("keys 1  actors ")
        assert lines[-1].split()[0] == '["user",7]'
    assert_stopped_cleanly(daemon)
    assert os.listdir(socket_path.parent) == []


async def test_a_hostile_peer_does_not_disturb_the_daemon(socket_path: Path) -> None:
    """Garbage and a line past 64 KiB get error replies; HTTP is served throughout."""
    async with (
        running_daemon("--admin-socket", str(socket_path), stop=signal.SIGINT) as daemon,
        httpx.AsyncClient(base_url=daemon.url) as http,
    ):
        garbage = await Peer.connect(socket_path)
        await garbage.send(b"\x00\xff{{{\n")
        reply = await garbage.reply()
        assert reply is not None and reply["error"]["code"] == "bad_request"
        flood = await Peer.connect(socket_path)
        with contextlib.suppress(trio.BrokenResourceError):  # closed on us mid-send
            await flood.send(b"y" * 100_000)
        assert await flood.reply() in (
            error("too_long", "request line longer than 65536 bytes"),
            None,
        )
        assert (await http.get("/users/3")).json() == {"id": 3, "origin_call": 1}
        assert (await garbage.ask({"op": "stats"}))["result"]["client"]["queries"] == 1
    assert_stopped_cleanly(daemon)
