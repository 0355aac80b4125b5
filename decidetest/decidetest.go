// Package decidetest is the given/when/then harness for decide functions:
// given events are folded into state through the aggregate's Fold
// function, the command is decided on that state, and the outcome is
// compared with the expected events or error. Every decided event is also
// checked against its JSON Schema. The account, completion, billing and
// commands tests share it.
package decidetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/schemas"
)

// Case is one given/when/then case of a decide function.
type Case[S any] struct {
	Name  string
	Given []events.Data
	When  func(S) ([]events.Data, error)
	Then  []events.Data
	Err   error  // matched with errors.Is
	Field string // the *domainerr.ValidationError's field, when err is domainerr.ErrInvalid
}

// T0 is the clock reading of the first given event.
var T0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// History builds envelopes for given with increasing stream versions.
func History(t *testing.T, stream string, given ...events.Data) []events.Envelope {
	t.Helper()
	out := make([]events.Envelope, len(given))
	for i, d := range given {
		e, err := events.New(stream, d, events.Metadata{Actor: "test"}, T0.Add(time.Duration(i)*time.Second), "")
		if err != nil {
			t.Fatalf("events.New(%T): %v", d, err)
		}
		e.StreamVersion = int64(i + 1)
		out[i] = e
	}
	return out
}

var (
	validatorOnce sync.Once
	validator     *schemas.Validator
	validatorErr  error
)

func schemaValidator(t *testing.T) *schemas.Validator {
	t.Helper()
	validatorOnce.Do(func() { validator, validatorErr = schemas.NewValidator() })
	if validatorErr != nil {
		t.Fatalf("schemas.NewValidator: %v", validatorErr)
	}
	return validator
}

// Run folds each case's given events on stream, decides, and compares the
// outcome with the case's then (or err), checking every decided event
// against its JSON Schema.
func Run[S any](t *testing.T, stream string, fold func([]events.Envelope) (S, error), cases []Case[S]) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			state, err := fold(History(t, stream, tc.Given...))
			if err != nil {
				t.Fatalf("fold given: %v", err)
			}
			got, err := tc.When(state)
			if tc.Err != nil {
				if !errors.Is(err, tc.Err) {
					t.Fatalf("err = %v, want %v", err, tc.Err)
				}
				if got != nil {
					t.Errorf("events = %s alongside error, want none", Dump(got))
				}
				if tc.Field != "" {
					var ve *domainerr.ValidationError
					if !errors.As(err, &ve) {
						t.Fatalf("err = %T %v, want *domainerr.ValidationError", err, err)
					}
					if ve.Field != tc.Field {
						t.Errorf("ValidationError.Field = %q, want %q (%v)", ve.Field, tc.Field, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if g, w := Dump(got), Dump(tc.Then); g != w {
				t.Errorf("then\n got %s\nwant %s", g, w)
			}
			v := schemaValidator(t)
			for _, d := range got {
				raw, err := json.Marshal(d)
				if err != nil {
					t.Fatal(err)
				}
				if err := v.Validate(d.EventType(), events.Types()[d.EventType()], nil, raw); err != nil {
					t.Errorf("decided event does not match its schema: %v", err)
				}
			}
		})
	}
}

// Dump renders events as "type json" lines, so comparisons are exact and
// failures readable.
func Dump(ds []events.Data) string {
	if len(ds) == 0 {
		return "[]"
	}
	var b strings.Builder
	for _, d := range ds {
		raw, err := json.Marshal(d)
		if err != nil {
			return fmt.Sprintf("marshal %T: %v", d, err)
		}
		fmt.Fprintf(&b, "\n  %s %s", d.EventType(), raw)
	}
	return b.String()
}
