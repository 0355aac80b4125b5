package projections_test

import (
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/projections"
)

// A Set gives a Selective projector only the types it handles: every
// other type must change nothing it writes, so that skipping it is the
// same as giving it.
func TestSelectiveProjectorsIgnoreWhatTheySkip(t *testing.T) {
	t.Parallel()
	for _, p := range buildReadModels("public") {
		sel, ok := p.(projections.Selective)
		if !ok {
			t.Errorf("%s is not Selective: every event is decoded for it", p.Name())
			continue
		}
		a, ok := p.(projections.Accumulator)
		if !ok {
			t.Fatalf("%s is not an Accumulator", p.Name())
		}
		handled := 0
		for typ, version := range events.Types() {
			if sel.Handles(typ) {
				handled++
				continue
			}
			for _, stream := range []string{events.StreamAccount + "acc_1", events.StreamAPIKey + "key_1",
				events.StreamCompletion + "c1", events.StreamBillingRecord + "br_1"} {
				e := events.Envelope{StreamID: stream, StreamVersion: 1, Type: typ, SchemaVersion: version, Data: json.RawMessage(`{}`)}
				d, err := events.Decode(e)
				if err != nil {
					t.Fatal(err)
				}
				pend := a.Pending()
				if err := pend.Add(e, d); err != nil {
					t.Fatalf("%s: add %s: %v", p.Name(), typ, err)
				}
				b := &pgx.Batch{}
				pend.Flush(b)
				if b.Len() != 0 {
					t.Errorf("%s skips %s but writes %d statements for it", p.Name(), typ, b.Len())
				}
			}
		}
		if handled == 0 {
			t.Errorf("%s handles no type", p.Name())
		}
	}
}
