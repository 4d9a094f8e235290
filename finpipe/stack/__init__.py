"""The local stack: a real Kafka broker and PostgreSQL cluster on this machine, run by finpipe.

``up`` is idempotent (a second call starts, creates and applies nothing), ``down`` leaves no
process of ours running, ``status`` says what runs where. Tests use the same functions.
"""

from finpipe.stack.kafka import (
    KafkaNode,
    cluster_down,
    cluster_up,
    ensure_topics,
    kafka_cluster_nodes,
    kafka_single_node,
)
from finpipe.stack.postgres import PostgresCluster
from finpipe.stack.stack import StackReport, down, status, up

__all__ = [
    "KafkaNode",
    "PostgresCluster",
    "StackReport",
    "cluster_down",
    "cluster_up",
    "down",
    "ensure_topics",
    "kafka_cluster_nodes",
    "kafka_single_node",
    "status",
    "up",
]
