package completion_test

import (
	"testing"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/events"
)

func TestQueuedJob(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		d    events.Data
		id   string
		ok   bool
	}{
		{"async request", events.CompletionRequested{CompletionID: "c1", Mode: events.ModeAsync}, "c1", true},
		{"sync request", events.CompletionRequested{CompletionID: "c2", Mode: events.ModeSync}, "c2", false},
		{"requeued", events.CompletionRequeued{CompletionID: "c3"}, "c3", true},
		{"other", events.CompletionAbandoned{CompletionID: "c4"}, "", false},
	} {
		if id, ok := completion.QueuedJob(c.d); ok != c.ok || (ok && id != c.id) {
			t.Errorf("%s: QueuedJob = %q, %v; want %q, %v", c.name, id, ok, c.id, c.ok)
		}
	}
}
