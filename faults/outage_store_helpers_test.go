package faults

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// outageLedger is what the store and the read models hold for an account.
type outageLedger struct {
	requested, outcomes, succeeded int
	abandoned, requeued            int
	multiOutcome, unfinished       []string
	ledgerRows, rollupRequests     int64
}

func readLedger(ctx context.Context, pool *pgxpool.Pool, account string) (outageLedger, map[string]int, error) {
	var l outageLedger
	rows, err := pool.Query(ctx, `SELECT stream_id, type FROM events WHERE account_id = $1 AND stream_id LIKE 'completion-%'`, account)
	if err != nil {
		return l, nil, err
	}
	outcomes := map[string]int{}
	succeeded := map[string]int{}
	requested := map[string]bool{}
	for rows.Next() {
		var stream, typ string
		if err := rows.Scan(&stream, &typ); err != nil {
			return l, nil, err
		}
		id := strings.TrimPrefix(stream, "completion-")
		switch typ {
		case "completion.requested":
			requested[id] = true
		case "completion.succeeded":
			succeeded[id]++
			outcomes[id]++
		case "completion.failed":
			outcomes[id]++
		case "completion.abandoned":
			outcomes[id]++
			l.abandoned++
		case "completion.requeued":
			l.requeued++
		}
	}
	if err := rows.Err(); err != nil {
		return l, nil, err
	}
	l.requested = len(requested)
	for id := range requested {
		switch n := outcomes[id]; {
		case n == 0:
			l.unfinished = append(l.unfinished, id)
		case n > 1:
			l.multiOutcome = append(l.multiOutcome, id)
		}
		l.outcomes += min(outcomes[id], 1)
	}
	l.succeeded = len(succeeded)
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_ledger WHERE account_id = $1`, account).Scan(&l.ledgerRows); err != nil {
		return l, nil, err
	}
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(requests), 0)::bigint FROM usage_rollups WHERE account_id = $1`, account).Scan(&l.rollupRequests); err != nil {
		return l, nil, err
	}
	return l, succeeded, nil
}

// drainQueued waits (bounded) until every job of res answered 202 has an
// outcome in the store. The outage test calls it between its two
// PostgreSQL outages: without it the pause began about a second after the
// restarted database answered again, and a worker that was recording a
// job's outcome when the database stopped, retrying with a backoff that
// reaches 2s, could miss that second altogether (it read at 49.957, just
// before the restart ended, and next at 51.957, after the pause began at
// 51.108) and meet the pause: for it the database was away from the stop
// to the resume, 3s + the gap + 8s, longer than the 12s lease, so the
// reaper abandoned the job when PostgreSQL resumed, as abandon says (about
// one run in two on a busy machine). The lease is sized for one outage
// (outageLease); the product makes no promise for a database that is back
// for less than the executor's backoff between two outages.
func (e *outageEnv) drainQueued(t *testing.T, account string, res []outageResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool := e.storePool(ctx, t)
	queued := map[string]bool{}
	for _, r := range res {
		if r.status == http.StatusAccepted {
			queued[r.id] = true
		}
	}
	start, most := time.Now(), 0
	for {
		l, _, err := readLedger(ctx, pool, account)
		pending := 0
		for _, id := range l.unfinished {
			if queued[id] {
				pending++
			}
		}
		most = max(most, pending)
		if err == nil && pending == 0 {
			t.Logf("after the PostgreSQL stop: %d queued jobs were still to be recorded, all recorded within %s", most, time.Since(start).Round(time.Millisecond))
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%d queued jobs still without an outcome after the PostgreSQL stop: %v", pending, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// storePool opens a pool on the test's database, closed with the test.
func (e *outageEnv) storePool(ctx context.Context, t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// settle waits until every requested completion of the account has an
// outcome (the reaper ends those whose executor lost the database) and
// the projections caught up, then checks that every 200 the load got is
// one success, recorded once, in the ledger once, and so is every 202 (the
// worker pool runs it once the database is back). It returns the figures
// (lost: a 200 without exactly one success; duplicated: a completion with
// two outcomes or a ledger that disagrees).
func (e *outageEnv) settle(t *testing.T, account string, res []outageResult) (lost, duplicated int, l outageLedger) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pool := e.storePool(ctx, t)
	var succeeded map[string]int
	var err error
	for {
		l, succeeded, err = readLedger(ctx, pool, account)
		if err == nil && len(l.unfinished) == 0 && l.ledgerRows == int64(l.succeeded) && l.rollupRequests == int64(l.succeeded) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the store did not settle: %+v (%d unfinished) %v", l, len(l.unfinished), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, r := range res {
		if (r.status == http.StatusOK || r.status == http.StatusAccepted) && succeeded[r.id] != 1 {
			lost++
			var types []string
			rows, err := pool.Query(ctx, `SELECT to_char(recorded_at, 'HH24:MI:SS.MS ') || type || coalesce(' ' || (data->>'reason'), '') || coalesce(' ' || (data->>'error_message'), '') FROM events WHERE stream_id = $1 ORDER BY stream_version`, "completion-"+r.id)
			if err == nil {
				for rows.Next() {
					var s string
					_ = rows.Scan(&s)
					types = append(types, s)
				}
				rows.Close()
			}
			t.Logf("lost: %d %s sent %s, answered after %s: events %v", r.status, r.id, r.at.Format("15:04:05.000"), r.done.Sub(r.at), types)
			for _, rec := range e.log.naming(r.id) {
				t.Logf("lost %s: log %s %s %s %s", r.id, rec.at.Format("15:04:05.000"), rec.level, rec.msg, rec.attrs)
			}
		}
	}
	duplicated = len(l.multiOutcome)
	for _, n := range succeeded {
		duplicated += n - 1
	}
	return lost, duplicated, l
}
