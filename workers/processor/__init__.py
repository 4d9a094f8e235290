"""The processor: consume bars, compute indicators per symbol in order, store in PostgreSQL."""
