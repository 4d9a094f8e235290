"""finpipe's error classes: what went wrong decides what a worker does next.

- ``RetriableError``: back off and try again; the message's offset is not advanced.
- ``PoisonMessageError``: the message itself is bad; send it to the DLQ with the reason,
  park its symbol, advance the offset.
- ``FatalError``: configuration or infrastructure that cannot heal by retrying; exit non-zero
  and let the supervisor (Kubernetes) restart the process.
"""


class FinpipeError(Exception):
    """Base class of every finpipe error."""


class RetriableError(FinpipeError):
    """A transient failure (broker, database or source unavailable); retry with backoff."""


class PoisonMessageError(FinpipeError):
    """A message that can never be processed as it is; it goes to the dead-letter topic."""


class ContractError(PoisonMessageError, ValueError):
    """A message or value that breaks a finpipe contract (schema, version, size, symbol)."""


class FatalError(FinpipeError):
    """Unrecoverable configuration or infrastructure error; the process should exit."""
