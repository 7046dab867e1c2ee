"""Ingress: Slack listeners and the GitHub webhook receiver, each turning input into an Intent."""
