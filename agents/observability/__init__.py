"""The observability agent: metrics, the canary judge, the watch after a release, the circuit breaker.

Stage entry point: :func:`agents.observability.stage.run`; the deploy stage judges canaries with
:func:`agents.observability.live.deploy_judge`."""
