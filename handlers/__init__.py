"""One module per intent (deploy, rollback, status, history, explain, cancel, approve, plan, help):
each takes an intent and who asked and returns a channel-neutral reply that every channel renders."""
