"""Running the ``stackquery`` command line as a child process, and stores for it to read."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

import stackquery as sq

REPO_ROOT = Path(__file__).resolve().parents[2]
_TIMEOUT = 120.0


def run_cli(
    *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stackquery ARGS`` from the checkout and return what it did.

    The child sees a wide terminal (``COLUMNS=200``), so rich never wraps a
    key, and ``NO_COLOR``, so its text holds no escape codes.
    """
    path = os.environ.get("PYTHONPATH", "")
    child_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), path) if p),
        "COLUMNS": "200",
        "NO_COLOR": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "stackquery", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO_ROOT,
        env=child_env,
        timeout=_TIMEOUT,
        check=False,
    )


def table_keys(stdout: str) -> list[str]:
    """Return the first cell of every row of the plain table at the top of ``stdout``."""
    lines = stdout.splitlines()
    rule = next(index for index, line in enumerate(lines) if line.startswith("---"))
    keys = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        keys.append(line.split("  ")[0])
    return keys


async def fill(
    store: Any,
    values: Mapping[tuple[Any, ...], Any],
    *,
    serializer: Any = None,
    gc_time: float = math.inf,
) -> None:
    """Fetch every key of ``values`` through a real client on ``store`` (its L2).

    With the default ``gc_time`` the entries never expire in the store.
    """
    config = sq.QueryClientConfig(serializer=serializer, gc_time=gc_time)
    async with sq.open_query_client(attrs.evolve(config, storage=store)) as client:
        for key, value in values.items():
            await client.fetch_query(sq.QueryOptions(query_key=key, query_fn=_constant(value)))


def _constant(value: Any) -> Any:
    async def query_fn() -> Any:
        return value

    return query_fn
