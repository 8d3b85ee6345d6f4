"""What the adversarial suite shares: a gated origin, hypothesis settings, a deterministic trio run.

``GatedOrigin`` is a ``query_fn`` for one key whose calls the test can hold
at a gate and release, or make fail; it labels each result (or error) with
its call number, so that every value a caller or an observer sees names the
origin call that produced it.

Hypothesis settings come from the environment so that CI stays small and
deterministic while a local run can hunt longer::

    STACKQUERY_MODEL_EXAMPLES=2000 python -m pytest -q tests/model

``CI=true`` (set by CI) makes every model derandomized: the same examples on
every run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, settings
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import FileStorage, MemoryStorage, SQLiteStorage
from tests.model.operations import (
    FailOrigin,
    HoldL2Reads,
    HoldL2Writes,
    HoldOrigin,
    ReleaseL2Reads,
    ReleaseL2Writes,
    ReleaseOrigin,
)
from tests.stackquery.l2_store import ControlledStorage


class Failure(Exception):
    """An origin failure: state, not a crash."""


class GatedOrigin:
    """A query function for one key: results ``"<name>#<call>"``, held or failing on demand.

    Attributes:
        calls: calls made so far (the one in flight included).
        failing: while true, calls that start raise :class:`Failure` (``"<name>#<call>"``).
        cancelled: calls cancelled while held.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.failing = False
        self.cancelled = 0
        self._gate: trio.Event | None = None

    @property
    def held(self) -> bool:
        """Whether calls that start now wait for :meth:`release`."""
        return self._gate is not None

    def hold(self) -> None:
        """Make calls that start from now on wait until :meth:`release`."""
        if self._gate is None:
            self._gate = trio.Event()

    def release(self) -> None:
        """Let every held call finish; later calls are not held."""
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def __call__(self) -> str:
        self.calls += 1
        label = f"{self.name}#{self.calls}"
        fails, gate = self.failing, self._gate
        try:
            if gate is not None:
                await gate.wait()
            else:
                await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        if fails:
            raise Failure(label)
        return label


class Gates:
    """What a program holds and fails: each key's origin; a ControlledStorage's reads, writes."""

    def __init__(
        self, origins: Mapping[Any, GatedOrigin], store: ControlledStorage | None = None
    ) -> None:
        self.origins = origins
        self.store = store

    @property
    def held(self) -> bool:
        """Whether anything is held."""
        store = self.store
        gated = store is not None and (store.read_gate is not None or store.write_gate is not None)
        return gated or any(origin.held for origin in self.origins.values())

    def apply(self, op: Any) -> bool:
        """Flip the switch ``op`` names; return whether it named one."""
        if isinstance(op, HoldOrigin):
            self.origins[op.key].hold()
        elif isinstance(op, ReleaseOrigin):
            self.origins[op.key].release()
        elif isinstance(op, FailOrigin):
            self.origins[op.key].failing = op.failing
        elif isinstance(op, HoldL2Reads | HoldL2Writes):
            assert self.store is not None
            name = "read_gate" if isinstance(op, HoldL2Reads) else "write_gate"
            if getattr(self.store, name) is None:
                setattr(self.store, name, trio.Event())
        elif isinstance(op, ReleaseL2Reads | ReleaseL2Writes):
            assert self.store is not None
            name = "read_gate" if isinstance(op, ReleaseL2Reads) else "write_gate"
            gate = getattr(self.store, name)
            if gate is not None:
                gate.set()
                setattr(self.store, name, None)
        else:
            return False
        return True


class ProgramDriver:
    """What both models' drivers share: the trace of a program, and calls that must return."""

    def __init__(self, keys: list[tuple[Any, ...]], store: ControlledStorage | None) -> None:
        self.origins = {key: GatedOrigin("".join(map(str, key))) for key in keys}
        """Each key's origin: results ``"a1#1"``, ``"a1#2"`` ... for the key ``("a", 1)``."""
        self.gates = Gates(self.origins, store)
        self.options = {
            key: sq.QueryOptions(query_key=key, query_fn=self.origins[key]) for key in keys
        }
        """One QueryOptions per key, used by every call (a fresh hit compares its stale_time)."""
        self.trace: list[str] = []
        """The operations run so far, for the failure message."""
        self.skipped: list[str] = []
        """The KNOWN_BUGS flags of the operations skipped, one entry per skip."""
        self.nursery: trio.Nursery | None = None
        """Where callers, observers' readers and the client's calls run (outside the client)."""

    def fail(self, message: str) -> None:
        """Fail the example, with the operations that led here."""
        trace = "\n  ".join(self.trace)
        raise AssertionError(f"{message}\noperations so far:\n  {trace}")

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one of the client's async changes in a task of its own; it must return at once.

        The changes (invalidate, remove, set ...) never wait for a fetch or a
        store: still running once every task is blocked means it hung.
        """
        assert self.nursery is not None
        box: list[Any] = []

        async def run() -> None:
            box.append(await fn())

        self.nursery.start_soon(run)
        await wait_all_tasks_blocked()
        if not box:
            self.fail("the operation did not return")
        return box[0]


def make_store(kind: str, tmp_path: Path) -> Any:
    """A new store of ``kind`` (memory, sqlite, file); the last two in ``tmp_path``."""
    if kind == "memory":
        return MemoryStorage()
    if kind == "sqlite":
        return SQLiteStorage(tmp_path / "l2.sqlite")
    return FileStorage(tmp_path / "l2")


def examples(default_ci: int, default_local: int) -> int:
    """Examples per model test: ``STACKQUERY_MODEL_EXAMPLES``, else a default for CI or local."""
    configured = os.environ.get("STACKQUERY_MODEL_EXAMPLES")
    if configured:
        return int(configured)
    return default_ci if in_ci() else default_local


def in_ci() -> bool:
    """Whether CI runs the suite (``CI=true``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def model_settings(default_ci: int, default_local: int) -> settings:
    """Hypothesis settings of a model test: no deadline, derandomized in CI."""
    return settings(
        max_examples=examples(default_ci, default_local),
        deadline=None,
        derandomize=in_ci(),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


def run_deterministic(
    main: Callable[..., Awaitable[Any]], *args: Any, clock: trio.abc.Clock, seed: int = 0
) -> Any:
    """``trio.run(main, *args)`` with trio's scheduling order seeded, so one example runs one way.

    trio shuffles each batch of runnable tasks to shake out ordering bugs; a
    hypothesis example must replay the same way when it is shrunk, so the
    shuffle is seeded here (trio keeps its generator in ``trio._core._run._r``).
    """
    from trio._core import _run

    generator = getattr(_run, "_r", None)
    if isinstance(generator, random.Random):
        generator.seed(seed)
    return trio.run(main, *args, clock=clock)


def manual_clock() -> trio.testing.MockClock:
    """A clock that moves only when the test jumps it (rate 0, no autojump)."""
    return trio.testing.MockClock(rate=0.0)
