"""The infrastructure agent (Terraform): not built yet, so the stage graph has no iac stage.

Its stage entry point will be ``agents.iac.stage.run``, between build and deploy."""
