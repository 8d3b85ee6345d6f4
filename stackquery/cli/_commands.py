"""The options of ``inspect``, ``invalidate``, ``top`` and ``bench``, and their dispatch.

``__main__`` declares the subcommands; this module adds their options and
runs them, so that each command's module is imported only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ._output import EXIT_CODES_EPILOG, CommandError

if TYPE_CHECKING:
    from ._stores import StoreKind

#: The subcommands :func:`run_command` runs.
COMMANDS = ("inspect", "invalidate", "bench", "top")

PREFIX_HELP = (
    "the text in front of each canonical key in the store: the client's key_prefix, "
    "after RedisStorage's own prefix if it was given one (default: sq:)"
)
KEY_PREFIX_HELP = "a query-key prefix as a JSON array, e.g. '[\"user\"]' or '[\"user\", 42]'"
ATTACH_HELP = "the admin socket of a running client (QueryClientConfig(admin_socket=PATH))"


def positive_number(text: str) -> float:
    """Parse a positive number of seconds (an ``argparse`` type).

    Raises:
        argparse.ArgumentTypeError: ``text`` is not a finite number > 0.
    """
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Parse a positive whole number (an ``argparse`` type).

    Raises:
        argparse.ArgumentTypeError: ``text`` is not a whole number >= 1.
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def help_with_exit_codes() -> dict[str, Any]:
    """Keyword arguments for a parser that show the exit codes at the end of its ``--help``."""
    return {"epilog": EXIT_CODES_EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_inspect_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``stackquery inspect``."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", metavar="PATH", help="a SQLiteStorage database file")
    where.add_argument("--file", metavar="DIR", help="a FileStorage directory")
    where.add_argument(
        "--redis",
        metavar="URL",
        help="a Redis URL (redis://host:port/db, or redis+cluster://host:port,... for a cluster)",
    )
    where.add_argument("--attach", metavar="PATH", help=ATTACH_HELP)
    parser.add_argument(
        "key_prefix",
        nargs="?",
        metavar="KEY-PREFIX",
        help="with --attach: only the keys under this prefix (a JSON array)",
    )
    parser.add_argument("--prefix", help=PREFIX_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="show the first N keys by name"
    )
    parser.add_argument("--plain", action="store_true", help="plain text even with rich")


def add_store_invalidate_options(
    where: argparse._MutuallyExclusiveGroup, parser: argparse.ArgumentParser
) -> None:
    """Add ``--sqlite``, ``--file`` and ``--attach`` to the store choice of ``invalidate``."""
    where.add_argument("--sqlite", metavar="PATH", help="a SQLiteStorage database file")
    where.add_argument("--file", metavar="DIR", help="a FileStorage directory")
    where.add_argument(
        "--attach",
        metavar="PATH",
        help=ATTACH_HELP + ": invalidates what that process holds, observed keys refetch",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="with --attach: wait until the observed keys' refetches settled",
    )


def add_top_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``stackquery top``."""
    parser.add_argument("--attach", metavar="PATH", required=True, help=ATTACH_HELP)
    parser.add_argument(
        "--interval", type=positive_number, default=2.0, metavar="SECONDS", help="between refreshes"
    )
    parser.add_argument("--rows", type=positive_int, default=10, metavar="N", help="keys shown")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--plain", action="store_true", help="plain text even with rich")


def add_bench_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``stackquery bench``."""
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument(
        "--rounds", type=positive_int, metavar="N", help="rounds, for each script that takes them"
    )
    parser.add_argument("--dir", metavar="DIR", help="the benchmarks folder")
    parser.add_argument("--list", action="store_true", help="list the benchmarks, run none")
    parser.add_argument("--plain", action="store_true", help="plain text even with rich")


def is_store_invalidate(args: argparse.Namespace) -> bool:
    """Whether an ``invalidate`` command line names a SQLite or file store, or a socket."""
    return bool(
        getattr(args, "sqlite", None)
        or getattr(args, "file", None)
        or getattr(args, "attach", None)
    )


def run_command(args: argparse.Namespace) -> int:
    """Run ``inspect``, ``invalidate --sqlite/--file/--attach``, ``top`` or ``bench``.

    Returns the exit code.

    A :class:`CommandError` is printed on stderr as ``stackquery COMMAND: error: ...``
    and its exit code returned.
    """
    try:
        return _dispatch(args)
    except CommandError as exc:
        print(f"stackquery {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "top":
        from ._top import run_top

        return run_top(
            args.attach,
            interval=args.interval,
            once=args.once,
            rows=args.rows,
            plain=args.plain,
            out=sys.stdout,
        )
    if getattr(args, "attach", None) is not None:
        return _dispatch_attach(args)
    if getattr(args, "key_prefix", None) is not None:
        raise CommandError("a KEY-PREFIX is taken only with --attach")
    if getattr(args, "wait", False):
        raise CommandError("--wait is taken only with --attach")
    if args.command == "bench":
        from ._bench import run_bench

        return run_bench(
            args.names,
            rounds=args.rounds,
            directory=args.dir,
            list_only=args.list,
            plain=args.plain,
            out=sys.stdout,
            err=sys.stderr,
        )
    if args.command == "invalidate":
        from ._store_invalidate import run_store_invalidate

        kind: StoreKind = "sqlite" if args.sqlite else "file"
        location = args.sqlite or args.file
        return run_store_invalidate(
            kind, location, args.key_prefixes, prefix=args.prefix, out=sys.stdout
        )
    from ._inspect import run_inspect
    from ._stores import DEFAULT_PREFIXES, StoreTarget

    if args.sqlite:
        target = StoreTarget("sqlite", args.sqlite)
    elif args.file:
        target = StoreTarget("file", args.file)
    else:
        target = StoreTarget("redis", args.redis)
    prefix = DEFAULT_PREFIXES[target.kind] if args.prefix is None else args.prefix
    return run_inspect(
        target, prefix, json_output=args.json, limit=args.limit, plain=args.plain, out=sys.stdout
    )


def _dispatch_attach(args: argparse.Namespace) -> int:
    from ._attach import run_attach_inspect, run_attach_invalidate

    if args.prefix is not None:
        raise CommandError("--prefix names a store's key prefix: it is not taken with --attach")
    if args.command == "invalidate":
        return run_attach_invalidate(args.attach, args.key_prefixes, wait=args.wait, out=sys.stdout)
    return run_attach_inspect(
        args.attach,
        args.key_prefix,
        json_output=args.json,
        limit=args.limit,
        plain=args.plain,
        out=sys.stdout,
    )
