"""The testing agent: the service's own tests with coverage, then proven generated tests for uncovered code.

Stage entry point: :func:`agents.testing.stage.run` (publishes test_results)."""
