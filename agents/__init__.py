"""The agents: one module per stage; each reads the run, does one stage and publishes events."""
