-- celeriac on PostgreSQL: every statement the broker, the result store and the beat
-- store run. Loaded by celeriac.brokers.postgres.sql; "{schema}" becomes the schema
-- name, %(name)s are parameters. Times are passed and returned as epoch seconds
-- (float8); the database clock (now()) decides leases and delays, so hosts with
-- skewed clocks agree. Statements marked "async commit" set synchronous_commit = off
-- for their own transaction only: losing one in a server crash can only cause a
-- redelivery (WAL keeps commits in order, so a later durable commit flushes them too).
--
-- Broker
--   publish            insert messages (arrays, one element each) and NOTIFY each queue
--   declare_queues     remember queue names (once per queue per process)
--   ack_and_lease      one round trip for a worker: delete acked rows (fenced by token),
--                      promote due delayed rows, reclaim lapsed leases (lost + 1), lease
--                      up to %(limit)s ready rows FOR UPDATE SKIP LOCKED (async commit)
--   next_due           earliest delay end or lease expiry of the queues (how long to sleep)
--   ack                delete leased rows whose token still matches (async commit)
--   renew              extend leases whose token still matches (async commit)
--   release            give a leased row back, optionally delayed, counting one lost
--                      delivery when %(failed)s; NOTIFY (async commit)
--   dead_letter        move a leased row to dead_letters (fenced by token)
--   dead_letter_message  store a message that was never leased in dead_letters
--   expire_owner       make every live lease of an owner lapse now; NOTIFY its queues
--   purge              delete ready and delayed rows of a queue (not live leases)
--   stats              ready / delayed / leased / dead counts of a queue
--   queues             every queue name that held messages
--   dead_letters       list dead letters (all, or one queue), oldest first
--   retry_dead_letter  move a dead letter back to its queue with counters reset; NOTIFY
--   purge_dead_letters delete dead letters (all, or one queue)
--   take_token         one token from a rate-limit bucket (the take_token function of
--                      migration 0003: refill, take, wait; the database clock decides)
--   slot_lock          serialise the acquirers of one slot (transaction advisory lock)
--   slot_acquire       after slot_lock, in its transaction: forget holders whose lease is
--                      no longer live, add the delivery if fewer than %(limit)s remain and
--                      its own lease is live; returns 1 when it holds the slot
--   slot_release       drop one holder (by token)
--   slot_holders       live holders (all slots, or one), with owner and lease expiry
--   unique_claim       claim a key until now + %(seconds)s unless a live claim holds it;
--                      returns (1 when claimed, the value seen before the statement)
--   unique_release     drop a live claim that still holds %(value)s
-- Result store
--   result_get / result_get_many / result_set / result_delete
--                      Celery's meta JSON by key; a set NOTIFYs the key's channel
--                      (async commit when %(fast)s: the broker shares this database,
--                      so the task's later ack cannot survive a crash its result lost)
--   result_write       task metas (arrays) under the REVOKED rule: an upsert that skips
--                      a row whose live stored meta is REVOKED when the new one is
--                      guarded (not REVOKED itself); returns the keys written and
--                      NOTIFYs them (async commit when %(fast)s)
--   chord_add          record one header member (first value per index wins) and
--                      count it; returns the new count, or nothing for a duplicate
--   chord_parts        every recorded member of a chord, in index order
--   chord_clear        forget a chord's join state
--   result_cleanup     delete expired results, chord parts and counters
-- Beat store
--   beat_*             entries (compare-and-set on version), fire claims
--                      (INSERT ... ON CONFLICT DO NOTHING, one per entry and fire time),
--                      the generation counter and the leader lease
-- Maintenance
--   table_health       live/dead tuples, size, last (auto)vacuum of the queue table

-- name: publish
WITH inserted AS (
    INSERT INTO {schema}.messages (queue, priority, not_before, envelope, task_id, task_name)
    SELECT q, p, CASE WHEN nb IS NULL THEN NULL ELSE to_timestamp(nb) END, e, t, n
    FROM unnest(%(queues)s::text[], %(priorities)s::smallint[], %(not_befores)s::float8[],
                %(envelopes)s::text[], %(task_ids)s::text[], %(task_names)s::text[])
         AS m(q, p, nb, e, t, n)
)
SELECT pg_notify({schema}.channel('q', q), '') FROM unnest(%(channels)s::text[]) AS c(q);

-- name: publish_one
WITH inserted AS (
    INSERT INTO {schema}.messages (queue, priority, not_before, envelope, task_id, task_name)
    VALUES (%(queue)s, %(priority)s,
            CASE WHEN %(not_before)s::float8 IS NULL THEN NULL
                 ELSE to_timestamp(%(not_before)s::float8) END,
            %(envelope)s, %(task_id)s, %(task_name)s)
)
SELECT pg_notify({schema}.channel('q', %(queue)s), '');

-- name: declare_queues
INSERT INTO {schema}.queues (name) SELECT unnest(%(queues)s::text[]) ON CONFLICT DO NOTHING;

-- name: ack_and_lease
WITH acked AS (
    DELETE FROM {schema}.messages m
    USING unnest(%(ack_ids)s::bigint[], %(ack_tokens)s::uuid[]) AS a(id, token)
    WHERE m.id = a.id AND m.lease_token = a.token
    RETURNING 1
), promoted AS (
    UPDATE {schema}.messages SET not_before = NULL
    WHERE id IN (SELECT id FROM {schema}.messages
                 WHERE queue = ANY(%(queues)s::text[]) AND not_before <= now()
                 ORDER BY queue, not_before LIMIT 1000 FOR UPDATE SKIP LOCKED)
    RETURNING 1
), reclaimed AS (
    UPDATE {schema}.messages
    SET lease_token = NULL, lease_owner = NULL, lease_expires = NULL,
        lost_count = lost_count + 1
    WHERE id IN (SELECT id FROM {schema}.messages
                 WHERE queue = ANY(%(queues)s::text[]) AND lease_token IS NOT NULL
                   AND lease_expires < now()
                 ORDER BY queue, lease_expires LIMIT 1000 FOR UPDATE SKIP LOCKED)
    RETURNING 1
), picked AS (
    SELECT p.id FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority FROM {schema}.messages
        WHERE queue = q.name AND lease_token IS NULL AND not_before IS NULL
        ORDER BY priority, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS p
    ORDER BY p.priority, p.id LIMIT %(limit)s
), leased AS (
    UPDATE {schema}.messages m
    SET lease_token = gen_random_uuid(), lease_owner = %(owner)s,
        lease_expires = now() + make_interval(secs => %(lease_seconds)s),
        delivery_count = m.delivery_count + 1,
        first_delivered_at = COALESCE(m.first_delivered_at, now())
    FROM picked WHERE m.id = picked.id
    RETURNING m.id, m.queue, m.priority, m.envelope, m.lease_token, m.delivery_count,
              m.lost_count, m.lease_expires, m.published_at
)
SELECT id, queue, priority, envelope, lease_token::text, delivery_count, lost_count,
       extract(epoch FROM lease_expires)::float8, extract(epoch FROM published_at)::float8
FROM leased
UNION ALL
SELECT NULL, set_config('synchronous_commit', 'off', true), NULL, NULL, NULL,
       (SELECT count(*) FROM acked)::integer,
       ((SELECT count(*) FROM promoted) + (SELECT count(*) FROM reclaimed))::integer, NULL,
       NULL;

-- name: next_due
SELECT extract(epoch FROM LEAST(
    (SELECT min(d.t) FROM unnest(%(queues)s::text[]) AS q(name) CROSS JOIN LATERAL (
        SELECT not_before AS t FROM {schema}.messages
        WHERE queue = q.name AND not_before IS NOT NULL
        ORDER BY not_before LIMIT 1) AS d),
    (SELECT min(l.t) FROM unnest(%(queues)s::text[]) AS q(name) CROSS JOIN LATERAL (
        SELECT lease_expires AS t FROM {schema}.messages
        WHERE queue = q.name AND lease_token IS NOT NULL
        ORDER BY lease_expires LIMIT 1) AS l)))::float8,
    extract(epoch FROM now())::float8;

-- name: ack
WITH acked AS (
    DELETE FROM {schema}.messages m
    USING unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS a(id, token)
    WHERE m.id = a.id AND m.lease_token = a.token
    RETURNING 1
)
SELECT count(*)::integer, set_config('synchronous_commit', 'off', true) FROM acked;

-- name: renew
WITH renewed AS (
    UPDATE {schema}.messages m
    SET lease_expires = now() + make_interval(secs => %(seconds)s)
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS a(id, token)
    WHERE m.id = a.id AND m.lease_token = a.token
    RETURNING m.id, m.lease_token
)
SELECT id, lease_token::text, set_config('synchronous_commit', 'off', true) FROM renewed
UNION ALL SELECT NULL, NULL, set_config('synchronous_commit', 'off', true);

-- name: release
WITH released AS (
    UPDATE {schema}.messages
    SET lease_token = NULL, lease_owner = NULL, lease_expires = NULL,
        not_before = CASE WHEN %(not_before)s::float8 IS NULL THEN NULL
                          ELSE to_timestamp(%(not_before)s::float8) END,
        lost_count = lost_count + CASE WHEN %(failed)s::boolean THEN 1 ELSE 0 END
    WHERE id = %(id)s AND lease_token = %(token)s::uuid
    RETURNING queue
)
SELECT pg_notify({schema}.channel('q', queue), ''),
       set_config('synchronous_commit', 'off', true)
FROM released;

-- name: dead_letter
WITH moved AS (
    DELETE FROM {schema}.messages WHERE id = %(id)s AND lease_token = %(token)s::uuid
    RETURNING queue, priority, envelope, task_id, task_name, delivery_count, lost_count,
              first_delivered_at, published_at
)
INSERT INTO {schema}.dead_letters (queue, priority, reason, envelope, task_id, task_name,
                                   delivery_count, lost_count, first_delivered_at,
                                   published_at)
SELECT queue, priority, %(reason)s, envelope, task_id, task_name, delivery_count, lost_count,
       first_delivered_at, published_at
FROM moved;

-- name: dead_letter_message
WITH named AS (
    INSERT INTO {schema}.queues (name) VALUES (%(queue)s) ON CONFLICT DO NOTHING
)
INSERT INTO {schema}.dead_letters (queue, priority, reason, envelope, task_id, task_name,
                                   delivery_count, lost_count, first_delivered_at,
                                   published_at)
VALUES (%(queue)s, %(priority)s, %(reason)s, %(envelope)s, %(task_id)s, %(task_name)s, 0, 0,
        NULL, now())
RETURNING id;

-- name: expire_owner
WITH expired AS (
    UPDATE {schema}.messages SET lease_expires = '-infinity'
    WHERE lease_owner = %(owner)s AND lease_token IS NOT NULL AND lease_expires >= now()
    RETURNING queue
), notified AS (
    SELECT pg_notify({schema}.channel('q', queue), '') FROM (SELECT DISTINCT queue FROM expired) AS e
)
SELECT (SELECT count(*) FROM expired)::integer, (SELECT count(*) FROM notified)::integer;

-- name: take_token
SELECT {schema}.take_token(%(key)s, %(rate)s, %(capacity)s);

-- name: purge
DELETE FROM {schema}.messages
WHERE queue = %(queue)s AND (lease_token IS NULL OR lease_expires < now());

-- name: stats
SELECT
    count(*) FILTER (WHERE not_before IS NULL AND (lease_token IS NULL OR lease_expires < now()))
      + count(*) FILTER (WHERE not_before <= now()),
    count(*) FILTER (WHERE not_before > now()),
    count(*) FILTER (WHERE lease_token IS NOT NULL AND lease_expires >= now()),
    (SELECT count(*) FROM {schema}.dead_letters WHERE queue = %(queue)s),
    extract(epoch FROM min(COALESCE(not_before, published_at)) FILTER (
        WHERE (not_before IS NULL AND (lease_token IS NULL OR lease_expires < now()))
           OR not_before <= now()))::float8
FROM {schema}.messages WHERE queue = %(queue)s;

-- name: delayed
SELECT extract(epoch FROM not_before)::float8, envelope FROM {schema}.messages
WHERE queue = %(queue)s AND not_before > now()
ORDER BY not_before, id LIMIT %(limit)s;

-- name: queues
SELECT name FROM {schema}.queues ORDER BY name;

-- name: dead_letters
SELECT id, queue, reason, envelope, delivery_count, lost_count,
       extract(epoch FROM first_delivered_at)::float8, extract(epoch FROM dead_at)::float8
FROM {schema}.dead_letters
WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
ORDER BY id LIMIT %(limit)s;

-- name: retry_dead_letter
WITH taken AS (
    DELETE FROM {schema}.dead_letters WHERE id = %(id)s
    RETURNING queue, priority, envelope, task_id, task_name
), inserted AS (
    INSERT INTO {schema}.messages (queue, priority, envelope, task_id, task_name)
    SELECT queue, priority, envelope, task_id, task_name FROM taken
    RETURNING queue
)
SELECT pg_notify({schema}.channel('q', queue), '') FROM inserted;

-- name: purge_dead_letters
DELETE FROM {schema}.dead_letters WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text;

-- name: result_get
SELECT value FROM {schema}.results
WHERE key = %(key)s AND (expires_at IS NULL OR expires_at > now());

-- name: result_get_many
SELECT key, value FROM {schema}.results
WHERE key = ANY(%(keys)s::text[]) AND (expires_at IS NULL OR expires_at > now());

-- name: result_set
WITH stored AS (
    INSERT INTO {schema}.results (key, value, expires_at)
    VALUES (%(key)s, %(value)s, now() + make_interval(secs => %(expires)s::float8))
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
)
SELECT pg_notify({schema}.channel('r', %(key)s), ''),
       CASE WHEN %(fast)s::boolean THEN set_config('synchronous_commit', 'off', true) END;

-- name: result_write
WITH given AS (
    SELECT k, v, g FROM unnest(%(keys)s::text[], %(values)s::text[], %(guards)s::boolean[])
        AS r(k, v, g)
), stored AS (
    INSERT INTO {schema}.results AS old (key, value, expires_at)
    SELECT k, v, now() + make_interval(secs => %(expires)s::float8) FROM given
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
    WHERE NOT ((SELECT g FROM given WHERE k = excluded.key)
               AND (old.expires_at IS NULL OR old.expires_at > now())
               AND {schema}.meta_status(old.value) IS NOT DISTINCT FROM 'REVOKED')
    RETURNING key
)
SELECT key, pg_notify({schema}.channel('r', key), ''),
       CASE WHEN %(fast)s::boolean THEN set_config('synchronous_commit', 'off', true) END
FROM stored;

-- name: result_delete
DELETE FROM {schema}.results WHERE key = %(key)s;

-- name: chord_add
WITH part AS (
    INSERT INTO {schema}.chord_parts (group_id, idx, value, expires_at)
    VALUES (%(group_id)s, %(idx)s, %(value)s, now() + make_interval(secs => %(expires)s::float8))
    ON CONFLICT DO NOTHING
    RETURNING group_id
)
INSERT INTO {schema}.chords (group_id, parts, expires_at)
SELECT group_id, 1, now() + make_interval(secs => %(expires)s::float8) FROM part
ON CONFLICT (group_id) DO UPDATE SET parts = {schema}.chords.parts + 1
RETURNING parts;

-- name: chord_parts
SELECT value FROM {schema}.chord_parts WHERE group_id = %(group_id)s ORDER BY idx;

-- name: chord_clear
WITH parts AS (DELETE FROM {schema}.chord_parts WHERE group_id = %(group_id)s)
DELETE FROM {schema}.chords WHERE group_id = %(group_id)s;

-- name: result_cleanup
WITH r AS (DELETE FROM {schema}.results WHERE expires_at <= now() RETURNING 1),
     p AS (DELETE FROM {schema}.chord_parts WHERE expires_at <= now() RETURNING 1),
     c AS (DELETE FROM {schema}.chords WHERE expires_at <= now() RETURNING 1)
SELECT ((SELECT count(*) FROM r) + (SELECT count(*) FROM p) + (SELECT count(*) FROM c))::integer;

-- name: beat_list_entries
SELECT name, definition, enabled, version, anchor_us, last_run_us, dropped_us,
       total_run_count, source, code_hash
FROM {schema}.beat_entries ORDER BY name;

-- name: beat_get_entry
SELECT name, definition, enabled, version, anchor_us, last_run_us, dropped_us,
       total_run_count, source, code_hash
FROM {schema}.beat_entries WHERE name = %(name)s;

-- name: beat_generation
SELECT value FROM {schema}.beat_meta WHERE key = 'generation';

-- name: beat_bump
INSERT INTO {schema}.beat_meta (key, value) VALUES ('generation', '1')
ON CONFLICT (key) DO UPDATE SET value = ({schema}.beat_meta.value::bigint + 1)::text;

-- name: beat_insert_entry
INSERT INTO {schema}.beat_entries (name, definition, enabled, version, anchor_us, source,
                                   code_hash)
VALUES (%(name)s, %(definition)s, %(enabled)s, %(version)s, %(anchor_us)s, %(source)s,
        %(code_hash)s)
ON CONFLICT DO NOTHING;

-- name: beat_update_entry
UPDATE {schema}.beat_entries
SET definition = %(definition)s, enabled = %(enabled)s, version = %(version)s,
    anchor_us = %(anchor_us)s, source = %(source)s, code_hash = %(code_hash)s
WHERE name = %(name)s AND version = %(expected)s;

-- name: beat_delete_entry
DELETE FROM {schema}.beat_entries WHERE name = %(name)s;

-- name: beat_claim
WITH entry AS (
    SELECT name FROM {schema}.beat_entries
    WHERE name = %(entry)s AND enabled AND version = %(version)s
      AND GREATEST(anchor_us, COALESCE(last_run_us, anchor_us),
                   COALESCE(dropped_us, anchor_us)) < %(fire_us)s
    FOR UPDATE
), claimed AS (
    INSERT INTO {schema}.beat_fires (entry, fire_us, task_id, payload, owner, claimed_us,
                                     state, manual)
    SELECT name, %(fire_us)s, %(task_id)s, %(payload)s, %(owner)s, %(claimed_us)s,
           %(state)s, false
    FROM entry
    ON CONFLICT DO NOTHING
    RETURNING entry
)
UPDATE {schema}.beat_entries e
SET total_run_count = e.total_run_count + 1, last_run_us = %(fire_us)s
FROM claimed WHERE e.name = claimed.entry;

-- name: beat_claim_manual
WITH entry AS (
    SELECT name FROM {schema}.beat_entries WHERE name = %(entry)s FOR UPDATE
), claimed AS (
    INSERT INTO {schema}.beat_fires (entry, fire_us, task_id, payload, owner, claimed_us,
                                     state, manual)
    SELECT name, %(fire_us)s, %(task_id)s, %(payload)s, %(owner)s, %(claimed_us)s,
           %(state)s, true
    FROM entry
    ON CONFLICT DO NOTHING
    RETURNING entry
)
UPDATE {schema}.beat_entries e SET total_run_count = e.total_run_count + 1
FROM claimed WHERE e.name = claimed.entry;

-- name: beat_drop_through
UPDATE {schema}.beat_entries SET dropped_us = %(instant_us)s
WHERE name = %(name)s AND version = %(version)s
  AND GREATEST(anchor_us, COALESCE(last_run_us, anchor_us),
               COALESCE(dropped_us, anchor_us)) < %(instant_us)s;

-- name: beat_mark_sent
UPDATE {schema}.beat_fires SET state = 'sent', sent_us = %(sent_us)s
WHERE entry = %(entry)s AND fire_us = %(fire_us)s;

-- name: beat_stale_claims
SELECT entry, fire_us, task_id, payload, owner, claimed_us, state, sent_us, manual
FROM {schema}.beat_fires WHERE state = 'claimed' AND claimed_us < %(before_us)s
ORDER BY fire_us;

-- name: beat_take_over
UPDATE {schema}.beat_fires SET owner = %(owner)s, claimed_us = %(now_us)s
WHERE entry = %(entry)s AND fire_us = %(fire_us)s AND state = 'claimed'
  AND claimed_us = %(claimed_us)s AND claimed_us < %(before_us)s;

-- name: beat_list_fires
SELECT entry, fire_us, task_id, payload, owner, claimed_us, state, sent_us, manual
FROM {schema}.beat_fires WHERE %(entry)s::text IS NULL OR entry = %(entry)s::text
ORDER BY fire_us, entry;

-- name: beat_prune_fires
DELETE FROM {schema}.beat_fires WHERE state = 'sent' AND fire_us < %(before_us)s;

-- name: beat_acquire_lease
INSERT INTO {schema}.beat_meta (key, value, expires_us) VALUES ('lease', %(owner)s, %(expires_us)s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_us = excluded.expires_us
WHERE {schema}.beat_meta.value = excluded.value OR {schema}.beat_meta.expires_us <= %(now_us)s;

-- name: beat_release_lease
DELETE FROM {schema}.beat_meta WHERE key = 'lease' AND value = %(owner)s;

-- name: beat_lease_holder
SELECT value FROM {schema}.beat_meta WHERE key = 'lease' AND expires_us > %(now_us)s;

-- name: table_health
SELECT n_live_tup, n_dead_tup, pg_total_relation_size(relid),
       extract(epoch FROM GREATEST(last_vacuum, last_autovacuum))::float8,
       current_setting('autovacuum')
FROM pg_stat_user_tables WHERE schemaname = %(schema)s AND relname = 'messages';

-- name: slot_lock
SELECT pg_advisory_xact_lock(hashtext('celeriac:{schema}.slots:' || %(name)s));

-- name: slot_acquire
WITH live AS (
    SELECT s.token FROM {schema}.slots s
    JOIN {schema}.messages m ON m.id = s.message_id AND m.lease_token = s.token
                             AND m.lease_expires >= now()
    WHERE s.name = %(name)s
), pruned AS (
    DELETE FROM {schema}.slots s
    WHERE s.name = %(name)s AND s.token NOT IN (SELECT token FROM live)
), candidate AS (
    SELECT m.id FROM {schema}.messages m
    WHERE m.id = %(id)s AND m.lease_token = %(token)s::uuid AND m.lease_expires >= now()
      AND NOT EXISTS (SELECT 1 FROM live WHERE live.token = %(token)s::uuid)
      AND (SELECT count(*) FROM live) < %(limit)s
), inserted AS (
    INSERT INTO {schema}.slots (name, message_id, token, task_id)
    SELECT %(name)s, id, %(token)s::uuid, %(task_id)s FROM candidate
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT ((SELECT count(*) FROM inserted)
        + (SELECT count(*) FROM live WHERE token = %(token)s::uuid))::integer;

-- name: slot_release
DELETE FROM {schema}.slots WHERE name = %(name)s AND token = %(token)s::uuid;

-- name: slot_holders
SELECT s.name, s.message_id, s.task_id, m.lease_owner, extract(epoch FROM m.lease_expires)::float8
FROM {schema}.slots s
JOIN {schema}.messages m ON m.id = s.message_id AND m.lease_token = s.token
                         AND m.lease_expires >= now()
WHERE %(name)s::text IS NULL OR s.name = %(name)s
ORDER BY s.name, s.message_id;

-- name: unique_claim
WITH claimed AS (
    INSERT INTO {schema}.unique_claims AS u (key, value, expires_at)
    VALUES (%(key)s, %(value)s, now() + make_interval(secs => %(seconds)s))
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
    WHERE u.expires_at <= now()
    RETURNING 1
)
SELECT (SELECT count(*) FROM claimed)::integer,
       (SELECT value FROM {schema}.unique_claims WHERE key = %(key)s AND expires_at > now());

-- name: unique_release
DELETE FROM {schema}.unique_claims
WHERE key = %(key)s AND value = %(value)s AND expires_at > now();
