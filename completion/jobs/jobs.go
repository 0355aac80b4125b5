// Package jobs is the read model of completions as jobs: one row per
// completion with its mode, status, claim and lease, outcome and callback
// state (jobs), kept from the event log by a projector the server wires
// into the read models' Set, and the queries over it: an account's jobs,
// the claims whose lease expired (for the reaper) and the callbacks still
// to send (for the dispatcher).
package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate/tollgate/projections"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/events"
)

// Job statuses in the jobs read model.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobAbandoned = "abandoned"
)

// Callback states in the jobs read model (NULL: none, or not sent yet).
const (
	CallbackDelivered = "delivered"
	CallbackFailed    = "failed"
)

// jobs keeps the jobs table: the status of every completion request. A
// job is a fold of its completion's stream, so a batch of events is folded
// per job in Go, in event order, and written with two set-based statements.
type jobs struct {
	insert, update string
}

// New returns the projector of the jobs table in schema.
func New(schema string) projections.Projector {
	t := projections.Table(schema, "jobs")
	return &jobs{
		// DO NOTHING: a request recorded twice must not reset a job that
		// has moved on.
		insert: fmt.Sprintf(`INSERT INTO %s (completion_id, account_id, key_id, model, mode, status, requested_at,
				started_at, finished_at, error_type, error_message, executor, lease_expires_at, callback_url, callback_status)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
				$8::timestamptz[], $9::timestamptz[], $10::bytea[], $11::bytea[], $12::text[], $13::timestamptz[], $14::text[], $15::text[])
			ON CONFLICT (completion_id) DO NOTHING`, t),
		// A requeue (u.requeued) clears the dead claim: its start, executor
		// and lease become what the batch says, NULL unless a retry's
		// claim followed in the same batch.
		update: fmt.Sprintf(`UPDATE %s AS j SET status = coalesce(u.status, j.status),
				started_at = CASE WHEN u.requeued THEN u.started_at ELSE coalesce(u.started_at, j.started_at) END,
				finished_at = coalesce(u.finished_at, j.finished_at),
				error_type = coalesce(u.error_type, j.error_type), error_message = coalesce(u.error_message, j.error_message),
				executor = CASE WHEN u.requeued THEN u.executor ELSE coalesce(u.executor, j.executor) END,
				lease_expires_at = CASE WHEN u.requeued THEN u.lease_expires_at ELSE coalesce(u.lease_expires_at, j.lease_expires_at) END,
				callback_status = coalesce(u.callback_status, j.callback_status)
			FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bytea[], $6::bytea[],
				$7::text[], $8::timestamptz[], $9::text[], $10::bool[])
				AS u(completion_id, status, started_at, finished_at, error_type, error_message, executor, lease_expires_at, callback_status, requeued)
			WHERE j.completion_id = u.completion_id`, t),
	}
}

// Name implements Projector.
func (p *jobs) Name() string { return "jobs" }

// Apply implements Projector.
func (p *jobs) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	return projections.ApplyPending(ctx, tx, p, p.Name(), e)
}

// Handles implements projections.Selective: the types jobChanges.Add reads.
func (p *jobs) Handles(t string) bool {
	switch t {
	case events.TypeCompletionRequested, events.TypeCompletionStarted, events.TypeCompletionSucceeded,
		events.TypeCompletionLeaseRenewed, events.TypeCompletionFailed, events.TypeCompletionAbandoned,
		events.TypeCompletionRequeued, events.TypeCompletionCallbackDelivered, events.TypeCompletionCallbackFailed:
		return true
	}
	return false
}

func (p *jobs) Pending() projections.Pending { return &jobChanges{p: p, byID: map[string]*jobChange{}} }

// jobChange is what one transaction's events did to a job.
type jobChange struct {
	requested                 bool
	account, key, model, mode string
	status                    string
	requestedAt               time.Time
	startedAt, finishedAt     *time.Time
	// errorType and errorMessage are a provider's words as UTF-8 bytes
	// (bytea columns: a NUL is kept); nil leaves the column as it is.
	errorType, errorMessage []byte
	executor                *string
	leaseExpiresAt          *time.Time
	callbackURL             *string
	// callbackStatus is set by the callback's outcome, which leaves status
	// empty: the job's status then stays what it was.
	callbackStatus *string
	// requeued: the job went back to the queue in this batch, so its
	// start, executor and lease are replaced, NULLs included.
	requeued bool
}

// jobChanges folds one transaction's events per job, in event order.
type jobChanges struct {
	p     *jobs
	order []string
	byID  map[string]*jobChange
}

func (c *jobChanges) get(id string) *jobChange {
	j, ok := c.byID[id]
	if !ok {
		j = &jobChange{}
		c.byID[id] = j
		c.order = append(c.order, id)
	}
	return j
}

func (c *jobChanges) Add(e events.Envelope, d events.Data) error {
	at := e.OccurredAt.UTC()
	switch d := d.(type) {
	case events.CompletionRequested:
		j := c.get(d.CompletionID)
		j.requested, j.account, j.key, j.model, j.mode = true, d.AccountID, d.KeyID, d.Model, d.Mode
		j.status, j.requestedAt = JobQueued, at
		if _, cb := completion.SplitCallbackURL(d.Request); cb != "" {
			j.callbackURL = &cb
		}
	case events.CompletionStarted:
		j := c.get(d.CompletionID)
		lease := d.LeaseExpiresAt.UTC()
		j.status, j.startedAt, j.executor, j.leaseExpiresAt = JobRunning, &at, &d.Executor, &lease
	case events.CompletionSucceeded:
		j := c.get(d.CompletionID)
		j.status, j.finishedAt = JobSucceeded, &at
	case events.CompletionLeaseRenewed:
		j := c.get(d.CompletionID)
		lease := d.LeaseExpiresAt.UTC()
		j.leaseExpiresAt = &lease
	case events.CompletionFailed:
		j := c.get(d.CompletionID)
		j.status, j.finishedAt, j.errorType, j.errorMessage = JobFailed, &at, []byte(d.ErrorType), []byte(d.ErrorMessage)
	case events.CompletionAbandoned:
		j := c.get(d.CompletionID)
		j.status, j.finishedAt = JobAbandoned, &at
	case events.CompletionRequeued:
		j := c.get(d.CompletionID)
		j.status, j.startedAt, j.executor, j.leaseExpiresAt, j.requeued = JobQueued, nil, nil, nil, true
	case events.CompletionCallbackDelivered:
		j, s := c.get(d.CompletionID), CallbackDelivered
		j.callbackStatus = &s
	case events.CompletionCallbackFailed:
		j, s := c.get(d.CompletionID), CallbackFailed
		j.callbackStatus = &s
	}
	return nil
}

func (c *jobChanges) Flush(b *pgx.Batch) {
	var ins, upd struct {
		id, account, key, model, mode, status []string
		requestedAt                           []time.Time
		startedAt, finishedAt                 []*time.Time
		errorType, errorMessage               [][]byte
		executor, callbackURL, callbackStatus []*string
		leaseExpiresAt                        []*time.Time
	}
	var updStatus []*string
	var updRequeued []bool
	for _, id := range c.order {
		j := c.byID[id]
		if j.requested {
			ins.id, ins.account, ins.key, ins.model = append(ins.id, id), append(ins.account, j.account), append(ins.key, j.key), append(ins.model, j.model)
			ins.mode, ins.status, ins.requestedAt = append(ins.mode, j.mode), append(ins.status, j.status), append(ins.requestedAt, j.requestedAt)
			ins.startedAt, ins.finishedAt = append(ins.startedAt, j.startedAt), append(ins.finishedAt, j.finishedAt)
			ins.errorType, ins.errorMessage = append(ins.errorType, j.errorType), append(ins.errorMessage, j.errorMessage)
			ins.executor, ins.leaseExpiresAt = append(ins.executor, j.executor), append(ins.leaseExpiresAt, j.leaseExpiresAt)
			ins.callbackURL, ins.callbackStatus = append(ins.callbackURL, j.callbackURL), append(ins.callbackStatus, j.callbackStatus)
			continue
		}
		var status *string
		if j.status != "" {
			status = &j.status
		}
		upd.id, updStatus = append(upd.id, id), append(updStatus, status)
		upd.startedAt, upd.finishedAt = append(upd.startedAt, j.startedAt), append(upd.finishedAt, j.finishedAt)
		upd.errorType, upd.errorMessage = append(upd.errorType, j.errorType), append(upd.errorMessage, j.errorMessage)
		upd.executor, upd.leaseExpiresAt = append(upd.executor, j.executor), append(upd.leaseExpiresAt, j.leaseExpiresAt)
		upd.callbackStatus = append(upd.callbackStatus, j.callbackStatus)
		updRequeued = append(updRequeued, j.requeued)
	}
	if len(ins.id) > 0 {
		b.Queue(c.p.insert, ins.id, ins.account, ins.key, ins.model, ins.mode, ins.status, ins.requestedAt,
			ins.startedAt, ins.finishedAt, ins.errorType, ins.errorMessage, ins.executor, ins.leaseExpiresAt, ins.callbackURL, ins.callbackStatus)
	}
	if len(upd.id) > 0 {
		b.Queue(c.p.update, upd.id, updStatus, upd.startedAt, upd.finishedAt, upd.errorType, upd.errorMessage,
			upd.executor, upd.leaseExpiresAt, upd.callbackStatus, updRequeued)
	}
}

// Job is one completion request's status.
type Job struct {
	CompletionID string
	AccountID    string
	KeyID        string
	Model        string
	Mode         string
	Status       string
	RequestedAt  time.Time
	StartedAt    *time.Time
	FinishedAt   *time.Time
	ErrorType    string
	ErrorMessage string
}

// List returns an account's most recent jobs in the live model, newest
// first; at most limit of them (100 when limit is not positive).
func List(ctx context.Context, q projections.Querier, accountID string, limit int) ([]Job, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT completion_id, account_id, key_id, model, mode, status,
			requested_at, started_at, finished_at, coalesce(error_type, ''::bytea), coalesce(error_message, ''::bytea)
		FROM %s WHERE account_id = $1 ORDER BY requested_at DESC, completion_id DESC LIMIT $2`, projections.Table(projections.LiveSchema, "jobs")),
		accountID, limit)
	if err != nil {
		return nil, fmt.Errorf("jobs of %s: %w", accountID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Job, error) {
		var j Job
		var errType, errMessage []byte
		err := r.Scan(&j.CompletionID, &j.AccountID, &j.KeyID, &j.Model, &j.Mode, &j.Status,
			&j.RequestedAt, &j.StartedAt, &j.FinishedAt, &errType, &errMessage)
		j.ErrorType, j.ErrorMessage = string(errType), string(errMessage)
		j.RequestedAt = j.RequestedAt.UTC()
		j.StartedAt, j.FinishedAt = projections.UTC(j.StartedAt), projections.UTC(j.FinishedAt)
		return j, err
	})
	if err != nil {
		return nil, fmt.Errorf("jobs of %s: %w", accountID, err)
	}
	return out, nil
}

// ExpiredLeases returns the ids of running jobs in the live model whose
// claim's lease ended at or before now, oldest first; at most limit. It is
// where the reaper looks: the jobs' streams have the final say. A requeued
// job is queued, without a lease, until a retry claims it.
func ExpiredLeases(ctx context.Context, q projections.Querier, now time.Time, limit int) ([]string, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT completion_id FROM %s
		WHERE status = 'running' AND lease_expires_at <= $1 ORDER BY lease_expires_at, completion_id LIMIT $2`,
		projections.Table(projections.LiveSchema, "jobs")), now, limit)
	if err != nil {
		return nil, fmt.Errorf("expired leases: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("expired leases: %w", err)
	}
	return ids, nil
}

// PendingCallbacks returns the ids of finished jobs in the live model that
// have a callback URL and no callback outcome yet, longest finished first;
// at most limit.
func PendingCallbacks(ctx context.Context, q projections.Querier, limit int) ([]string, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT completion_id FROM %s
		WHERE callback_url IS NOT NULL AND callback_status IS NULL AND finished_at IS NOT NULL
		ORDER BY finished_at, completion_id LIMIT $1`, projections.Table(projections.LiveSchema, "jobs")), limit)
	if err != nil {
		return nil, fmt.Errorf("pending callbacks: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("pending callbacks: %w", err)
	}
	return ids, nil
}
