"""The Slack app manifest matches what the bot listens to."""
from __future__ import annotations

import yaml

from bot.slack.listeners import COMMANDS
from orchestra.settings import PROJECT_ROOT


def test_the_slack_manifest_declares_what_the_bot_listens_to() -> None:
    manifest = yaml.safe_load((PROJECT_ROOT / "bot" / "slack" / "manifest.yaml").read_text())
    commands = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert commands == {"/deploy", "/rollback", "/orchestra"} and commands <= set(COMMANDS)
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == {"app_mention", "message.im"}
    assert {"chat:write", "commands", "app_mentions:read"} <= set(manifest["oauth_config"]["scopes"]["bot"])
