package projections

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
)

// liveBus delivers the log to a Set the way a bus partitioned by account
// does: each account's events in the global order, accounts interleaved at
// random, with redeliveries (a consumer restarting a few messages back)
// and, now and then, several messages in one batch.
type liveBus struct {
	t    *testing.T
	set  *Set
	rng  *rand.Rand
	next map[string]int
}

func (b *liveBus) deliver(all []events.Envelope) {
	b.t.Helper()
	ctx := context.Background()
	byAccount := map[string][]events.Envelope{}
	var accounts []string
	for _, e := range all {
		a := e.Metadata.AccountID
		if _, ok := byAccount[a]; !ok {
			accounts = append(accounts, a)
		}
		byAccount[a] = append(byAccount[a], e)
	}
	for {
		var pending []string
		for _, a := range accounts {
			if b.next[a] < len(byAccount[a]) {
				pending = append(pending, a)
			}
		}
		if len(pending) == 0 {
			return
		}
		a := pending[b.rng.IntN(len(pending))]
		if b.rng.IntN(12) == 0 {
			b.next[a] = max(0, b.next[a]-1-b.rng.IntN(4))
		}
		evs := byAccount[a][b.next[a]:]
		n := 1
		if b.rng.IntN(8) == 0 {
			n = min(len(evs), 1+b.rng.IntN(5))
		}
		var err error
		if n == 1 {
			err = b.set.Handle(ctx, evs[0])
		} else {
			err = b.set.HandleBatch(ctx, evs[:n])
		}
		if err != nil {
			b.t.Fatalf("deliver %s v%d: %v", evs[0].StreamID, evs[0].StreamVersion, err)
		}
		b.next[a] += n
	}
}

func TestLiveEqualsRebuild(t *testing.T) {
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	rng := rand.New(rand.NewPCG(7, 11))
	bus := &liveBus{t: t, set: newSet(t, pool, LiveSchema), rng: rng, next: map[string]int{}}

	accounts := []string{"acc_1", "acc_2", "acc_3", "acc_4", "acc_5"}
	models := []string{"small", "large", "mini"}
	for _, a := range accounts {
		l.Append(events.StreamAccount+a, a, day0, events.AccountCreated{AccountID: a, Name: a, Email: a + "@x", Plan: "pro"},
			events.BillingCustomerLinked{AccountID: a, StripeCustomerID: "cus_" + a})
		for k := range 2 {
			key := fmt.Sprintf("key_%s_%d", a, k)
			l.Append(events.StreamAPIKey+key, a, day0, events.APIKeyIssued{KeyID: key, AccountID: a, Name: key, KeyHash: key, KeyPrefix: "tg_"})
		}
	}
	seq := 0
	lateIn := func(r BillingRecord) {
		seq++
		at := r.WindowStart.Add(time.Duration(rng.Int64N(int64(time.Hour - 3*time.Second))))
		l.Complete(fmt.Sprintf("late%d", seq), r.AccountID, "key_"+r.AccountID+"_0", "small", 1+rng.Int64N(50), 1+rng.Int64N(50), rng.Int64N(10_000), at)
	}
	for day := range 3 {
		// Completions of the day, their lifecycle steps interleaved.
		type run struct {
			id, account, key, model string
			at                      time.Time
			step, outcome           int
		}
		var runs []*run
		for range 60 {
			seq++
			a := accounts[rng.IntN(len(accounts))]
			runs = append(runs, &run{
				id: fmt.Sprintf("c%d", seq), account: a, key: fmt.Sprintf("key_%s_%d", a, rng.IntN(2)), model: models[rng.IntN(len(models))],
				at:      day0.Add(time.Duration(day)*24*time.Hour + time.Duration(rng.Int64N(int64(23*time.Hour)))),
				outcome: rng.IntN(10),
			})
		}
		for len(runs) > 0 {
			i := rng.IntN(len(runs))
			r := runs[i]
			switch r.step {
			case 0:
				l.Requested(r.id, r.account, r.key, r.model, r.at)
			case 1:
				l.Started(r.id, r.account, r.at.Add(time.Second))
			case 2:
				if r.outcome == 0 {
					l.Failed(r.id, r.account, r.key, r.model, r.at.Add(2*time.Second))
				} else {
					l.Succeeded(r.id, r.account, r.key, r.model, rng.Int64N(2000), rng.Int64N(500), rng.Int64N(1_000_000), r.at.Add(2*time.Second))
				}
			}
			r.step++
			// Some stay queued (outcome 9) or running (outcome 8).
			if r.step == 3 || (r.outcome == 9 && r.step == 1) || (r.outcome == 8 && r.step == 2) {
				runs = append(runs[:i], runs[i+1:]...)
			}
		}
		bus.deliver(l.Stored())

		// The reporter: closes what is due (some after usage arrived late,
		// so the close splits), reports most of it, and late usage lands
		// in windows already closed.
		now := day0.Add(time.Duration(day+1) * 24 * time.Hour)
		due, err := DueBillingRecords(ctx, pool, LiveSchema, now, 10*time.Minute, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range due {
			if r.Status == RecordOpen {
				if i%3 == 0 {
					lateIn(r)
				}
				closed(l, r, r.Quantity, now.Add(time.Duration(i)*time.Second))
			}
			if i%4 != 1 {
				reported(l, r, r.Quantity, now.Add(time.Duration(i)*time.Second+time.Millisecond))
			}
			if i%5 == 2 {
				lateIn(r)
			}
		}
		bus.deliver(l.Stored())
	}

	// The scenario did exercise what it is meant to.
	var splits, reported, closed, failed, queued int
	if err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM billing_records WHERE seq > 0),
		(SELECT count(*) FROM billing_records WHERE status = 'reported'),
		(SELECT count(*) FROM billing_records WHERE status = 'closed'),
		(SELECT count(*) FROM jobs WHERE status = 'failed'),
		(SELECT count(*) FROM jobs WHERE status = 'queued')`).Scan(&splits, &reported, &closed, &failed, &queued); err != nil {
		t.Fatal(err)
	}
	if splits == 0 || reported == 0 || closed == 0 || failed == 0 || queued == 0 {
		t.Fatalf("scenario too tame: %d later records, %d reported, %d closed, %d failed, %d queued", splits, reported, closed, failed, queued)
	}
	var billed, ledger int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT sum(quantity) FROM billing_records),
		(SELECT sum(prompt_tokens + completion_tokens) FROM usage_ledger WHERE prompt_tokens + completion_tokens > 0)`).Scan(&billed, &ledger); err != nil {
		t.Fatal(err)
	}
	if billed != ledger {
		t.Errorf("billed %d tokens, ledger has %d", billed, ledger)
	}

	// Twice: the second replaces the first, in batches that cut streams.
	for _, batch := range []int{1000, 7} {
		stats, err := Rebuild(ctx, pool, l.Store, "rebuild", batch, buildAll, nil)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Events != int64(len(l.All)) || stats.Cursor.Position != l.All[len(l.All)-1].Position {
			t.Errorf("rebuild read %d events up to %d; want %d up to %d", stats.Events, stats.Cursor.Position, len(l.All), l.All[len(l.All)-1].Position)
		}
		diffs, err := Compare(ctx, pool, LiveSchema, "rebuild")
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) != 0 {
			t.Errorf("live and rebuild (batch %d) differ:\n%s", batch, strings.Join(diffs, "\n"))
		}
	}
	t.Logf("%d events: %d later records, %d reported, %d closed, %d failed, %d queued", len(l.All), splits, reported, closed, failed, queued)

	// Compare does see a difference.
	if _, err := pool.Exec(ctx, `UPDATE rebuild.jobs SET status = 'lost' WHERE completion_id = 'c1'`); err != nil {
		t.Fatal(err)
	}
	diffs, err := Compare(ctx, pool, LiveSchema, "rebuild")
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 2 || !strings.HasPrefix(diffs[0], "jobs: 1 rows in public not in rebuild") || !strings.Contains(diffs[1], "lost") {
		t.Errorf("diffs = %q; want the changed job both ways", diffs)
	}
	if _, err := Rebuild(ctx, pool, l.Store, LiveSchema, 100, buildAll, nil); err == nil {
		t.Error("rebuild into the live schema: no error")
	}
}

// BenchmarkRebuild measures a rebuild of a log of 5000 completions (about
// 15000 events) in batches of 1000.
func BenchmarkRebuild(b *testing.B) {
	ctx := context.Background()
	pool, _ := pgtest.NewPool(b)
	l := newLog(b, pool)
	appendCompletions(b, l, pool, 5000)
	var events int64
	var elapsed time.Duration
	for b.Loop() {
		stats, err := Rebuild(ctx, pool, l.Store, "rebuild", 1000, buildAll, nil)
		if err != nil {
			b.Fatal(err)
		}
		events += stats.Events
		elapsed += stats.Elapsed
	}
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
}

func appendCompletions(b *testing.B, l *evlog, _ *pgxpool.Pool, n int) {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		a := fmt.Sprintf("acc_%d", rng.IntN(50))
		key, model := a+"_key", []string{"small", "large"}[rng.IntN(2)]
		at := day0.Add(time.Duration(rng.Int64N(int64(30 * 24 * time.Hour))))
		id := fmt.Sprintf("c%d", i)
		if i%10 == 0 {
			l.Requested(id, a, key, model, at)
			l.Failed(id, a, key, model, at.Add(time.Second))
			continue
		}
		prompt, completion := rng.Int64N(2000), rng.Int64N(500)
		l.Append(events.StreamCompletion+id, a, at,
			events.CompletionRequested{CompletionID: id, AccountID: a, KeyID: key, Model: model, Mode: events.ModeSync, Request: []byte(`{}`)},
			events.CompletionStarted{CompletionID: id, Executor: "api:bench", LeaseExpiresAt: at.Add(time.Minute)},
			events.CompletionSucceeded{CompletionID: id, AccountID: a, KeyID: key, Model: model, Provider: "echo", UpstreamModel: model,
				Usage:       events.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
				CostNanoUSD: rng.Int64N(1_000_000), Response: []byte(`{"id":"x","choices":[{"message":{"content":"hello"}}]}`)})
	}
	l.Stored() // every event readable before the clock starts
	l.All = nil
}
