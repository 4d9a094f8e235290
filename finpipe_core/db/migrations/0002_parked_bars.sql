-- depends: 0001_initial
-- Messages of a parked symbol wait here, in arrival order, until the symbol is unparked
-- (`finpipe dlq replay` / unpark); written in the processor's batch transaction.
CREATE TABLE parked_bars (
    id          bigserial PRIMARY KEY,
    symbol      text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    value       bytea NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);
CREATE INDEX parked_bars_symbol_idx ON parked_bars (symbol, id);
