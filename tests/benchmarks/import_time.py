"""Import time of stackquery against its own dependencies, in fresh interpreters.

Each round runs, in an order shuffled per round, three fresh interpreters:
``python -c pass`` (the interpreter's start-up), ``python -c "import trio,
attrs, orjson"`` (the dependencies stackquery cannot avoid) and ``python -c
"import stackquery"``.  Printed: the median wall time of each (min–max), the
imports minus the bare start-up, and what stackquery adds over its
dependencies.

Run from the repository root::

    python tests/benchmarks/import_time.py [--rounds 7] [--module stackquery]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BARE = "pass"
DEPENDENCIES = "import trio, attrs, orjson"


def run_once(code: str) -> float:
    """Seconds one fresh interpreter takes to run ``code`` and exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - start


def describe(samples: list[float]) -> str:
    """``median (min–max)`` in milliseconds."""
    return (
        f"{statistics.median(samples) * 1000:7.1f} ms "
        f"({min(samples) * 1000:.1f}–{max(samples) * 1000:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--module", default="stackquery", help="the package to import")
    args = parser.parse_args()
    codes = {"bare": BARE, "deps": DEPENDENCIES, "package": f"import {args.module}"}
    samples: dict[str, list[float]] = {name: [] for name in codes}
    for name, code in codes.items():  # warm the file-system cache and the .pyc files
        run_once(code)
    for _ in range(args.rounds):
        order = list(codes)
        random.shuffle(order)
        for name in order:
            samples[name].append(run_once(codes[name]))
    # Per round, subtract that round's bare start-up (runs are interleaved).
    deps = [d - b for d, b in zip(samples["deps"], samples["bare"], strict=True)]
    package = [p - b for p, b in zip(samples["package"], samples["bare"], strict=True)]
    added = [p - d for p, d in zip(samples["package"], samples["deps"], strict=True)]
    print(f"{args.rounds} rounds, medians (min–max), python {sys.version.split()[0]}")
    print(f"  python -c pass                {describe(samples['bare'])}")
    print(f"  {DEPENDENCIES:<28}  {describe(deps)}  (start-up subtracted)")
    print(f"  import {args.module:<21}  {describe(package)}  (start-up subtracted)")
    print(f"  {args.module} over its dependencies  {describe(added)}")


if __name__ == "__main__":
    main()
