"""Every program in ``examples/`` runs as a newcomer would run it: a subprocess of this python.

Output is checked exactly where the example makes it deterministic; where it
depends on another process's timing (which values a reader happened to see)
the checks are on what must hold whatever the timing.  Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
TIMEOUT = 60.0
"""Seconds an example may take, imports included (several at once on 2 cores)."""
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


async def finished_example(script: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run an example to completion (bounded), however it ends; return what it did."""
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [sys.executable, str(EXAMPLES / script), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=ENV,
        )


async def run_example(script: str, *args: str) -> str:
    """Run an example to completion (bounded); return its stdout once it exited cleanly."""
    done = await finished_example(script, *args)
    stderr = done.stderr.decode()
    assert (done.returncode, stderr) == (0, ""), stderr[-3000:]
    return done.stdout.decode()


@attrs.define(eq=False)
class Daemon:
    """A running ``http_daemon.py``: its URL, and everything it printed so far."""

    process: trio.Process
    url: str = ""
    stdout: bytearray = attrs.field(factory=bytearray)
    stderr: bytearray = attrs.field(factory=bytearray)
    url_printed: trio.Event = attrs.field(factory=trio.Event)

    async def drain_stdout(self) -> None:
        assert self.process.stdout is not None
        async for chunk in self.process.stdout:
            self.stdout += chunk
            if b"\n" in self.stdout and not self.url_printed.is_set():
                self.url = self.stdout.split(b"\n", 1)[0].decode()
                self.url_printed.set()
        self.url_printed.set()  # exited without a URL: the test fails on what it printed

    async def drain_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk


@asynccontextmanager
async def running_daemon(*args: str, stop: signal.Signals) -> AsyncIterator[Daemon]:
    """Start ``http_daemon.py --port 0`` and wait for its URL; on leaving, ``stop`` and reap it."""
    command = [sys.executable, str(EXAMPLES / "http_daemon.py"), "--port", "0", *args]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    daemon = Daemon(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.drain_stdout)
            nursery.start_soon(daemon.drain_stderr)
            with trio.fail_after(TIMEOUT):
                await daemon.url_printed.wait()
            assert daemon.url.startswith("http://127.0.0.1:"), daemon.stderr.decode()[-3000:]
            yield daemon
            process.send_signal(stop)
            with trio.fail_after(TIMEOUT):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


def assert_stopped_cleanly(daemon: Daemon) -> None:
    """The daemon exited with status 0, printed its URL then ``stopped``, and nothing on stderr."""
    stderr = daemon.stderr.decode()
    assert (daemon.process.returncode, stderr) == (0, ""), stderr[-3000:]
    assert daemon.stdout.decode().splitlines() == [daemon.url, "stopped"]


async def wait_for_origin_call(http: httpx.AsyncClient, path: str, call: int) -> dict[str, int]:
    """GET ``path`` until the user it returns came from origin call ``call`` (bounded)."""
    with trio.fail_after(TIMEOUT):
        while True:
            user: dict[str, int] = (await http.get(path)).json()
            if user["origin_call"] == call:
                return user
            # The refetch runs in another process: nothing to wait on but its answers.
            await trio.sleep(0.05)


class TestHttpDaemon:
    async def test_serves_users_through_the_cache_and_stops_on_sigint(self) -> None:
        """Concurrent GETs share one origin call; an invalidated user is served stale, then new."""
        async with (
            running_daemon("--storage", "memory", stop=signal.SIGINT) as daemon,
            httpx.AsyncClient(base_url=daemon.url) as http,
        ):
            responses: list[httpx.Response] = []

            async def get_user_7() -> None:
                responses.append(await http.get("/users/7"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(get_user_7)
                nursery.start_soon(get_user_7)
            assert [(r.status_code, r.json()) for r in responses] == [
                (200, {"id": 7, "origin_call": 1})
            ] * 2
            assert (await http.get("/users/7")).json() == {"id": 7, "origin_call": 1}
            assert (await http.get("/stats")).json()["origin_calls"] == 1

            missing = await http.get("/users/700")
            assert (missing.status_code, missing.json()) == (404, {"error": "no user 700"})
            invalidated = await http.post("/users/7/invalidate")
            assert (invalidated.status_code, invalidated.json()) == (200, {"invalidated": 1})
            assert (await http.get("/users/7")).json() == {"id": 7, "origin_call": 1}
            assert await wait_for_origin_call(http, "/users/7", 3) == {"id": 7, "origin_call": 3}

            stats = (await http.get("/stats")).json()
            assert stats["origin_calls"] == 3
            assert stats["client"]["queries"] == 2
            assert sorted(stats["queries"], key=lambda q: q["key"]) == [
                {"key": ["user", 7], "status": "success", "stale": False},
                {"key": ["user", 700], "status": "success", "stale": False},
            ]
            unknown = await http.delete("/users/7")
            assert (unknown.status_code, unknown.json()) == (
                404,
                {"error": "no route for DELETE /users/7"},
            )
        assert_stopped_cleanly(daemon)

    async def test_users_by_ids_come_from_the_batch_loader(self) -> None:
        """``/users?ids=`` answers in order with one batch call for the cold ids only."""
        async with (
            running_daemon("--storage", "memory", stop=signal.SIGINT) as daemon,
            httpx.AsyncClient(base_url=daemon.url) as http,
        ):
            first = await http.get("/users", params={"ids": "3,1,100,2"})
            assert (first.status_code, first.json()) == (
                200,
                {
                    "users": [
                        {"id": 3, "batch_call": 1},
                        {"id": 1, "batch_call": 1},
                        None,
                        {"id": 2, "batch_call": 1},
                    ]
                },
            )
            second = await http.get("/users", params={"ids": "2,5"})
            assert second.json() == {
                "users": [{"id": 2, "batch_call": 1}, {"id": 5, "batch_call": 2}]
            }
            stats = (await http.get("/stats")).json()
            assert (stats["batch_calls"], stats["origin_calls"]) == (2, 0)
            assert stats["client"]["queries"] == 5
            for bad in ("", "ids=", "ids=1,x", "ids=" + ",".join(["1"] * 1001)):
                refused = await http.get("/users?" + bad)
                assert refused.status_code == 400, bad
                assert refused.json() == {"error": "expected ?ids=1,2,3 (at most 1000 ids)"}
        assert_stopped_cleanly(daemon)

    async def test_a_second_run_on_the_same_sqlite_file_serves_from_it_and_stops_on_sigterm(
        self, tmp_path: Path
    ) -> None:
        """A restarted daemon answers from its SQLite file without calling the origin."""
        storage = f"sqlite:{tmp_path / 'users.sqlite3'}"
        async with (
            running_daemon("--storage", storage, stop=signal.SIGTERM) as first,
            httpx.AsyncClient(base_url=first.url) as http,
        ):
            assert (await http.get("/users/7")).json() == {"id": 7, "origin_call": 1}
        assert_stopped_cleanly(first)

        async with (
            running_daemon("--storage", storage, stop=signal.SIGTERM) as second,
            httpx.AsyncClient(base_url=second.url) as http,
        ):
            assert (await http.get("/users/7")).json() == {"id": 7, "origin_call": 1}
            stats = (await http.get("/stats")).json()
            assert (stats["origin_calls"], stats["l2"]["hits"]) == (0, 1)
        assert_stopped_cleanly(second)

    async def test_two_daemons_on_one_redis_make_one_origin_call(self, redis_url: str) -> None:
        """Two daemons asked for one cold user at once: one origin call between them."""
        storage = f"redis:{redis_url}"
        async with (
            running_daemon("--storage", storage, stop=signal.SIGINT) as first,
            running_daemon("--storage", storage, stop=signal.SIGINT) as second,
            httpx.AsyncClient() as http,
        ):
            users: dict[str, object] = {}

            async def get_user_7(daemon: Daemon) -> None:
                users[daemon.url] = (await http.get(f"{daemon.url}/users/7")).json()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(get_user_7, first)
                nursery.start_soon(get_user_7, second)
            assert users == {
                first.url: {"id": 7, "origin_call": 1},
                second.url: {"id": 7, "origin_call": 1},
            }
            calls = [(await http.get(f"{url}/stats")).json()["origin_calls"] for url in users]
            assert sorted(calls) == [0, 1]
        assert_stopped_cleanly(first)
        assert_stopped_cleanly(second)


def rates_line(verb: str, refresh: int) -> str:
    """What bg_writer.py / bg_reader.py print for the ``refresh``-th value."""
    return f"{verb} {{'refresh': {refresh}, 'eur_usd': {round(1.08 + refresh / 100, 2)}}}"


class TestBackgroundWriterAndReaders:
    async def test_readers_print_the_values_the_writer_published(self, redis_url: str) -> None:
        """Two readers follow the writer to its last value; a later reader gets that value."""
        outputs: dict[str, str] = {}

        async def run(name: str, script: str, *args: str) -> None:
            outputs[name] = await run_example(script, "--redis", redis_url, *args)

        async with trio.open_nursery() as nursery:
            for name in ("reader 1", "reader 2"):
                nursery.start_soon(run, name, "bg_reader.py", "--poll", "1", "--until", "5")
            nursery.start_soon(run, "writer", "bg_writer.py", "--interval", "0.2", "--count", "5")

        assert outputs["writer"].splitlines() == [rates_line("published", n) for n in range(1, 6)]
        published_as_read = [rates_line("read", n) for n in range(1, 6)]
        waiting = f"no rates in {redis_url} yet: waiting for a writer (bg_writer.py)"
        for name in ("reader 1", "reader 2"):
            lines = outputs[name].splitlines()
            if lines[:1] == [waiting]:  # started before the writer's first value landed
                lines = lines[1:]
            # Which early values a reader saw depends on when it started; order and end do not.
            assert lines == [line for line in published_as_read if line in lines]
            assert lines[-1] == rates_line("read", 5)

        late = await run_example("bg_reader.py", "--redis", redis_url, "--until", "5")
        assert late.splitlines() == [rates_line("read", 5)]


class TestDeterministicExamples:
    async def test_optimistic_update(self) -> None:
        """The optimistic update example prints exactly what its observer sees, step by step."""
        assert (await run_example("optimistic_update.py")).splitlines() == [
            "  mutation: idle",
            "1. an observer subscribes to the list",
            "  observer: pending None",
            "  observer: success ['buy milk']",
            "2. a refetch is in flight when we add 'write docs'",
            "  mutation: pending",
            "  on_mutate: fetches cancelled: 1; kept ['buy milk']",
            "  observer: success ['buy milk', 'write docs (saving)']",
            "  on_settled: invalidating the list",
            "  mutation: success",
            "  mutate returned ['buy milk', 'write docs']",
            "  observer: success ['buy milk', 'write docs']",
            "3. adding 'buy milk' again: the server says no",
            "  mutation: pending",
            "  on_mutate: fetches cancelled: 0; kept ['buy milk', 'write docs']",
            "  observer: success ['buy milk', 'write docs', 'buy milk (saving)']",
            "  on_error: the server already has 'buy milk'; rolling back",
            "  observer: success ['buy milk', 'write docs']",
            "  on_settled: invalidating the list",
            "  mutation: error",
            "  mutate raised ValueError: the server already has 'buy milk'",
            "4. the list: ['buy milk', 'write docs']",
        ]

    async def test_cached_functions(self) -> None:
        """The decorator example prints exactly its results, origin calls and metrics."""
        assert (await run_example("cached_functions.py")).splitlines() == [
            "5 concurrent get_user(1): 1 origin call",
            "get_user(1) again: {'id': 1, 'name': 'user 1'} (a hit)",
            "after get_user.invalidate(1): 2 origin calls",
            "exchange_rate x3: [1.08, 1.08, 1.08], 1 origin call",
            "daily_report(): report #1",
            "0.3 s later: report #1 at once, refreshed behind the caller",
            "0.2 s later: report #2",
            "feature_flags(): {'version': 1}",
            "0.3 s later: {'version': 2}, refreshed in the background",
            "metrics:",
            "  get_user: hits 1, stale_hits 0, misses 6, dedup_joins 4, fetches 2,"
            " background refreshes 0",
            "  exchange_rate: hits 2, stale_hits 0, misses 1, dedup_joins 0, fetches 1,"
            " background refreshes 0",
            "  daily_report: hits 1, stale_hits 1, misses 1, dedup_joins 0, fetches 2,"
            " background refreshes 1",
            "  bg:feature-flags: hits 1, stale_hits 0, misses 1, dedup_joins 0, fetches 2,"
            " background refreshes 2",
        ]


class TestFlakyUpstream:
    async def test_serves_through_an_outage_with_etags_a_breaker_and_stale_if_error(
        self,
    ) -> None:
        """The scripted outage: 304s keep the rates fresh, the breaker stops the calls, the old
        rates are served for stale_if_error past max_age, then 503 until a probe finds it back."""
        output = await run_example("flaky_upstream.py")
        lines = [" ".join(line.replace("t= ", "t=").split()) for line in output.splitlines()]
        assert len(lines) == 46
        at = {int(line.split("s ", 1)[0].removeprefix("t=")): line for line in lines[:-1]}
        assert at[3] == 't=3s 200 EUR=1.08 etag="v1" stale circuit=closed'
        assert at[4] == 't=4s 200 EUR=1.08 etag="v1" fresh circuit=closed'  # a 304
        assert at[10] == (
            't=10s 200 EUR=1.08 etag="v1" stale, upstream failing (UpstreamError) circuit=closed'
        )
        assert at[12] == (
            't=12s 200 EUR=1.08 etag="v1" stale, upstream failing (CircuitOpenError) circuit=open'
        )
        assert at[21] == (
            't=21s 200 EUR=1.08 etag="v1" stale, upstream failing (CircuitOpenError) circuit=open'
        )
        assert at[22] == (
            "t=22s 503 CircuitOpenError stale, upstream failing (CircuitOpenError) circuit=open"
        )
        assert at[31] == 't=31s 200 EUR=1.08 etag="v1" fresh circuit=closed'
        assert at[35] == 't=35s 200 EUR=1.11 etag="v2" fresh circuit=closed'
        assert lines[-1] == (
            "upstream answers: {200: 2, 304: 6, 503: 5}; refused by the circuit: 21; "
            "stale-if-error serves: 10"
        )
