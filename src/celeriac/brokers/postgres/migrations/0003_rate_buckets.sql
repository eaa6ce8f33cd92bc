-- celeriac schema version 3: rate-limit token buckets shared by every worker.
-- rate_buckets holds one bucket per key (tokens at the last update, and that update's
-- database time in epoch seconds); take_token(key, rate, capacity) refills, takes and
-- returns the wait in one call holding the bucket's row lock, so concurrent workers on
-- any host serialise on it and the database clock decides.

CREATE TABLE {schema}.rate_buckets (
    key text PRIMARY KEY,
    tokens float8 NOT NULL,
    updated float8 NOT NULL
);

CREATE FUNCTION {schema}.take_token(bucket text, rate float8, capacity float8)
RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    level float8;
    last float8;
    now_s float8;
BEGIN
    INSERT INTO {schema}.rate_buckets (key, tokens, updated)
    VALUES (bucket, capacity, extract(epoch FROM clock_timestamp()))
    ON CONFLICT (key) DO NOTHING;
    SELECT tokens, updated INTO level, last FROM {schema}.rate_buckets
    WHERE key = bucket FOR UPDATE;
    now_s := GREATEST(last, extract(epoch FROM clock_timestamp()));  -- after the lock
    level := LEAST(capacity, level + (now_s - last) * rate);
    IF level >= 1 THEN
        UPDATE {schema}.rate_buckets SET tokens = level - 1, updated = now_s WHERE key = bucket;
        RETURN 0;
    END IF;
    UPDATE {schema}.rate_buckets SET tokens = level, updated = now_s WHERE key = bucket;
    RETURN (1 - level) / rate;
END
$$;
