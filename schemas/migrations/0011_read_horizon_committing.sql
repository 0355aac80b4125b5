-- The read horizon passed over a transaction that was running at the
-- statement's snapshot and committed while the lock table was read: at
-- commit PostgreSQL first ends the transaction in the process array, then
-- releases its locks one by one in no set order, so for a moment an
-- appender can hold its transaction-id lock but no longer the log's lock
-- and look like a bystander. The horizon then rose above events the
-- statement's snapshot cannot see, and a reader's cursor moved past them
-- for good (found by the kill -9 tests under load: events never
-- projected).
--
-- Now the lock table is read first (one statement), and a transaction
-- counts as a bystander only if it still holds its id's lock, does not
-- hold the log's lock, and is still in progress after that read: a
-- committing appender has left the process array before it releases any
-- lock, so it is never taken for a bystander.
CREATE OR REPLACE FUNCTION tollgate_read_horizon(lock_key bigint) RETURNS xid8 LANGUAGE plpgsql STABLE AS $$
DECLARE
    s pg_snapshot := pg_current_snapshot();
    bystanders xid[];
BEGIN
    IF pg_snapshot_xmin(s) = pg_snapshot_xmax(s) THEN
        RETURN pg_snapshot_xmax(s);
    END IF;
    -- one pass over the lock table: the log's appender locks in this
    -- database, and every transaction's lock on its own id
    WITH l AS (
        SELECT virtualtransaction, locktype, transactionid FROM pg_locks
        WHERE granted AND (
            (locktype = 'advisory' AND classid = (lock_key >> 32)::oid
             AND objid = (lock_key & 4294967295)::oid AND objsubid = 1
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
            OR (locktype = 'transactionid' AND mode = 'ExclusiveLock'))
    )
    SELECT coalesce(array_agg(t.transactionid), '{}') INTO bystanders FROM l t
    WHERE t.locktype = 'transactionid' AND NOT EXISTS (
        SELECT 1 FROM l a WHERE a.locktype = 'advisory' AND a.virtualtransaction = t.virtualtransaction);
    RETURN coalesce((
        -- pg_locks' ids are 32 bits; the running set's low 32 bits are unique
        SELECT min(x) FROM pg_snapshot_xip(s) AS x
        WHERE NOT (((x::text::bigint % 4294967296)::text)::xid = ANY (bystanders)
                   AND pg_xact_status(x) = 'in progress')
    ), pg_snapshot_xmax(s));
END $$;
