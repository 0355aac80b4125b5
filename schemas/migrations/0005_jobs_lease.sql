-- Jobs: the claim's lease, so the reaper finds the requests whose executor
-- died, and the result callback's state, so the dispatcher finds the
-- finished jobs whose callback is still to be sent. Both are projected from
-- events (event times only), so a rebuild gives the same rows.
ALTER TABLE jobs
    ADD COLUMN executor          text,
    ADD COLUMN lease_expires_at  timestamptz,
    ADD COLUMN callback_url      text,
    ADD COLUMN callback_status   text;  -- NULL (pending or none), delivered, failed

CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_callback_pending ON jobs (finished_at)
    WHERE callback_url IS NOT NULL AND callback_status IS NULL AND finished_at IS NOT NULL;

-- Which callback dispatcher is sending a job's result, until when. This is
-- operational state, not a read model: it only keeps two dispatchers from
-- sending the same callback at the same time. It is never rebuilt.
CREATE TABLE callback_leases (
    completion_id  text        PRIMARY KEY,
    holder         text        NOT NULL,
    until          timestamptz NOT NULL
);
