"""The code analysis agent: lint, undeclared imports, structure, security, the change's risk and a review.

Stage entry point: :func:`agents.analysis.stage.run` (publishes code_analysis_result and risk_classified)."""
