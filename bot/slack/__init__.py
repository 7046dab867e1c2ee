"""Slack: the Bolt app factory, its listeners, Block Kit views, texts, thread store, relay and pacing.

Entry point: :func:`bot.slack.process.run_bot` (the `orchestra bot` process)."""
