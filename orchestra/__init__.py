"""DevOps Orchestra: the shared kernel (settings, config, events, store, policy, llm, CLI)."""
