"""The deploy agent: puts built images live with a strategy (blue-green, canary, rolling) on a target.

Stage entry points: :func:`agents.deploy.stage.run` and :func:`agents.deploy.rollback.run`."""
