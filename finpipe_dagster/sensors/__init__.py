"""Sensors: completion of the workers' tables, and stuck or failed work."""

from finpipe_dagster.sensors.completion import build_completion_sensor
from finpipe_dagster.sensors.stuck_tasks import build_stuck_tasks_sensor

__all__ = ["build_completion_sensor", "build_stuck_tasks_sensor"]
