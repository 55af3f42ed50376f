-- Per-key usage summed over every proxy of the fleet: each adds the counts it served since its
-- last flush (an UPSERT that adds), so `keygate keys show` can report fleet-wide use. Written
-- off the request path, in batches; a proxy's role needs INSERT and UPDATE on this table only.
CREATE TABLE {schema}.key_usage (
    key_id        text PRIMARY KEY,
    last_used_at  timestamptz,
    requests_1xx  bigint NOT NULL DEFAULT 0,
    requests_2xx  bigint NOT NULL DEFAULT 0,
    requests_3xx  bigint NOT NULL DEFAULT 0,
    requests_4xx  bigint NOT NULL DEFAULT 0,
    requests_5xx  bigint NOT NULL DEFAULT 0,
    -- 429s (counted in requests_4xx too).
    rate_limited  bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
