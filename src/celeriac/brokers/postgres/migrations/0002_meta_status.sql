-- celeriac schema version 2: the REVOKED rule of the result store.
-- meta_status(value) is the "status" of a stored result meta, or NULL when the text is
-- not a JSON object (a malformed row never blocks a write); result_write uses it to
-- refuse a task meta over a live REVOKED one in the same statement that writes.

CREATE FUNCTION {schema}.meta_status(value text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN value::jsonb ->> 'status';
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
