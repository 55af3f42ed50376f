-- The key table, one row per key with the file table's fields (the SHA-256 hash, never the
-- key), and the lifecycle audit trail. `{schema}` is replaced by the configured schema name.
CREATE SEQUENCE {schema}.key_version AS bigint;

CREATE TABLE {schema}.keys (
    id            text PRIMARY KEY,
    hash          text NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$'),
    label         text NOT NULL DEFAULT '',
    environment   text NOT NULL CHECK (environment IN ('live', 'test')),
    key_type      text,
    scopes        text[],
    clinics       text[],
    allowed_ips   text[] NOT NULL DEFAULT '{}',
    rate_limit    text,
    created_at    timestamptz,
    expires_at    timestamptz,
    not_before    timestamptz,
    revoked_at    timestamptz,
    revoke_reason text,
    rotated_from  text,
    rotated_to    text,
    updated_at    timestamptz,
    -- Set from key_version by every write; a replica fetches the rows above its own version.
    version       bigint NOT NULL
);
CREATE INDEX keys_version_idx ON {schema}.keys (version);

CREATE TABLE {schema}.key_events (
    seq      bigserial PRIMARY KEY,
    key_id   text NOT NULL,
    event    text NOT NULL CHECK (event IN ('created', 'updated', 'rotated', 'revoked')),
    -- Who ran the command (KEYGATE_ACTOR, else the OS user), and as which database role.
    actor    text NOT NULL,
    db_user  text NOT NULL DEFAULT session_user,
    at       timestamptz NOT NULL DEFAULT now(),
    reason   text,
    version  bigint NOT NULL
);
CREATE INDEX key_events_key_idx ON {schema}.key_events (key_id, seq);

-- The audit trail is append-only, whoever connects.
CREATE FUNCTION {schema}.key_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'key_events is append-only';
END
$$;
CREATE TRIGGER key_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.key_events
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.key_events_append_only();
