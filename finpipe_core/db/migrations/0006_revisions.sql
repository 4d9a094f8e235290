-- depends: 0005_dead_letters
-- Data you can trust (issue #16).
--
-- 1. The revision log: every change the processor makes to a stored bar (a revised volume or
--    price, a late split, a bar arriving inside the stored history), written in the batch
--    transaction that applies it. Only the columns that changed are in old_values/new_values;
--    an inserted bar has no old values. task_id is the fetch task whose message brought it.
CREATE TABLE revisions (
    id          bigserial PRIMARY KEY,
    symbol      text NOT NULL,
    date        date NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('revised', 'inserted')),
    columns     text[] NOT NULL,
    old_values  jsonb,
    new_values  jsonb NOT NULL,
    -- An indicator input changed: the symbol's indicators were recomputed from its history.
    rewrote_history boolean NOT NULL,
    task_id     text,
    seen_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revisions_symbol_date_idx ON revisions (symbol, date);
-- The completion sensor counts revisions per day.
CREATE INDEX revisions_date_idx ON revisions (date);

GRANT SELECT, INSERT ON revisions TO finpipe_processor;
GRANT USAGE ON SEQUENCE revisions_id_seq TO finpipe_processor;
GRANT SELECT ON revisions TO finpipe_manager, finpipe_reader;

-- 2. The warm-up marker: per stored indicator row, how many bars of the symbol's history lie
--    at or before it (bar_number, 1 = the first stored bar) and, per indicator, whether that is
--    at least the indicator's convergence length (finpipe_core/indicators/registry.py,
--    CONVERGENCE_BARS): a warm value does not depend on where the history starts (within the
--    tolerance stated there); a cold one would differ if the history started elsewhere. OBV is
--    a running sum and is never warm. The values themselves stay TA-Lib's.
CREATE VIEW indicators_warm AS
SELECT
    symbol,
    date,
    bar_number,
    bar_number >= 140 AS rsi_14_warm,
    bar_number >= 200 AS macd_warm,
    bar_number >= 20 AS sma_20_warm,
    bar_number >= 50 AS sma_50_warm,
    bar_number >= 200 AS sma_200_warm,
    bar_number >= 70 AS ema_12_warm,
    bar_number >= 150 AS ema_26_warm,
    bar_number >= 280 AS ema_50_warm,
    bar_number >= 20 AS bbands_20_warm,
    bar_number >= 140 AS atr_14_warm,
    false AS obv_warm,
    bar_number >= 18 AS stoch_warm,
    bar_number >= 230 AS adx_14_warm
FROM (
    SELECT symbol, date, row_number() OVER (PARTITION BY symbol ORDER BY date) AS bar_number
    FROM indicators
) AS numbered;

GRANT SELECT ON indicators_warm TO finpipe_manager, finpipe_reader;
