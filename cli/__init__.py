"""The `orchestra` command: one module per subcommand under cli/.

Each module has ``add_parser(subparsers)`` and ``run(args, settings) -> int``.
Only the module of the command being run is imported, so a worker does not
load the Slack app and the help stays fast. This is the process entry point:
it reads the environment once.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from orchestra.errors import OrchestraError
from orchestra.logs import setup_logging
from orchestra.redaction import protect_process, redact
from orchestra.settings import Settings

COMMANDS = {
    "run": "run the pipeline for a repository and follow it",
    "events": "print events (all runs, or one with --run)",
    "validate": "check a devops_orchestra.yaml",
    "worker": "run stage jobs (an RQ worker) and the router",
    "up": "start the Procfile's processes together",
    "bot": "the Slack bot (socket mode)",
    "slack-server": "the local Slack workspace",
    "say": "act as a user in the local Slack workspace",
    "transcript": "print the local Slack workspace's channel and threads",
    "demo": "play the README's story in the local Slack workspace (needs scripts/up running)",
    "parse": "print the intent of each text",
    "webhooks": "the GitHub webhook receiver",
    "explain": "answer why/what/who questions from the event log",
    "inspect": "dependency, structure and security findings; risk and review of a diff",
    "testgen": "generate proven tests for uncovered code",
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra", description="DevOps Orchestra: ChatOps delivery pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name == command:
            importlib.import_module(f"cli.{name.replace('-', '_')}").add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        settings = Settings.from_env()
        protect_process(settings, os.environ)  # the credentials it holds are redacted from all that leaves
        setup_logging(settings.log_format, verbose=args.verbose)
        return int(args.handler(args, settings))
    except OrchestraError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
