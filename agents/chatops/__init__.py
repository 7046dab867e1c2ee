"""The chatops agent: answers to questions such as "why did prod roll back?", grounded in the event log.

Entry point: :func:`agents.chatops.answers.answer`."""
