"""`orchestra up`: the Procfile's processes together, for local use, kept running (cli/supervise.py).

Without Slack tokens it also starts the local Slack workspace and points the
bot at it; without a webhook secret it makes one up and prints it.
"""
from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import time
from pathlib import Path

from cli.common import connect
from cli.supervise import Supervisor
from orchestra.errors import OrchestraError
from orchestra.settings import PROJECT_ROOT, Settings

LOCAL_SLACK_PORT = 3300


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("up", help="start the Procfile's processes together")
    parser.add_argument("--procfile", default=str(PROJECT_ROOT / "Procfile"))
    parser.add_argument("--slack-port", type=int, default=LOCAL_SLACK_PORT,
                        help="port of the local Slack workspace (used without Slack tokens)")
    parser.set_defaults(handler=run)


def read_procfile(path: Path) -> dict[str, str]:
    """``name: command`` lines; blank lines and comments are skipped."""
    processes = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, command = text.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise OrchestraError(f"{path}:{number}: expected `name: command`, got {raw!r}")
        processes[name.strip()] = command.strip()
    return processes


def run(args: argparse.Namespace, settings: Settings) -> int:
    connect(settings)  # fail early, with a hint, when Redis is not there
    processes = read_procfile(Path(args.procfile))
    env = dict(os.environ)  # this process is the entry point: children inherit its environment
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if settings.slack_bot_token is None:
        processes = {"slack": f"orchestra slack-server --port {args.slack_port}", **processes}
        env.update(SLACK_API_URL=f"http://127.0.0.1:{args.slack_port}/api/", SLACK_BOT_TOKEN="xoxb-local",
                   SLACK_APP_TOKEN="xapp-local")
        print(f"no Slack tokens: using the local Slack workspace on 127.0.0.1:{args.slack_port} "
              f"(try: orchestra say \"/deploy frontend\")", flush=True)
    if settings.github_webhook_secret is None:
        env["GITHUB_WEBHOOK_SECRET"] = secrets.token_hex(16)
        print(f"no GITHUB_WEBHOOK_SECRET: using {env['GITHUB_WEBHOOK_SECRET']} until orchestra up stops", flush=True)
    return supervise(processes, env, slack_port=args.slack_port)


def supervise(processes: dict[str, str], env: dict[str, str], *, slack_port: int = LOCAL_SLACK_PORT) -> int:
    """Run every process, prefix its output with its name, restart one that exits; stop all on a signal."""
    def after_start(name: str) -> None:
        if name == "slack":  # the bot connects to it at start
            _wait_for_port(slack_port, deadline=time.monotonic() + 15)
    return Supervisor(processes, env, after_start=after_start).run()


def _wait_for_port(port: int, *, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise OrchestraError(f"the local Slack workspace did not start on port {port}",
                         hint="is the port taken? pass --slack-port")
