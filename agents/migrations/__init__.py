"""The migrations agent: schema migrations found in a change, shown, and run as their own stage before traffic moves.

``detect`` finds them (Alembic, Django, Flyway, Liquibase, plain SQL folders) with their destructive
statements; ``stage`` runs each service's migration command in a one-off container of the run's new image.
"""
