-- Jobs: a failed job's error type and message can be a provider's own
-- words, which may hold characters a text column refuses (NUL, \u0000 in
-- the event's JSON). They are kept as their UTF-8 bytes, exactly as the
-- event has them (bytea compares by equality, so a rebuild still compares
-- row for row with the live model). The other text columns hold
-- Tollgate's own values: ids, configured names, statuses.
ALTER TABLE jobs
    ALTER COLUMN error_type    TYPE bytea USING convert_to(error_type, 'UTF8'),
    ALTER COLUMN error_message TYPE bytea USING convert_to(error_message, 'UTF8');
