"""The infrastructure agent (Terraform), the ``iac`` stage between build and deploy.

Its entry point is ``agents.iac.stage.run``. Today it finds the repository's Terraform at
``infrastructure.path`` and checks its formatting; generation, plan and apply are not built yet."""
