"""GitHub: the webhook receiver, delivery parsing, the REST client, and the PR-comment and status relay.

Entry point: :func:`bot.github.receiver.build_webhook_app` (the `orchestra webhooks` process)."""
