package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
)

// Job statuses in the jobs read model.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
)

// jobs keeps the jobs table: the status of every completion request.
type jobs struct {
	requested, started, succeeded, failed string
}

// NewJobs returns the projector of the jobs table in schema.
func NewJobs(schema string) Projector {
	t := table(schema, "jobs")
	return &jobs{
		// DO NOTHING: a request recorded twice must not reset a job that
		// has moved on.
		requested: fmt.Sprintf(`INSERT INTO %s (completion_id, account_id, key_id, model, mode, status, requested_at)
			VALUES ($1, $2, $3, $4, $5, '`+JobQueued+`', $6) ON CONFLICT (completion_id) DO NOTHING`, t),
		started:   fmt.Sprintf(`UPDATE %s SET status = '`+JobRunning+`', started_at = $2 WHERE completion_id = $1`, t),
		succeeded: fmt.Sprintf(`UPDATE %s SET status = '`+JobSucceeded+`', finished_at = $2 WHERE completion_id = $1`, t),
		failed: fmt.Sprintf(`UPDATE %s SET status = '`+JobFailed+`', finished_at = $2, error_type = $3, error_message = $4
			WHERE completion_id = $1`, t),
	}
}

// Name implements Projector.
func (p *jobs) Name() string { return "jobs" }

// Apply implements Projector.
func (p *jobs) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	return applyQueued(ctx, tx, p, p.Name(), e)
}

func (p *jobs) queue(b *pgx.Batch, e events.Envelope, d events.Data) error {
	at := e.OccurredAt.UTC()
	switch d := d.(type) {
	case events.CompletionRequested:
		b.Queue(p.requested, d.CompletionID, d.AccountID, d.KeyID, d.Model, d.Mode, at)
	case events.CompletionStarted:
		b.Queue(p.started, d.CompletionID, at)
	case events.CompletionSucceeded:
		b.Queue(p.succeeded, d.CompletionID, at)
	case events.CompletionFailed:
		b.Queue(p.failed, d.CompletionID, at, d.ErrorType, d.ErrorMessage)
	}
	return nil
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

// ListJobs returns an account's most recent jobs in the live model, newest
// first; at most limit of them (100 when limit is not positive).
func ListJobs(ctx context.Context, q Querier, accountID string, limit int) ([]Job, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT completion_id, account_id, key_id, model, mode, status,
			requested_at, started_at, finished_at, coalesce(error_type, ''), coalesce(error_message, '')
		FROM %s WHERE account_id = $1 ORDER BY requested_at DESC, completion_id DESC LIMIT $2`, table(LiveSchema, "jobs")),
		accountID, limit)
	if err != nil {
		return nil, fmt.Errorf("jobs of %s: %w", accountID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Job, error) {
		var j Job
		err := r.Scan(&j.CompletionID, &j.AccountID, &j.KeyID, &j.Model, &j.Mode, &j.Status,
			&j.RequestedAt, &j.StartedAt, &j.FinishedAt, &j.ErrorType, &j.ErrorMessage)
		j.RequestedAt = j.RequestedAt.UTC()
		j.StartedAt, j.FinishedAt = utcPtr(j.StartedAt), utcPtr(j.FinishedAt)
		return j, err
	})
	if err != nil {
		return nil, fmt.Errorf("jobs of %s: %w", accountID, err)
	}
	return out, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
