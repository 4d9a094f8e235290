"""The manager's logic without Dagster: the universe, the task outbox, completion and health.

``finpipe_dagster`` wraps these in assets, sensors and checks; the CLI uses them directly.
"""
