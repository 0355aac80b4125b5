package events_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/events"
)

// sameAsMarshal fails unless e.AppendJSON gives json.Marshal(e)'s bytes.
func sameAsMarshal(t *testing.T, e events.Envelope) {
	t.Helper()
	want, wantErr := json.Marshal(e)
	got, err := e.AppendJSON(nil)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("AppendJSON error %v, json.Marshal error %v", err, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendJSON differs from json.Marshal:\n got %s\nwant %s", got, want)
	}
}

func TestAppendJSONIsJSONMarshal(t *testing.T) {
	t.Parallel()
	tricky := []string{"", "plain", `quo"te back\slash`, "<script>&amp;</script>", "tab\tnew\nline\rcr\bbs\fff",
		"\x00\x01\x1f\x7f", "\u2028\u2029", "é 日本 🙂", "bad \xff utf-8 \xe2\x82", "key:key_1"}
	zone := time.FixedZone("CET", 3600)
	times := []time.Time{at, {}, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(2026, 1, 2, 3, 4, 5, 100, zone)}
	for i, d := range examples {
		e, err := events.New(events.StreamCompletion+"chatcmpl-abc", d, events.Metadata{}, at, "")
		if err != nil {
			t.Fatal(err)
		}
		e.StreamVersion, e.Position = int64(i+1), int64(1000*i)
		s := tricky[i%len(tricky)]
		e.Metadata = events.Metadata{AccountID: s, CorrelationID: tricky[(i+1)%len(tricky)], CausationID: tricky[(i+2)%len(tricky)], Actor: tricky[(i+3)%len(tricky)]}
		e.OccurredAt = times[i%len(times)]
		sameAsMarshal(t, e)
		e.StreamID, e.Type = s, tricky[(i+4)%len(tricky)]
		sameAsMarshal(t, e)
	}
	sameAsMarshal(t, events.Envelope{})
	sameAsMarshal(t, events.Envelope{EventID: uuid.New(), Position: -3, StreamVersion: -1, SchemaVersion: 1 << 40, Data: json.RawMessage(`[1,"x",null]`)})
	// A year json.Marshal cannot encode: both fail.
	sameAsMarshal(t, events.Envelope{EventID: uuid.New(), OccurredAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
}

// Data is copied as it is: JSON with spaces stays valid and means the same.
func TestAppendJSONKeepsDataAsStored(t *testing.T) {
	t.Parallel()
	e := events.Envelope{EventID: uuid.New(), Type: "x", Data: json.RawMessage(`{"a": [1, 2], "b": "c"}`), Position: 7}
	got, err := e.AppendJSON([]byte("prefix "))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(got, []byte("prefix ")) || !bytes.Contains(got, e.Data) {
		t.Fatalf("got %s", got)
	}
	var back events.Envelope
	if err := json.Unmarshal(got[len("prefix "):], &back); err != nil {
		t.Fatal(err)
	}
	var w, g any
	if json.Unmarshal(e.Data, &w) != nil || json.Unmarshal(back.Data, &g) != nil || !reflect.DeepEqual(w, g) || back.EventID != e.EventID || back.Position != 7 {
		t.Fatalf("decoded %+v", back)
	}
}

// AppendJSON writes each field by hand: a new exported (encoded) field of
// Envelope or Metadata must be added there (and here).
func TestAppendJSONCoversEveryField(t *testing.T) {
	t.Parallel()
	exported := func(t reflect.Type) int {
		n := 0
		for f := range t.Fields() {
			if f.IsExported() {
				n++
			}
		}
		return n
	}
	if n := exported(reflect.TypeFor[events.Envelope]()); n != 9 {
		t.Fatalf("Envelope has %d exported fields: update Envelope.AppendJSON and this test", n)
	}
	if n := exported(reflect.TypeFor[events.Metadata]()); n != 4 {
		t.Fatalf("Metadata has %d exported fields: update Envelope.AppendJSON and this test", n)
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("completion-chatcmpl-1", "completion.requested", "acc_1", "req_1", "<&>", "\u2028\xff", int64(3), int64(99), int64(1_700_000_000_123))
	f.Fuzz(func(t *testing.T, stream, typ, account, corr, cause, actor string, version, pos, nanos int64) {
		sameAsMarshal(t, events.Envelope{
			EventID: uuid.NewSHA1(uuid.Nil, []byte(stream)), StreamID: stream, StreamVersion: version, Type: typ, SchemaVersion: int(version),
			OccurredAt: time.Unix(0, nanos).UTC(), Data: json.RawMessage(`{"k":"v"}`), Position: pos,
			Metadata: events.Metadata{AccountID: account, CorrelationID: corr, CausationID: cause, Actor: actor},
		})
	})
}
