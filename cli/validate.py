"""`orchestra validate [PATH]`: check a devops_orchestra.yaml (or a repository) and list every problem."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli import texts as messages
from orchestra.config import CONFIG_FILENAME, config_path, infer_config, load_file
from orchestra.errors import ConfigError
from orchestra.settings import Settings


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "validate", help=f"check {CONFIG_FILENAME}: one line per problem with file, line and field",
        description=f"Validate {CONFIG_FILENAME}. PATH is the file or the repository holding it (default: .). "
                    "Exit status 0 when valid, 1 with one FILE:LINE: field: problem line per problem.")
    parser.add_argument("path", nargs="?", default=".", help="the file, or a repository directory")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print a one-line summary (exit 0) or every problem (exit 1)."""
    path = Path(args.path)
    file = config_path(path) if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        summary = infer_config(path).summary()
        print(messages.INFERRED.format(filename=CONFIG_FILENAME, repo=path, summary=summary))
        return 0
    if not file.is_file():
        print(messages.NO_SUCH_PATH.format(path=file), file=sys.stderr)
        return 1
    try:
        config = load_file(file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(messages.INVALID.format(count=len(exc.problems), path=file), file=sys.stderr)
        return 1
    print(messages.VALID.format(path=file, summary=config.summary()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cli.validate [PATH]`` without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="orchestra validate")
    subparsers = parser.add_subparsers(dest="command")
    add_parser(subparsers)
    args = parser.parse_args(["validate", *(sys.argv[1:] if argv is None else argv)])
    return run(args, Settings.from_env())


if __name__ == "__main__":
    sys.exit(main())
