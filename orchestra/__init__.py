"""DevOps Orchestra's kernel: settings, the config model, events, store, policy, llm, redaction,
repositories, intents and errors. It imports nothing from the layers above it."""
