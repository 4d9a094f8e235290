"""The local stack: a real Kafka broker and PostgreSQL cluster on this machine, run by finpipe.

``up`` is idempotent (a second call starts, creates and applies nothing), ``down`` leaves no
process of ours running, ``status`` says what runs where. Tests use the same functions.
"""

from finpipe.stack.kafka import KafkaNode, ensure_topics, kafka_single_node
from finpipe.stack.postgres import PostgresCluster
from finpipe.stack.settings import StackSettings, get_stack_settings
from finpipe.stack.stack import STOP_TIMEOUT_S, StackDownError, StackReport, down, status, up

__all__ = [
    "STOP_TIMEOUT_S",
    "KafkaNode",
    "PostgresCluster",
    "StackDownError",
    "StackReport",
    "StackSettings",
    "down",
    "ensure_topics",
    "get_stack_settings",
    "kafka_single_node",
    "status",
    "up",
]
