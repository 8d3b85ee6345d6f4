"""Import time of stackquery against its own dependencies, in fresh interpreters.

Each round runs, in an order shuffled per round, three fresh interpreters:
``python -c pass`` (the interpreter's start-up), ``python -c "import trio,
attrs, orjson"`` (the dependencies stackquery cannot avoid) and ``python -c
"import stackquery"``.  Printed: the median wall time of each (min-max), the
imports minus that round's bare start-up, and what stackquery adds over its
dependencies.

By default the interpreters read and write compiled bytecode in a temporary
``PYTHONPYCACHEPREFIX`` (warmed by one untimed run of each), as an installed
package has its ``.pyc`` files; nothing is written to the repository.
``--inherit-env`` runs them in the caller's environment instead (with
``PYTHONDONTWRITEBYTECODE=1``, every run compiles stackquery from source).
``--cpu`` measures each interpreter's user + system CPU time instead of wall
time: steadier on a machine that other work keeps busy.

Run from the repository root::

    python tests/benchmarks/import_time.py [--rounds 7] [--module NAME] [--inherit-env] [--cpu]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BARE = "pass"
DEPENDENCIES = "import trio, attrs, orjson"


def run_once(code: str, env: dict[str, str], *, cpu: bool = False) -> float:
    """Seconds one fresh interpreter takes to run ``code`` and exit (CPU seconds if ``cpu``)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, process.args)
    return usage.ru_utime + usage.ru_stime if cpu else wall


def cached_bytecode_env(prefix: str) -> dict[str, str]:
    """The caller's environment, with bytecode read and written under ``prefix``."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = prefix
    return env


def describe(samples: list[float]) -> str:
    """``median (min-max)`` in milliseconds."""
    return (
        f"{statistics.median(samples) * 1000:7.1f} ms "
        f"({min(samples) * 1000:.1f}-{max(samples) * 1000:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--module", default="stackquery", help="the package to import")
    parser.add_argument(
        "--inherit-env", action="store_true", help="no bytecode cache of our own (see above)"
    )
    parser.add_argument("--cpu", action="store_true", help="CPU time instead of wall time")
    args = parser.parse_args()
    codes = {"bare": BARE, "deps": DEPENDENCIES, "package": f"import {args.module}"}
    samples: dict[str, list[float]] = {name: [] for name in codes}
    with tempfile.TemporaryDirectory(prefix="import-time-pycache-") as prefix:
        env = dict(os.environ) if args.inherit_env else cached_bytecode_env(prefix)
        for code in codes.values():  # warm the file-system cache and the .pyc files
            run_once(code, env)
        for _ in range(args.rounds):
            order = list(codes)
            random.shuffle(order)
            for name in order:
                samples[name].append(run_once(codes[name], env, cpu=args.cpu))
    # Per round, subtract that round's bare start-up (runs are interleaved).
    deps = [d - b for d, b in zip(samples["deps"], samples["bare"], strict=True)]
    package = [p - b for p, b in zip(samples["package"], samples["bare"], strict=True)]
    added = [p - d for p, d in zip(samples["package"], samples["deps"], strict=True)]
    rows = [
        ("python -c pass (start-up)", samples["bare"]),
        (f"{DEPENDENCIES}, minus start-up", deps),
        (f"import {args.module}, minus start-up", package),
        (f"{args.module} over its dependencies", added),
    ]
    width = max(len(label) for label, _ in rows)
    setting = "caller's environment" if args.inherit_env else "cached bytecode"
    clock = "CPU time" if args.cpu else "wall time"
    print(
        f"{args.rounds} rounds, {clock}, median (min-max), "
        f"python {sys.version.split()[0]}, {setting}"
    )
    for label, values in rows:
        print(f"  {label:<{width}}  {describe(values)}")


if __name__ == "__main__":
    main()
