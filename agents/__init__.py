"""The agents, one package per agent of the design: analysis, testing, build, iac, deploy,
observability, chatops. Each reads the run, does one stage and publishes events; the shared pieces
are the agent context, the tool runner, findings and the Python source walker."""
