-- depends: 0004_roles 0003_indicator_state_binary
-- What happened to each dead letter, keyed by where its message came from (the DLQ record's
-- finpipe.source.* headers). The processor records the ones it writes as 'open' in the same
-- transaction that parks the symbol; `finpipe unpark` marks a symbol's open ones 'skipped' and
-- `finpipe dlq replay` marks what it sends 'replayed', so a replay sends each record once.
CREATE TABLE dead_letters (
    source_topic      text NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    symbol            text,
    error             text,
    status            text NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'replayed', 'skipped')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz,
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
CREATE INDEX dead_letters_symbol_idx ON dead_letters (symbol, status);

GRANT SELECT, INSERT, UPDATE ON dead_letters TO finpipe_processor;
GRANT SELECT ON dead_letters TO finpipe_reader;
