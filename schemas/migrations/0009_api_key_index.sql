-- The API key index: which key a secret's hash belongs to. It is a read
-- model kept in the append's own transaction (an inline projection,
-- account/keyindex), so a key authenticates the moment it is issued;
-- authentication no longer reads event JSON.
CREATE TABLE api_key_index (
    key_hash   text PRIMARY KEY,
    key_id     text NOT NULL UNIQUE,
    account_id text NOT NULL
);

-- Keys issued before this migration. The type is tested first, so the
-- JSON of other events (which may hold \u0000) is never read.
INSERT INTO api_key_index (key_hash, key_id, account_id)
SELECT data ->> 'key_hash', data ->> 'key_id', data ->> 'account_id'
FROM events WHERE type = 'apikey.issued'
ORDER BY transaction_id, position
ON CONFLICT DO NOTHING;

DROP INDEX IF EXISTS events_apikey_hash;
