-- celeriac schema version 4: slots (concurrency limits, serial_task) and unique claims.

-- One row per holder of a slot. A holder counts only while its message is still
-- leased under the same token with a live lease (slot_acquire joins messages), so an
-- acknowledged message or a lapsed lease (a killed worker) frees its place by itself.
CREATE TABLE {schema}.slots (
    name text NOT NULL,
    message_id bigint NOT NULL,
    token uuid NOT NULL,
    task_id text,
    PRIMARY KEY (name, token)
);

-- unique_for: a claimed key and the task id that claimed it, until expires_at.
CREATE TABLE {schema}.unique_claims (
    key text PRIMARY KEY,
    value text NOT NULL,
    expires_at timestamptz NOT NULL
);
