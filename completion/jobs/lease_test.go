package jobs_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/projections"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/pgtest"
)

// A renewed lease moves the job's lease_expires_at, so the reaper does not
// look at a claim whose holder is still at work; in one batch with the
// request and the claim too; a rebuild gives the same rows.
func TestJobsLeaseRenewed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	l := newLog(t, pool)
	set := newSet(t, pool, projections.LiveSchema)
	at := day0.Add(9 * time.Hour)
	renew := func(id string, n int, until time.Time) events.CompletionLeaseRenewed {
		return events.CompletionLeaseRenewed{CompletionID: id, Executor: "worker:test", LeaseExpiresAt: until, Renewal: n}
	}
	// a: event by event; b: all in one batch.
	l.Requested("a", "acc_1", "key_1", "m", at)
	l.Started("a", "acc_1", at) // lease until at+1m
	l.Append(events.StreamCompletion+"a", "acc_1", at.Add(20*time.Second), renew("a", 1, at.Add(80*time.Second)))
	l.Append(events.StreamCompletion+"a", "acc_1", at.Add(40*time.Second), renew("a", 2, at.Add(100*time.Second)))
	handleAll(t, set, l.All...)
	n := len(l.All)
	l.Requested("b", "acc_1", "key_1", "m", at)
	l.Started("b", "acc_1", at)
	l.Append(events.StreamCompletion+"b", "acc_1", at.Add(20*time.Second), renew("b", 1, at.Add(5*time.Minute)))
	if err := set.HandleBatch(ctx, l.All[n:]); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		now  time.Time
		want []string
	}{
		{at.Add(61 * time.Second), nil},
		{at.Add(100 * time.Second), []string{"a"}},
		{at.Add(5 * time.Minute), []string{"a", "b"}},
	} {
		got, err := jobs.ExpiredLeases(ctx, pool, c.now, 10)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("expired at %s = %v, want %v", c.now.Sub(at), got, c.want)
		}
	}
	if _, err := projections.Rebuild(ctx, pool, l.Store, "rebuild_jobs_lease", 3, buildAll, nil); err != nil {
		t.Fatal(err)
	}
	live, rebuilt := dump(t, pool, projections.LiveSchema)["jobs"], dump(t, pool, "rebuild_jobs_lease")["jobs"]
	if !slices.Equal(live, rebuilt) || len(live) != 2 {
		t.Errorf("jobs differ:\nlive    %v\nrebuilt %v", live, rebuilt)
	}
}

// A provider's error with a NUL (or anything else a PostgreSQL text
// column refuses) is kept as it came, not a projector stuck on a poison
// event. The events are handed to the projector directly: they need not
// pass through the event store for the read model to be tested.
func TestJobsKeepProviderErrorsExactly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	set := newSet(t, pool, projections.LiveSchema)
	at := day0.Add(9 * time.Hour)
	msg, typ := "bad \x00 input \uFFFD \u2028 \"quoted\" \\ end", "invalid\x00type"
	stream := events.StreamCompletion + "chatcmpl-nul"
	var evs []events.Envelope
	for i, d := range []events.Data{
		events.CompletionRequested{CompletionID: "chatcmpl-nul", AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeAsync, Request: []byte(`{"model":"m"}`)},
		events.CompletionStarted{CompletionID: "chatcmpl-nul", Executor: "worker:w", LeaseExpiresAt: at.Add(time.Minute)},
		events.CompletionFailed{CompletionID: "chatcmpl-nul", AccountID: "acc_1", KeyID: "key_1", Model: "m", Status: 400, ErrorType: typ, ErrorMessage: msg},
	} {
		e, err := events.New(stream, d, events.Metadata{AccountID: "acc_1"}, at, "")
		if err != nil {
			t.Fatal(err)
		}
		e.StreamVersion, e.Position = int64(i+1), int64(i+1)
		evs = append(evs, e)
	}
	handleAll(t, set, evs...)
	js, err := jobs.List(ctx, pool, "acc_1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 1 || js[0].ErrorMessage != msg || js[0].ErrorType != typ || js[0].Status != jobs.JobFailed {
		t.Fatalf("jobs = %+v, want the error as it came", js)
	}
}
