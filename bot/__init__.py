"""The Slack app: socket-mode entry, Block Kit views, the relay."""
