"""The `orchestra` command: one module per subcommand under orchestra/cli/.

Each module has ``add_parser(subparsers)`` and ``run(args, settings) -> int``.
This is the process entry point: it reads the environment once.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from orchestra.errors import OrchestraError
from orchestra.settings import Settings

COMMANDS = ("validate", "run", "events", "worker", "up")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra", description="DevOps Orchestra: ChatOps delivery pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"orchestra.cli.{name.replace('-', '_')}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args, Settings.from_env()))
    except OrchestraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
