-- The global order readers follow: (transaction_id, position) read below a
-- horizon computed from this database's own appenders, not the whole
-- server's oldest transaction. See the README, "The global order and its
-- read horizon".
--
-- Every transaction that appends to a log (the events table, lock key
-- 0x746f6c6c2d617070 "toll-app"; the PostgreSQL bus's message tables,
-- 0x746f6c6c2d627573 "toll-bus") takes a shared advisory lock on the log's
-- key before it has a transaction id, so that for as long as it runs it is
-- listed in pg_locks as an appender. A reader reads only below the oldest
-- transaction that may still append: other databases' transactions,
-- read-only ones and the read models' writers never hold it back.

-- tollgate_register_appender registers the calling transaction as an
-- appender of the log lock_key. A transaction that already has an id and
-- is not registered is refused: for a moment readers would not have known
-- it as an appender, and could have read past it.
CREATE FUNCTION tollgate_register_appender(lock_key bigint) RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('tollgate.appender_' || lock_key, true) IS DISTINCT FROM 'on' THEN
        IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
            RAISE EXCEPTION 'a log must be appended to before any other write of a transaction'
                USING HINT = 'append in a transaction of its own, or first';
        END IF;
        PERFORM pg_advisory_xact_lock_shared(lock_key);
        PERFORM set_config('tollgate.appender_' || lock_key, 'on', true);
    END IF;
END $$;

CREATE FUNCTION events_register_appender() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tollgate_register_appender(8390043842688151664); -- 0x746f6c6c2d617070
    RETURN NULL;
END $$;

-- A statement trigger fires before the statement's first row, so before
-- the transaction_id default (or a sequence's nextval, which may log and
-- so take an id) gives the transaction its id.
CREATE TRIGGER events_register_appender BEFORE INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_register_appender();

-- The bus's message tables are made by watermill-sql, one per topic; the
-- bus adds this statement trigger to each when it creates it (bus/horizon.go).
CREATE FUNCTION bus_register_appender() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tollgate_register_appender(8390043842688218483); -- 0x746f6c6c2d627573
    RETURN NULL;
END $$;

-- tollgate_read_horizon returns, for the calling statement's snapshot, the
-- oldest transaction id below which every row of the log lock_key that
-- will ever commit is visible to that statement: the oldest transaction
-- of the snapshot's running set that may still append. A running
-- transaction that holds an id but not the log's lock never will (it
-- would be refused), so it is passed over; one that has ended since the
-- snapshot was taken blocks this statement only (its commit is not in
-- the snapshot). With nothing running below xmax anywhere on the server,
-- the lock table is not read at all.
--
-- STABLE: it sees the calling statement's snapshot, so
-- `WHERE transaction_id < (SELECT tollgate_read_horizon(k))` is one safe
-- statement. plpgsql: its plans are cached per session.
CREATE FUNCTION tollgate_read_horizon(lock_key bigint) RETURNS xid8 LANGUAGE plpgsql STABLE AS $$
DECLARE
    s pg_snapshot := pg_current_snapshot();
BEGIN
    IF pg_snapshot_xmin(s) = pg_snapshot_xmax(s) THEN
        RETURN pg_snapshot_xmax(s);
    END IF;
    RETURN coalesce((
        WITH l AS (
            -- one pass over the lock table: the log's appender locks in
            -- this database, and every transaction's lock on its own id
            SELECT virtualtransaction, locktype, transactionid FROM pg_locks
            WHERE granted AND (
                (locktype = 'advisory' AND classid = (lock_key >> 32)::oid
                 AND objid = (lock_key & 4294967295)::oid AND objsubid = 1
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
                OR (locktype = 'transactionid' AND mode = 'ExclusiveLock'))
        ),
        bystanders AS (
            SELECT t.transactionid FROM l t
            WHERE t.locktype = 'transactionid' AND NOT EXISTS (
                SELECT 1 FROM l a WHERE a.locktype = 'advisory' AND a.virtualtransaction = t.virtualtransaction)
        )
        -- pg_locks' ids are 32 bits; the running set's low 32 bits are unique
        SELECT min(x) FROM pg_snapshot_xip(s) AS x
        WHERE ((x::text::bigint % 4294967296)::text)::xid NOT IN (SELECT transactionid FROM bystanders)
    ), pg_snapshot_xmax(s));
END $$;

-- Event data is kept as the exact JSON text appended (json, not jsonb):
-- jsonb refuses \u0000, which providers and clients may send, and a
-- fact is stored as it was said. json's ->> fails on a document that
-- holds \u0000 anywhere, so every query (and index) that reads a field of
-- data filters by a type whose data Tollgate writes itself first.
ALTER TABLE events ALTER COLUMN data TYPE json USING data::json;
