-- celeriac schema version 1: queue, dead letters, results, chord joins, beat.
-- "{schema}" is replaced by the schema name (option ``schema``, default ``celeriac``).
-- Applied by ``celeriac -A proj db migrate`` (or automatically into an empty schema),
-- inside one transaction that holds an advisory lock on the schema name.

-- Messages waiting, delayed or leased. A row is deleted when acknowledged.
CREATE TABLE {schema}.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- publish order (FIFO)
    queue text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,                   -- 0..9, 0 is served first
    not_before timestamptz,                                 -- NULL: due; else invisible until then
    envelope text NOT NULL,                                 -- kombu's JSON envelope
    task_id text,                                           -- copied from the headers (admin)
    task_name text,
    lease_token uuid,                                       -- NULL: not leased; else the fence
    lease_owner text,
    lease_expires timestamptz,
    delivery_count integer NOT NULL DEFAULT 0,
    lost_count integer NOT NULL DEFAULT 0,                  -- leases that lapsed (holder died)
    first_delivered_at timestamptz,
    published_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80,
        autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 2000,
        autovacuum_vacuum_insert_scale_factor = 0.0, autovacuum_vacuum_insert_threshold = 5000,
        autovacuum_analyze_scale_factor = 0.0, autovacuum_analyze_threshold = 5000);

-- Ready rows only, in serving order: the lease reads the first rows of one queue in
-- (priority, id) order and stops. Leased and delayed rows are not in it, so neither a
-- large ETA backlog nor many running tasks slow the fetch, with or without statistics.
CREATE INDEX messages_ready ON {schema}.messages (queue, priority, id)
    WHERE lease_token IS NULL AND not_before IS NULL;
-- Delayed rows by due time: promoted to ready (not_before = NULL) once due.
CREATE INDEX messages_delayed ON {schema}.messages (queue, not_before)
    WHERE not_before IS NOT NULL;
-- Leased rows by expiry: lapsed leases are reclaimed from the front of this index.
CREATE INDEX messages_leased ON {schema}.messages (queue, lease_expires)
    WHERE lease_token IS NOT NULL;

CREATE TABLE {schema}.dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    priority smallint NOT NULL,
    reason text NOT NULL,
    envelope text NOT NULL,
    task_id text,
    task_name text,
    delivery_count integer NOT NULL,
    lost_count integer NOT NULL,
    first_delivered_at timestamptz,
    published_at timestamptz,
    dead_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_queue ON {schema}.dead_letters (queue, id);

-- Every queue that ever held a message (``celeriac status``, ``queues()``).
CREATE TABLE {schema}.queues (name text PRIMARY KEY);

-- Result metadata, exactly Celery's JSON, under Celery's key names
-- (celery-task-meta-<id>, celery-taskset-meta-<group id>).
CREATE TABLE {schema}.results (
    key text PRIMARY KEY,
    value text NOT NULL,
    expires_at timestamptz                                  -- NULL: never expires
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX results_expires ON {schema}.results (expires_at) WHERE expires_at IS NOT NULL;

-- Chord joins: one row per header member recorded, one counter per chord.
CREATE TABLE {schema}.chord_parts (
    group_id text NOT NULL,
    idx integer NOT NULL,
    value text NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (group_id, idx)
);
CREATE TABLE {schema}.chords (
    group_id text PRIMARY KEY,
    parts integer NOT NULL,
    expires_at timestamptz
);
CREATE INDEX chord_parts_expires ON {schema}.chord_parts (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX chords_expires ON {schema}.chords (expires_at) WHERE expires_at IS NOT NULL;

-- Beat: schedule entries, one row per claimed fire time, and small shared values
-- (the definition generation counter and the leader lease).
CREATE TABLE {schema}.beat_entries (
    name text PRIMARY KEY,
    definition text NOT NULL,                               -- EntrySpec.definition() as JSON
    enabled boolean NOT NULL,
    version integer NOT NULL,
    anchor_us bigint NOT NULL,                              -- UTC microseconds
    last_run_us bigint,
    dropped_us bigint,
    total_run_count integer NOT NULL DEFAULT 0,
    source text NOT NULL,
    code_hash text
);
CREATE TABLE {schema}.beat_fires (
    entry text NOT NULL,
    fire_us bigint NOT NULL,
    task_id text NOT NULL,
    payload text NOT NULL,
    owner text NOT NULL,
    claimed_us bigint NOT NULL,
    state text NOT NULL,
    sent_us bigint,
    manual boolean NOT NULL DEFAULT false,
    PRIMARY KEY (entry, fire_us)                            -- one claim per fire time
);
CREATE INDEX beat_fires_claimed ON {schema}.beat_fires (state, claimed_us);
CREATE TABLE {schema}.beat_meta (key text PRIMARY KEY, value text, expires_us bigint);

-- The LISTEN/NOTIFY channel of a queue or a result key: short (PostgreSQL caps channel
-- names at 63 bytes) and unique per schema. celeriac computes the same name in Python.
CREATE FUNCTION {schema}.channel(kind text, name text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 'celeriac_' || left(md5('{schema}' || chr(31) || kind || chr(31) || name), 24) $$;
