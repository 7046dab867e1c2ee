"""The rooms and their one-way arrows: channels (bot) → handlers → jobs → agents → kernel (orchestra).

The CLI may import everything and nothing imports it; Slack and GitHub never import each other;
below the channels nothing knows Slack's libraries. Every import counts, including late ones
inside functions.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"bot": 4, "handlers": 3, "jobs": 2, "agents": 1, "orchestra": 0}
CHANNELS = ("bot.slack", "bot.github", "bot.localslack")
SLACK_LIBRARIES = ("slack_bolt", "slack_sdk")


def _modules() -> Iterator[tuple[str, Path]]:
    for top in (*LAYERS, "cli"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _against_the_arrows(module: str, imported: str) -> str | None:
    """Why ``module`` may not import ``imported``, or None when it may."""
    here, there = _top(module), _top(imported)
    if there == "cli" and here != "cli":
        return "nothing imports the CLI"
    if here == "cli" or there not in LAYERS:
        return None if there not in SLACK_LIBRARIES or here in ("bot", "cli") else "only channels use Slack's libraries"
    if LAYERS[there] > LAYERS[here]:
        return f"{here} is below {there}"
    mine = next((c for c in CHANNELS if module.startswith(c)), None)
    theirs = next((c for c in CHANNELS if imported.startswith(c)), None)
    if mine and theirs and mine != theirs:
        return "channels never import each other"
    return None


def violations() -> list[str]:
    found = []
    for module, path in _modules():
        for line, imported in _imports(path):
            reason = _against_the_arrows(module, imported)
            if reason:
                found.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {imported}: {reason}")
    return found


def test_every_import_follows_the_arrows() -> None:
    assert violations() == []


@pytest.mark.parametrize("module, imported, reason", [
    ("orchestra.store", "jobs.router", "orchestra is below jobs"),
    ("agents.deploy.stage", "handlers.deploy", "agents is below handlers"),
    ("jobs.dispatch", "bot.slack.texts", "jobs is below bot"),
    ("bot.slack.relay", "bot.github.client", "channels never import each other"),
    ("handlers.intake", "cli.render", "nothing imports the CLI"),
    ("agents.chatops.answers", "slack_sdk", "only channels use Slack's libraries"),
    ("bot.github.handoff", "handlers.deploy", None),
    ("cli.run", "bot.slack.process", None),
    ("agents.observability.live", "agents.deploy.targets.state", None),
])
def test_the_rule_itself(module: str, imported: str, reason: str | None) -> None:
    assert _against_the_arrows(module, imported) == reason
