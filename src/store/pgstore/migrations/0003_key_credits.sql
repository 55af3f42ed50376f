-- A key's credits (balance, revision, top-up total, refill) and its calendar quotas, as the same
-- JSON objects the file table writes under `credits:` and `quota:`. This is the configuration a
-- key's counter starts from; the live remaining is kept by the limiter (Redis for a fleet).
-- usage_counter: the key whose counter a rotated key keeps spending.
ALTER TABLE {schema}.keys ADD COLUMN credits jsonb, ADD COLUMN quota jsonb, ADD COLUMN usage_counter text;
