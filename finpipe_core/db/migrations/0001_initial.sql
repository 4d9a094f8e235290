-- finpipe schema v1. Applied by yoyo-migrations; never edit an applied
-- migration: add a new file instead.

CREATE TABLE symbols (
    symbol      text PRIMARY KEY CHECK (symbol ~ '^\^?[A-Z0-9]{1,10}([.\-=][A-Z0-9]{1,10})?$'),
    name        text,
    active      boolean NOT NULL DEFAULT true,
    added_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE symbol_state (
    symbol               text PRIMARY KEY REFERENCES symbols (symbol),
    last_requested_date  date,
    last_processed_date  date,
    first_requested_date date,
    status               text NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'parked', 'failed')),
    error                text,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The manager's transactional outbox and the record the sensors read.
CREATE TABLE tasks (
    task_id       text PRIMARY KEY,
    symbol        text NOT NULL,
    start_date    date NOT NULL,
    end_date      date NOT NULL CHECK (end_date >= start_date),
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'published', 'fetched', 'done', 'no_data', 'failed')),
    force         boolean NOT NULL DEFAULT false,
    attempts      integer NOT NULL DEFAULT 0,
    requested_by  text,
    error         text,
    bars          integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    completed_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_status_updated_idx ON tasks (status, updated_at);
CREATE INDEX tasks_symbol_range_idx ON tasks (symbol, start_date, end_date);

-- Daily bars as the source gave them (yfinance: split-adjusted OHLC, raw dividends,
-- split ratio with 0 meaning no split).
CREATE TABLE prices (
    symbol     text NOT NULL,
    date       date NOT NULL,
    open       double precision NOT NULL,
    high       double precision NOT NULL,
    low        double precision NOT NULL,
    close      double precision NOT NULL,
    adj_close  double precision NOT NULL,
    volume     double precision NOT NULL,
    dividends  double precision NOT NULL DEFAULT 0,
    splits     double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (symbol, date)
);

CREATE TABLE indicators (
    symbol       text NOT NULL,
    date         date NOT NULL,
    rsi_14       double precision,
    macd         double precision,
    macd_signal  double precision,
    macd_hist    double precision,
    sma_20       double precision,
    sma_50       double precision,
    sma_200      double precision,
    ema_12       double precision,
    ema_26       double precision,
    ema_50       double precision,
    bb_upper     double precision,
    bb_middle    double precision,
    bb_lower     double precision,
    atr_14       double precision,
    obv          double precision,
    stoch_k      double precision,
    stoch_d      double precision,
    adx_14       double precision,
    PRIMARY KEY (symbol, date)
);

-- What the incremental engine needs to continue each symbol exactly where it stopped.
CREATE TABLE indicator_state (
    symbol      text PRIMARY KEY,
    last_date   date NOT NULL,
    bars_seen   integer NOT NULL,
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Processor offsets, written in the same transaction as the rows they produced.
CREATE TABLE consumer_offsets (
    group_id     text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
