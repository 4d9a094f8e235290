-- depends: 0002_parked_bars
-- The incremental indicator state moves from jsonb to msgpack bytes (msgspec): the same
-- JSON-safe value, about 3 kB instead of 7 kB, and ~20x cheaper to encode and decode, which
-- dominated a one-bar daily update. Existing states are dropped (NULL): the processor treats a
-- symbol with history but no state as stale and recomputes it from its stored prices.
ALTER TABLE indicator_state ALTER COLUMN state DROP NOT NULL;
ALTER TABLE indicator_state ALTER COLUMN state TYPE bytea USING NULL;
