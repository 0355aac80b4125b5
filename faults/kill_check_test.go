package faults

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/stripetest"
)

// killCompletion is what the event log says of one completion.
type killCompletion struct {
	mode                          string
	succeeded, failed, abandoned  int
	requeued, renewals            int
	succeededTokens, ledgerTokens int64
	ledgerRows                    int
	job                           string // status in the jobs read model
}

func (c killCompletion) outcomes() int { return c.succeeded + c.failed + c.abandoned }

// outcome is the job status the one outcome implies ("" unless exactly one).
func (c killCompletion) outcome() string {
	switch {
	case c.outcomes() != 1:
		return ""
	case c.succeeded == 1:
		return jobs.JobSucceeded
	case c.failed == 1:
		return jobs.JobFailed
	default:
		return jobs.JobAbandoned
	}
}

// killState is one account's completions, read models and billing.
type killState struct {
	completions map[string]*killCompletion
	ledgerByWin map[time.Time]int64 // tokens per billing window (ledger)
	recordByWin map[time.Time]int64 // billing_records quantity per window
	reportByWin map[time.Time]int64 // billing.usage_reported quantity per window
	unreported  int                 // billing records not reported yet
	reports     map[string]int      // usage_reported events per record
	recordWin   map[string]time.Time
	recordQty   map[string]int64
}

// killReadState reads account's state from the event log and read models.
func killReadState(ctx context.Context, pool *pgxpool.Pool, account string, window time.Duration) (*killState, error) {
	s := &killState{completions: map[string]*killCompletion{}, ledgerByWin: map[time.Time]int64{}, recordByWin: map[time.Time]int64{},
		reportByWin: map[time.Time]int64{}, reports: map[string]int{}, recordWin: map[string]time.Time{}, recordQty: map[string]int64{}}
	get := func(id string) *killCompletion {
		c := s.completions[id]
		if c == nil {
			c = &killCompletion{}
			s.completions[id] = c
		}
		return c
	}
	rows, err := pool.Query(ctx, `SELECT substr(stream_id, length('completion-') + 1), type, coalesce(data->>'mode', ''),
			coalesce((data->'usage'->>'total_tokens')::bigint, 0)
		FROM events WHERE account_id = $1 AND stream_id LIKE 'completion-%' AND type = ANY($2)`,
		account, []string{events.TypeCompletionRequested, events.TypeCompletionSucceeded, events.TypeCompletionFailed,
			events.TypeCompletionAbandoned, events.TypeCompletionRequeued, events.TypeCompletionLeaseRenewed})
	if err != nil {
		return nil, fmt.Errorf("completion events: %w", err)
	}
	var id, typ, mode string
	var tokens int64
	_, err = pgx.ForEachRow(rows, []any{&id, &typ, &mode, &tokens}, func() error {
		c := get(id)
		switch typ {
		case events.TypeCompletionRequested:
			c.mode = mode
		case events.TypeCompletionSucceeded:
			c.succeeded++
			c.succeededTokens += tokens
		case events.TypeCompletionFailed:
			c.failed++
		case events.TypeCompletionAbandoned:
			c.abandoned++
		case events.TypeCompletionRequeued:
			c.requeued++
		case events.TypeCompletionLeaseRenewed:
			c.renewals++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("completion events: %w", err)
	}
	var at time.Time
	rows, _ = pool.Query(ctx, `SELECT completion_id, prompt_tokens + completion_tokens, occurred_at FROM usage_ledger WHERE account_id = $1`, account)
	if _, err := pgx.ForEachRow(rows, []any{&id, &tokens, &at}, func() error {
		c := get(id)
		c.ledgerRows++
		c.ledgerTokens += tokens
		s.ledgerByWin[at.UTC().Truncate(window)] += tokens
		return nil
	}); err != nil {
		return nil, fmt.Errorf("usage ledger: %w", err)
	}
	var status string
	rows, _ = pool.Query(ctx, `SELECT completion_id, status FROM jobs WHERE account_id = $1`, account)
	if _, err := pgx.ForEachRow(rows, []any{&id, &status}, func() error { get(id).job = status; return nil }); err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	rows, _ = pool.Query(ctx, `SELECT record_id, window_start, quantity, status FROM billing_records WHERE account_id = $1`, account)
	if _, err := pgx.ForEachRow(rows, []any{&id, &at, &tokens, &status}, func() error {
		s.recordByWin[at.UTC()] += tokens
		s.recordWin[id], s.recordQty[id] = at.UTC(), tokens
		if status != billing.StatusReported {
			s.unreported++
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("billing records: %w", err)
	}
	rows, _ = pool.Query(ctx, `SELECT data->>'record_id', (data->>'quantity')::bigint FROM events
		WHERE type = $1 AND data->>'account_id' = $2`, events.TypeBillingUsageReported, account)
	if _, err := pgx.ForEachRow(rows, []any{&id, &tokens}, func() error {
		s.reports[id]++
		if w, ok := s.recordWin[id]; ok {
			s.reportByWin[w] += tokens
		} else {
			s.reportByWin[time.Time{}] += tokens // a report of no known record
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("usage reported: %w", err)
	}
	return s, nil
}

// quiet returns why the account's state is not settled yet, or nil.
func (s *killState) quiet() error {
	var errs []error
	pending, unprojected := 0, 0
	for _, c := range s.completions {
		if c.outcomes() == 0 {
			pending++
		}
		if c.ledgerRows != c.succeeded || !isFinishedJob(c.job) {
			unprojected++
		}
	}
	if pending > 0 {
		errs = append(errs, fmt.Errorf("%d completions without an outcome", pending))
	}
	if unprojected > 0 {
		errs = append(errs, fmt.Errorf("%d completions not projected (ledger or jobs)", unprojected))
	}
	if s.unreported > 0 {
		errs = append(errs, fmt.Errorf("%d billing records not reported", s.unreported))
	}
	if l, r, p := sumWin(s.ledgerByWin), sumWin(s.recordByWin), sumWin(s.reportByWin); l != r || r != p {
		errs = append(errs, fmt.Errorf("ledger %d, billing records %d, reported %d tokens", l, r, p))
	}
	return errors.Join(errs...)
}

func isFinishedJob(status string) bool {
	return status == jobs.JobSucceeded || status == jobs.JobFailed || status == jobs.JobAbandoned
}

func sumWin(m map[time.Time]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// killWaitQuiet polls the account's state until it settles or the deadline.
func killWaitQuiet(ctx context.Context, pool *pgxpool.Pool, account string, window, limit time.Duration) (*killState, error) {
	deadline := time.Now().Add(limit)
	for {
		s, err := killReadState(ctx, pool, account, window)
		if err == nil {
			if err = s.quiet(); err == nil {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("not settled within %s: %w", limit, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// killFigures are one scenario's counts.
type killFigures struct {
	Role string
	// Tried requests; OK the answers that reached the client whole (sync
	// 200, stream to [DONE], 202 job that succeeded); Held those with
	// exactly one success and one ledger row; Lost those without;
	// Duplicated completions with more than one outcome or ledger row.
	Tried, OK, Held, Lost, Duplicated int
	// Refused: no HTTP answer or an error status; Cut: streams that began
	// with 200 and broke off; Abandoned, Failed, Requeued: completions so
	// ended or retried; Kills: SIGKILLs sent.
	Refused, Cut, Abandoned, Failed, Requeued, Kills int
	// Renewed: completions whose lease was renewed (slow ones).
	Renewed int
	// Unanswered: completions that succeeded (and were billed) whose
	// answer no client received whole (the API died before sending it).
	Unanswered int
	// Down is the mean time from SIGKILL to healthy again.
	Down time.Duration
	// Statuses counts the answers that were not whole by HTTP status (0:
	// no answer).
	Statuses map[int]int
}

func (f killFigures) String() string {
	return fmt.Sprintf("%-8s tried %4d  ok %4d  held %4d  lost %d  duplicated %d | no answer/error %3d  cut streams %2d  succeeded unanswered %2d  abandoned %2d  failed %2d  requeued %2d  renewed %2d | kills %d, down %s each",
		f.Role, f.Tried, f.OK, f.Held, f.Lost, f.Duplicated, f.Refused, f.Cut, f.Unanswered, f.Abandoned, f.Failed, f.Requeued, f.Renewed, f.Kills, f.Down.Round(10*time.Millisecond)) +
		fmt.Sprintf(" | not whole by status %v", f.Statuses)
}

// killJudge checks what the clients saw against the account's settled
// state and returns the figures and every broken guarantee.
func killJudge(role string, res []killResult, s *killState) (killFigures, []string) {
	f := killFigures{Role: role, Tried: len(res), Statuses: map[int]int{}}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	answered := map[string]bool{}
	for _, r := range res {
		if r.complete && (r.status == 200 || r.status == 202) {
			answered[r.id] = true
		}
		switch {
		case r.status == 200 && r.complete, r.status == 202 && r.complete:
		case r.status == 200 && r.mode == killStream:
			f.Cut++
		default:
			f.Refused++
			f.Statuses[r.status]++
			if r.status >= 500 {
				bad("%s answered %d: %s", r.mode, r.status, r.err)
			}
			continue
		}
		c := s.completions[r.id]
		if c == nil {
			f.Lost++
			bad("%s %d %s: no completion in the event log", r.mode, r.status, r.id)
			continue
		}
		delivered := r.status == 200 && r.complete
		if r.status == 202 {
			delivered = c.succeeded > 0 // the job reached succeeded
		}
		if !delivered {
			continue
		}
		f.OK++
		switch {
		case c.succeeded == 1 && c.outcomes() == 1 && c.ledgerRows == 1 && c.ledgerTokens == c.succeededTokens:
			f.Held++
		case c.succeeded > 1 || c.ledgerRows > 1:
			f.Duplicated++
			bad("%s %s answered %d: %d successes, %d ledger rows", r.mode, r.id, r.status, c.succeeded, c.ledgerRows)
		default:
			f.Lost++
			bad("%s %s answered %d: %d successes, %d failures, %d abandonments, %d ledger rows (%d tokens, succeeded %d)",
				r.mode, r.id, r.status, c.succeeded, c.failed, c.abandoned, c.ledgerRows, c.ledgerTokens, c.succeededTokens)
		}
	}
	ids := make([]string, 0, len(s.completions))
	for id := range s.completions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := s.completions[id]
		f.Abandoned += c.abandoned
		f.Failed += c.failed
		f.Requeued += c.requeued
		if c.renewals > 0 {
			f.Renewed++
		}
		if c.outcomes() > 1 || c.ledgerRows > 1 {
			f.Duplicated++
			bad("completion %s (%s): %d successes, %d failures, %d abandonments, %d ledger rows", id, c.mode, c.succeeded, c.failed, c.abandoned, c.ledgerRows)
		}
		if c.succeeded > 0 && !answered[id] {
			f.Unanswered++
		}
		if c.outcomes() == 0 {
			f.Lost++
			bad("completion %s (%s) never ended (job %q)", id, c.mode, c.job)
		}
		if c.ledgerRows != c.succeeded {
			bad("completion %s: %d successes but %d ledger rows", id, c.succeeded, c.ledgerRows)
		}
		if want := c.outcome(); want != "" && c.job != want {
			bad("completion %s ended %s, the jobs read model says %q", id, want, c.job)
		}
	}
	problems = append(problems, s.billingProblems()...)
	return f, problems
}

// billingProblems compares ledger, billing records and reports per window.
func (s *killState) billingProblems() []string {
	var out []string
	wins := map[time.Time]bool{}
	for _, m := range []map[time.Time]int64{s.ledgerByWin, s.recordByWin, s.reportByWin} {
		for w := range m {
			wins[w] = true
		}
	}
	for w := range wins {
		if l, r, p := s.ledgerByWin[w], s.recordByWin[w], s.reportByWin[w]; l != r || r != p {
			out = append(out, fmt.Sprintf("window %s: ledger %d, billing records %d, reported %d tokens", w.Format(time.RFC3339), l, r, p))
		}
	}
	for id, n := range s.reports {
		if n > 1 {
			out = append(out, fmt.Sprintf("billing record %s reported %d times", id, n))
		}
	}
	return out
}

// stripeProblems checks the meter events Stripe received for customer:
// every identifier always with the same value (Stripe deduplicates by
// identifier, so a re-send is harmless only then), and the distinct
// identifiers' sum equal to the reported total.
func (s *killState) stripeProblems(rec *stripetest.Recorder, customer string) (sends, distinct int, problems []string) {
	values := map[string]string{}
	var sum int64
	for _, r := range rec.RequestsTo("POST", "/v1/billing/meter_events") {
		if r.Form.Get("payload[stripe_customer_id]") != customer || r.Status/100 != 2 {
			continue
		}
		sends++
		id, v := r.Form.Get("identifier"), r.Form.Get("payload[value]")
		if old, ok := values[id]; ok {
			if old != v {
				problems = append(problems, fmt.Sprintf("meter event %s sent with value %s and %s", id, old, v))
			}
			continue
		}
		values[id] = v
		var n int64
		if _, err := fmt.Sscan(v, &n); err != nil {
			problems = append(problems, fmt.Sprintf("meter event %s value %q: %v", id, v, err))
		}
		sum += n
		if _, ok := s.recordQty[id]; !ok {
			problems = append(problems, fmt.Sprintf("meter event %s names no billing record of the account", id))
		}
	}
	if rep := sumWin(s.reportByWin); sum != rep {
		problems = append(problems, fmt.Sprintf("Stripe received %d tokens in %d distinct meter events, the log reports %d", sum, len(values), rep))
	}
	return sends, len(values), problems
}

// killSummary joins problems for a failure message, at most n of them.
func killSummary(problems []string, n int) string {
	if len(problems) > n {
		return strings.Join(problems[:n], "\n") + fmt.Sprintf("\n… and %d more", len(problems)-n)
	}
	return strings.Join(problems, "\n")
}

// killDiagnose describes completions the read models missed: their events
// in the global order, and every follower's checkpoint.
func killDiagnose(ctx context.Context, pool *pgxpool.Pool, s *killState) string {
	var ids []string
	for id, c := range s.completions {
		if c.ledgerRows != c.succeeded || (c.outcome() != "" && c.job != c.outcome()) {
			ids = append(ids, "completion-"+id)
		}
	}
	if len(ids) == 0 {
		return ""
	}
	var b strings.Builder
	rows, _ := pool.Query(ctx, `SELECT stream_id, stream_version, type, transaction_id::text, position, recorded_at FROM events
		WHERE stream_id = ANY($1) ORDER BY transaction_id, position`, ids)
	var stream, typ, tx string
	var version, pos int64
	var at time.Time
	_, err := pgx.ForEachRow(rows, []any{&stream, &version, &typ, &tx, &pos, &at}, func() error {
		fmt.Fprintf(&b, "  %s v%d %s tx %s pos %d recorded %s\n", stream, version, typ, tx, pos, at.UTC().Format("15:04:05.000000"))
		return nil
	})
	if err != nil {
		fmt.Fprintf(&b, "  events: %v\n", err)
	}
	rows, _ = pool.Query(ctx, `SELECT name, transaction_id::text, position, updated_at FROM checkpoints ORDER BY name`)
	_, err = pgx.ForEachRow(rows, []any{&stream, &tx, &pos, &at}, func() error {
		fmt.Fprintf(&b, "  checkpoint %s: tx %s pos %d at %s\n", stream, tx, pos, at.UTC().Format("15:04:05.000000"))
		return nil
	})
	if err != nil {
		fmt.Fprintf(&b, "  checkpoints: %v\n", err)
	}
	return b.String()
}
