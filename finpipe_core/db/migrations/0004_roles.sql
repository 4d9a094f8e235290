-- depends: 0002_parked_bars
-- Least privilege (docs/security.md). Four NOLOGIN group roles, one per kind of process; login
-- users are created by the deployment and made members of exactly one of them:
--   finpipe_manager    Dagster (outbox, universe sync, sensors, asset checks), `finpipe symbols`
--   finpipe_processor  processors, and `finpipe unpark` / `finpipe dlq replay`
--   finpipe_agent      agents: only the shared yfinance request budget (pyrate-limiter)
--   finpipe_reader     dashboards, `finpipe status`: SELECT only
-- The owner of the schema (the role applying migrations) keeps DDL; no group role can create,
-- alter, truncate or drop a finpipe table. Roles are cluster-wide, so they are created only if
-- missing (tests apply migrations to many databases of one cluster); grants are per database.
-- Creating roles needs CREATEROLE; where the migration role has none (CloudNativePG's app
-- owner), an administrator creates the four roles first and grants finpipe_agent to the
-- migration role (see below and docs/security.md): then no statement here needs CREATEROLE.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['finpipe_manager', 'finpipe_processor', 'finpipe_agent',
                             'finpipe_reader']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database
            END;
        END IF;
    END LOOP;
END
$$;

-- Only the owner and the four roles may connect; only the processor makes temporary tables
-- (its COPY staging tables). PUBLIC has both by default.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO finpipe_manager, finpipe_processor, '
                   'finpipe_agent, finpipe_reader', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO finpipe_processor', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO finpipe_manager, finpipe_processor, finpipe_reader;

-- reader: everything finpipe stores, read only (also tables later migrations create).
GRANT SELECT ON symbols, symbol_state, tasks, prices, indicators, indicator_state,
    consumer_offsets, parked_bars TO finpipe_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO finpipe_reader;

-- manager: the universe (workers/universe.py), the outbox (workers/outbox.py: tasks and the
-- requested range in symbol_state), and reads for the completion sensor and asset checks.
GRANT SELECT, INSERT (symbol, name, active), UPDATE (name, active) ON symbols TO finpipe_manager;
GRANT SELECT, INSERT (symbol),
    UPDATE (first_requested_date, last_requested_date, updated_at)
    ON symbol_state TO finpipe_manager;
GRANT SELECT, INSERT (task_id, symbol, start_date, end_date, force, requested_by),
    UPDATE (status, attempts, error, requested_by, published_at, completed_at, bars, updated_at)
    ON tasks TO finpipe_manager;
GRANT SELECT ON prices, indicators TO finpipe_manager;

-- processor (workers/processor/batch.py, parking.py): bars, indicators and their state, its
-- offsets, held messages of parked symbols, task results and symbol progress. It may add a
-- symbol it receives bars for (inactive), never change the universe or a task's request.
GRANT SELECT, INSERT, UPDATE ON prices, indicator_state, consumer_offsets TO finpipe_processor;
-- A rewritten history replaces a symbol's indicators.
GRANT SELECT, INSERT, UPDATE, DELETE ON indicators TO finpipe_processor;
-- Unparking a symbol takes its held messages out.
GRANT SELECT, INSERT, DELETE ON parked_bars TO finpipe_processor;
GRANT USAGE ON SEQUENCE parked_bars_id_seq TO finpipe_processor;
GRANT SELECT, INSERT (task_id, symbol, start_date, end_date, status, bars, error, completed_at),
    UPDATE (status, bars, error, completed_at, updated_at) ON tasks TO finpipe_processor;
GRANT INSERT (symbol, active) ON symbols TO finpipe_processor;
GRANT SELECT, INSERT (symbol), UPDATE (status, error, last_processed_date, updated_at)
    ON symbol_state TO finpipe_processor;

-- agent: the yfinance request budget shared by all agents (workers/sources/ratelimit.py).
-- pyrate-limiter's PostgresBucket runs CREATE TABLE IF NOT EXISTS and CREATE INDEX IF NOT
-- EXISTS on every start (PostgreSQL checks CREATE on the schema and table ownership even when
-- they exist) and LOCK TABLE ... IN EXCLUSIVE MODE on each request. So the budget lives in its
-- own schema, where the agent may create tables, with its table created here and owned by the
-- group role: every agent login user (members of finpipe_agent) can use it, none can touch
-- public. Agent login users need `ALTER ROLE <user> SET search_path = finpipe_ratelimit`.
CREATE SCHEMA IF NOT EXISTS finpipe_ratelimit;
GRANT USAGE, CREATE ON SCHEMA finpipe_ratelimit TO finpipe_agent;
CREATE TABLE IF NOT EXISTS finpipe_ratelimit.ratelimit___finpipe_yfinance (
    name            varchar,
    weight          smallint,
    item_timestamp  timestamp
);
CREATE INDEX IF NOT EXISTS timestampindex_finpipe_yfinance
    ON finpipe_ratelimit.ratelimit___finpipe_yfinance (item_timestamp);
-- Giving the table to finpipe_agent needs membership in it: granted here with CREATEROLE, or
-- beforehand by the administrator who created the roles (GRANT needs CREATEROLE even when the
-- membership exists, hence the check).
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'finpipe_agent', 'MEMBER') THEN
        EXECUTE format('GRANT finpipe_agent TO %I', current_user);
    END IF;
END
$$;
ALTER TABLE finpipe_ratelimit.ratelimit___finpipe_yfinance OWNER TO finpipe_agent;
