"""The ``stackquery`` command line: ``python -m stackquery demo``."""

from __future__ import annotations

import argparse
import sys

import trio


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = argparse.ArgumentParser(prog="stackquery", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="a tour of the query client, in plain words")
    demo.add_argument("--read-from", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import read_back, run_demo

        if args.read_from:
            trio.run(read_back, args.read_from)
        else:
            trio.run(run_demo)
        return 0
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
