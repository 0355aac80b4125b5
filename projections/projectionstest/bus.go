package projectionstest

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/tollgate/tollgate/events"
)

// BatchHandler is what a Bus delivers to: a projections.Set.
type BatchHandler interface {
	Handler
	HandleBatch(ctx context.Context, evs []events.Envelope) error
}

// Bus delivers a log to a BatchHandler the way a bus partitioned by account
// does: each account's events in the global order, accounts interleaved
// at random, with redeliveries (a consumer restarting a few messages back)
// and, now and then, several messages in one batch.
type Bus struct {
	t    testing.TB
	h    BatchHandler
	rng  *rand.Rand
	next map[string]int
}

// NewBus returns a Bus delivering to h, drawing from rng.
func NewBus(t testing.TB, h BatchHandler, rng *rand.Rand) *Bus {
	return &Bus{t: t, h: h, rng: rng, next: map[string]int{}}
}

// Deliver delivers the events of all not delivered yet.
func (b *Bus) Deliver(all []events.Envelope) {
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
			err = b.h.Handle(ctx, evs[0])
		} else {
			err = b.h.HandleBatch(ctx, evs[:n])
		}
		if err != nil {
			b.t.Fatalf("deliver %s v%d: %v", evs[0].StreamID, evs[0].StreamVersion, err)
		}
		b.next[a] += n
	}
}
