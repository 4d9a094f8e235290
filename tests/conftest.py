"""Shared fixtures: the real local Kafka broker and PostgreSQL cluster, started like `make up`."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.pipeline",
    "tests.fixtures.manager",
    "tests.fixtures.batches",
]
