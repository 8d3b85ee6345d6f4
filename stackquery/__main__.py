"""stackquery: a tour of the query client (demo), and tools for its stores and processes.

demo runs a tour; inspect lists what a SQLite, file or Redis store holds, or
what a running client holds (--attach its admin socket); invalidate marks
keys stale there (on Redis, in every running process; with --attach, in that
process); top shows a running client live; bench runs the benchmark scripts
of a checkout.
"""

from __future__ import annotations

import argparse
import sys

import trio

from .cli._commands import (
    KEY_PREFIX_HELP,
    PREFIX_HELP,
    add_bench_options,
    add_inspect_options,
    add_store_invalidate_options,
    add_top_options,
    help_with_exit_codes,
    is_store_invalidate,
    run_command,
)
from .cli._redis_invalidate import add_redis_invalidate_options, run_redis_invalidate_command


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="stackquery", description=__doc__, **help_with_exit_codes()
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="a tour of the query client, in plain words")
    demo.add_argument("--read-from", metavar="PATH", help=argparse.SUPPRESS)
    add_inspect_options(
        commands.add_parser(
            "inspect",
            help="list an L2 store's keys, or a running client's (--attach)",
            description=(
                "List the keys under the prefix of an L2 store (age, TTL, size, serializer, "
                "invalidated), read-only; or, with --attach, the keys a running client holds "
                "(status, age, observers, fetches) under KEY-PREFIX."
            ),
            **help_with_exit_codes(),
        )
    )
    invalidate = commands.add_parser(
        "invalidate",
        help="mark the entries under query-key prefixes invalidated",
        description=(
            "Mark every entry under each KEY-PREFIX invalidated, so that the next read "
            "refetches it.  --sqlite/--file rewrite the entries in the store (a running "
            "process keeps what it holds in memory); --redis also tells every running client; "
            "--attach invalidates what one running client holds (its observed keys refetch)."
        ),
        **help_with_exit_codes(),
    )
    # The store to edit: --sqlite/--file (_cli_store_invalidate); --redis joins this group.
    invalidate_store = invalidate.add_mutually_exclusive_group(required=True)
    add_store_invalidate_options(invalidate_store, invalidate)
    add_redis_invalidate_options(invalidate_store, invalidate)
    invalidate.add_argument("--prefix", help=PREFIX_HELP)
    invalidate.add_argument("key_prefixes", nargs="+", metavar="KEY-PREFIX", help=KEY_PREFIX_HELP)
    add_bench_options(
        commands.add_parser(
            "bench",
            help="run the benchmark scripts of a checkout (tests/benchmarks)",
            description=(
                "Run the benchmark scripts in tests/benchmarks of a stackquery checkout one "
                "after another and print their tables; scripts that import a module that is "
                "not installed are skipped."
            ),
            **help_with_exit_codes(),
        )
    )
    add_top_options(
        commands.add_parser(
            "top",
            help="a live view of a running client (--attach its admin socket)",
            description=(
                "Show a running client's busiest keys, fetch rates (cold, refetch, failed), "
                "fetches in flight, L2 and fleet health, refreshed every --interval seconds."
            ),
            **help_with_exit_codes(),
        )
    )
    args = parser.parse_args(argv)
    if args.command in ("inspect", "bench", "top") or (
        args.command == "invalidate" and is_store_invalidate(args)
    ):
        return run_command(args)
    if args.command == "invalidate":
        return run_redis_invalidate_command(args)
    if args.command == "demo":
        from .cli._demo import read_back, run_demo

        if args.read_from:
            trio.run(read_back, args.read_from)
        else:
            trio.run(run_demo)
        return 0
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
