"""Drive ``fleet_worker.py`` processes from a trio test: spawn, command, read events, kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import trio

WORKER_SCRIPT = Path(__file__).with_name("fleet_worker.py")
REPO_ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT = 30.0
"""Seconds a worker may take to import, connect and subscribe (8 at once on 2 cores)."""
REPLY_TIMEOUT = 15.0
"""Seconds any one command or event may take before the test fails."""


class WorkerDied(AssertionError):
    """A worker process ended while the test still expected something from it."""


class WorkerProcess:
    """One running ``fleet_worker.py``: send it commands, await its replies and events."""

    def __init__(self, process: trio.Process, stderr_path: Path, name: str) -> None:
        self.process = process
        self.name = name
        self.stderr_path = stderr_path
        self.pid = process.pid
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._changed = trio.Event()
        self._ended = False

    async def read_stdout(self) -> None:
        """Collect replies and events until the process closes its stdout."""
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for chunk in self.process.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    message = orjson.loads(line)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self._events.append(message)
                self._wake()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            self._ended = True
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _died(self) -> WorkerDied:
        stderr = self.stderr_path.read_text(errors="replace")[-3000:]
        return WorkerDied(f"worker {self.name} (pid {self.pid}) ended; its stderr:\n{stderr}")

    async def send(self, op: str, **fields: Any) -> int:
        """Send a command without waiting for its reply; return its id."""
        assert self.process.stdin is not None
        self._next_id += 1
        await self.process.stdin.send_all(
            orjson.dumps({"id": self._next_id, "op": op, **fields}) + b"\n"
        )
        return self._next_id

    async def reply(self, command_id: int, seconds: float = REPLY_TIMEOUT) -> dict[str, Any]:
        """Wait up to ``seconds`` for the reply to command ``command_id``."""
        with trio.fail_after(seconds):
            while command_id not in self._replies:
                if self._ended:
                    raise self._died()
                await self._changed.wait()
        return self._replies.pop(command_id)

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a command and return its reply."""
        return await self.reply(await self.send(op, **fields))

    async def event(
        self,
        kind: str,
        where: Callable[[dict[str, Any]], bool] = lambda _event: True,
        seconds: float = REPLY_TIMEOUT,
    ) -> dict[str, Any]:
        """Wait for (and consume) the first event of ``kind`` for which ``where`` holds."""
        with trio.fail_after(seconds):
            while True:
                for index, event in enumerate(self._events):
                    if event["event"] == kind and where(event):
                        return self._events.pop(index)
                if self._ended:
                    raise self._died()
                await self._changed.wait()

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The events of ``kind`` received and not consumed yet."""
        return [event for event in self._events if event["event"] == kind]

    async def stats(self) -> dict[str, Any]:
        """The worker's fleet statistics."""
        fleet: dict[str, Any] = (await self.call("stats"))["fleet"]
        return fleet

    async def wait_stats(
        self, where: Callable[[dict[str, Any]], bool], seconds: float = REPLY_TIMEOUT
    ) -> dict[str, Any]:
        """Ask for the fleet statistics until ``where`` holds for them; return them."""
        with trio.fail_after(seconds):
            # Polled: the worker's statistics change in another process.
            while not where(stats := await self.stats()):  # noqa: ASYNC110
                await trio.sleep(0.01)
        return stats

    async def wait_state(
        self,
        key: list[Any],
        where: Callable[[dict[str, Any] | None], bool],
        seconds: float = REPLY_TIMEOUT,
    ) -> dict[str, Any] | None:
        """Ask for the key's state until ``where`` holds for it; return it."""
        with trio.fail_after(seconds):
            while not where(state := (await self.call("state", key=key))["state"]):  # noqa: ASYNC110
                await trio.sleep(0.01)
        return state

    def kill(self) -> None:
        """SIGKILL the process (no cleanup of any kind runs in it)."""
        if self.process.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


@asynccontextmanager
async def open_workers(
    redis_url: str, count: int, directory: Path, **options: Any
) -> AsyncIterator[list[WorkerProcess]]:
    """Start ``count`` workers on ``redis_url`` and wait until each is ready.

    ``options`` become command-line flags (``lease_time=1`` is
    ``--lease-time 1``).  Leaving the block kills every worker still running.
    """
    async with trio.open_nursery() as nursery:
        workers = [
            await start_worker(nursery, redis_url, directory, **options) for _ in range(count)
        ]
        try:
            for worker in workers:
                await worker.event("ready", seconds=START_TIMEOUT)
            yield workers
        finally:
            for worker in workers:
                worker.kill()
            nursery.cancel_scope.cancel()


_started = 0


async def start_worker(
    nursery: trio.Nursery, redis_url: str, directory: Path, **options: Any
) -> WorkerProcess:
    """Start one worker in ``nursery`` (its stdout reader runs there); do not wait for it."""
    global _started
    _started += 1
    name = f"w{_started}"
    flags = [sys.executable, str(WORKER_SCRIPT), "--redis", redis_url]
    for option, value in options.items():
        flags += [f"--{option.replace('_', '-')}", str(value)]
    stderr_path = directory / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            flags,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    worker = WorkerProcess(process, stderr_path, name)
    nursery.start_soon(worker.read_stdout)
    nursery.start_soon(_reap, process)
    return worker


async def _reap(process: trio.Process) -> None:
    try:
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
