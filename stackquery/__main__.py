"""The ``stackquery`` command line: ``python -m stackquery demo``."""

from __future__ import annotations

import argparse
import sys

import trio


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = argparse.ArgumentParser(prog="stackquery", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="a tour of the query client, in plain words")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        trio.run(run_demo)
        return 0
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
