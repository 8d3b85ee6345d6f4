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
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, settings


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
