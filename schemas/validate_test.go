package schemas_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/schemas"
)

func newValidator(t *testing.T) *schemas.Validator {
	t.Helper()
	v, err := schemas.NewValidator()
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	return v
}

// keyHx is a well-formed key hash: 64 lower-case hex characters.
const keyHx = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// exampleTime has nanoseconds, as Go marshals them.
func exampleTime() time.Time { return time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC) }

// examples returns one valid event of every registered type, with the stream
// it belongs to.
func examples() map[string]example {
	out := map[string]example{}
	for _, area := range []map[string]example{coreExamples(), executionExamples(), quotaExamples(), billingExamples()} {
		for k, v := range area {
			out[k] = v
		}
	}
	return out
}

// example is an event's data with the stream it belongs to.
type example = struct {
	stream string
	data   events.Data
}

func coreExamples() map[string]example {
	type ex = example
	at := exampleTime()
	return map[string]ex{
		events.TypeAccountCreated: {"account-acc_1", events.AccountCreated{
			AccountID: "acc_1", Name: "Acme", Email: "ops@acme.example", Plan: "pro",
		}},
		events.TypeBillingCustomerLinked: {"account-acc_1", events.BillingCustomerLinked{
			AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib",
		}},
		events.TypeAPIKeyIssued: {"apikey-key_2", events.APIKeyIssued{
			KeyID: "key_2", AccountID: "acc_1", Name: "prod", KeyHash: keyHx, KeyPrefix: "tg_live_ab",
		}},
		events.TypeAPIKeyRevoked: {"apikey-key_2", events.APIKeyRevoked{
			KeyID: "key_2", AccountID: "acc_1",
		}},
		events.TypeCompletionRequested: {"completion-chatcmpl-abc123", events.CompletionRequested{
			CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini",
			Mode:    events.ModeAsync,
			Request: json.RawMessage(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`),
		}},
		events.TypeCompletionStarted: {"completion-chatcmpl-abc123", events.CompletionStarted{
			CompletionID: "chatcmpl-abc123", Executor: "worker:w-7f", LeaseExpiresAt: at,
		}},
		events.TypeCompletionSucceeded: {"completion-chatcmpl-abc123", events.CompletionSucceeded{
			CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2",
			Model: "gpt-4o-mini", Provider: "openai", UpstreamModel: "gpt-4o-mini-2024-07-18",
			Usage:       events.Usage{PromptTokens: 9, CompletionTokens: 12, TotalTokens: 21},
			CostNanoUSD: 8550, LatencyMS: 412,
			Response: json.RawMessage(`{"id":"chatcmpl-abc123","object":"chat.completion","choices":[]}`),
		}},
		events.TypeCompletionFailed: {"completion-chatcmpl-abc123", events.CompletionFailed{
			CompletionID: "chatcmpl-abc123", AccountID: "acc_1", KeyID: "key_2", Model: "gpt-4o-mini", Status: 502, ErrorType: "server_error", ErrorCode: "upstream_error",
			ErrorMessage: "all providers failed", Provider: "openai", LatencyMS: 30012,
		}},
		events.TypeBillingRecordClosed: {"billingrecord-br_9", events.BillingRecordClosed{
			RecordID: "br_9", AccountID: "acc_1", WindowStart: at, WindowEnd: at.Add(time.Hour), Quantity: 21000, Unit: "tokens",
			StripeCustomerID: "cus_NffrFeUfNV2Hib",
		}},
		events.TypeBillingUsageReported: {"billingrecord-br_9", events.BillingUsageReported{
			RecordID: "br_9", AccountID: "acc_1", StripeCustomerID: "cus_NffrFeUfNV2Hib", EventName: "tollgate_tokens",
			Identifier: "br_9", Quantity: 21000, ReportedAt: at,
		}},
	}
}

func TestEveryRegisteredTypeHasSchema(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	types := events.Types()
	if len(types) == 0 {
		t.Fatal("events.Types() is empty")
	}
	for typ, ver := range types {
		// Every version up to the current one: old events still replay.
		for n := 1; n <= ver; n++ {
			if !v.Has(typ, n) {
				t.Errorf("no schema %s.v%d.json", typ, n)
			}
		}
	}
	if v.Has(events.TypeAccountCreated, 99) || v.Has("account.exploded", 1) {
		t.Error("Has reports a schema that does not exist")
	}
}

func TestSchemaFilesMatchRegistry(t *testing.T) {
	t.Parallel()
	entries, err := fs.ReadDir(schemas.Events, "events")
	if err != nil {
		t.Fatal(err)
	}
	types := events.Types()
	seenEnvelope := false
	for _, e := range entries {
		name := e.Name()
		raw, err := schemas.Events.ReadFile("events/" + name)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Schema string `json:"$schema"`
			ID     string `json:"$id"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema = %q, want draft 2020-12", name, doc.Schema)
		}
		if !strings.HasSuffix(doc.ID, "/"+name) {
			t.Errorf("%s: $id %q does not end in the file name", name, doc.ID)
		}
		if name == "envelope.json" {
			seenEnvelope = true
			continue
		}
		base := strings.TrimSuffix(name, ".json")
		i := strings.LastIndex(base, ".v")
		if i <= 0 {
			t.Errorf("%s: want <type>.v<version>.json", name)
			continue
		}
		ver, err := strconv.Atoi(base[i+2:])
		if err != nil {
			t.Errorf("%s: version: %v", name, err)
			continue
		}
		// A schema may be older than the registry's version (old events
		// still replay) but never newer or of an unknown type.
		if cur, ok := types[base[:i]]; !ok || ver < 1 || ver > cur {
			t.Errorf("%s: registry has %s at v%d", name, base[:i], cur)
		}
	}
	if !seenEnvelope {
		t.Error("envelope.json is missing")
	}
}

func TestValidExamplesValidate(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	exs := examples()
	for typ, ver := range events.Types() {
		ex, ok := exs[typ]
		if !ok {
			t.Errorf("no example for %s: add one", typ)
			continue
		}
		t.Run(typ, func(t *testing.T) {
			env, err := events.New(ex.stream, ex.data, events.Metadata{
				AccountID: "acc_1", CorrelationID: "req_77", CausationID: "cmd_1", Actor: "key:key_2",
			}, exampleTime(), "seed-"+typ)
			if err != nil {
				t.Fatal(err)
			}
			if env.SchemaVersion != ver {
				t.Fatalf("schema version %d, registry says %d", env.SchemaVersion, ver)
			}
			env.StreamVersion = 3
			env.Position = 42
			envJSON, err := json.Marshal(env)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Validate(typ, ver, nil, env.Data); err != nil {
				t.Errorf("data: %v", err)
			}
			if err := v.Validate(typ, ver, envJSON, env.Data); err != nil {
				t.Errorf("envelope and data: %v", err)
			}
			if err := v.Validate(typ, ver, envJSON, nil); err != nil {
				t.Errorf("envelope with its own data: %v", err)
			}
		})
	}
}

func TestOptionalFieldsMayBeOmitted(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	// error_code and provider are omitempty.
	data, err := json.Marshal(events.CompletionFailed{
		CompletionID: "chatcmpl-x1", AccountID: "acc_1", KeyID: "key_2", Model: "m", Status: 429, ErrorType: "rate_limit_exceeded", ErrorMessage: "slow down",
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "error_code") {
		t.Fatalf("expected error_code omitted: %s", data)
	}
	if err := v.Validate(events.TypeCompletionFailed, 1, nil, data); err != nil {
		t.Errorf("minimal completion.failed: %v", err)
	}
	// An envelope's metadata may be empty and its position absent.
	env := `{"event_id":"0b7e3a0e-9d0c-4c57-8a57-8d1f0e6a9b10","stream_id":"account-acc_1","stream_version":1,
		"type":"apikey.revoked","schema_version":1,"occurred_at":"2026-03-14T15:09:26Z","data":{},"metadata":{}}`
	if err := v.Validate(events.TypeAPIKeyRevoked, 1, []byte(env), []byte(`{"key_id":"key_a","account_id":"acc_b"}`)); err != nil {
		t.Errorf("minimal envelope: %v", err)
	}
}

func TestInvalidDataFails(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	cases := []struct {
		name string
		typ  string
		data string
		// want is a fragment of the error, naming what is wrong.
		want string
	}{
		{"missing field", events.TypeAccountCreated,
			`{"account_id":"acc_1","name":"Acme","email":"a@b.example"}`, "plan"},
		{"wrong type", events.TypeCompletionSucceeded,
			`{"completion_id":"chatcmpl-1","account_id":"acc_1","key_id":"key_1","model":"m","provider":"p","upstream_model":"u",
			  "usage":{"prompt_tokens":"9","completion_tokens":1,"total_tokens":10,"estimated":false},
			  "cost_nano_usd":1,"latency_ms":1,"response":{}}`, "prompt_tokens"},
		{"extra field", events.TypeAPIKeyRevoked,
			`{"key_id":"key_1","account_id":"acc_1","reason":"leaked"}`, "reason"},
		{"extra field in usage", events.TypeCompletionSucceeded,
			`{"completion_id":"chatcmpl-1","account_id":"acc_1","key_id":"key_1","model":"m","provider":"p","upstream_model":"u",
			  "usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10,"estimated":false,"cached":3},
			  "cost_nano_usd":1,"latency_ms":1,"response":{}}`, "cached"},
		{"bad account id", events.TypeAPIKeyRevoked,
			`{"key_id":"key_1","account_id":"account_1"}`, "account_id"},
		{"bad key id", events.TypeAPIKeyRevoked,
			`{"key_id":"sk-123","account_id":"acc_1"}`, "key_id"},
		{"bad completion id", events.TypeCompletionStarted,
			`{"completion_id":"cmpl_1","executor":"api:a","lease_expires_at":"2026-03-14T15:09:26Z"}`, "completion_id"},
		{"bad billing record id", events.TypeBillingRecordClosed,
			`{"record_id":"rec_1","account_id":"acc_1","window_start":"2026-03-14T15:00:00Z",
			  "window_end":"2026-03-14T16:00:00Z","quantity":5,"unit":"tokens"}`, "record_id"},
		{"bad date-time", events.TypeCompletionStarted,
			`{"completion_id":"chatcmpl-1","executor":"api:a","lease_expires_at":"yesterday"}`, "lease_expires_at"},
		{"bad mode", events.TypeCompletionRequested,
			`{"completion_id":"chatcmpl-1","account_id":"acc_1","key_id":"key_1","model":"m","mode":"batch","request":{}}`, "mode"},
		{"request not an object", events.TypeCompletionRequested,
			`{"completion_id":"chatcmpl-1","account_id":"acc_1","key_id":"key_1","model":"m","mode":"sync","request":"hi"}`, "request"},
		{"negative cost", events.TypeCompletionSucceeded,
			`{"completion_id":"chatcmpl-1","account_id":"acc_1","key_id":"key_1","model":"m","provider":"p","upstream_model":"u",
			  "usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10,"estimated":false},
			  "cost_nano_usd":-1,"latency_ms":1,"response":{}}`, "cost_nano_usd"},
		{"fractional quantity", events.TypeBillingUsageReported,
			`{"record_id":"br_1","account_id":"acc_1","stripe_customer_id":"cus_1","event_name":"e",
			  "identifier":"br_1","quantity":1.5,"reported_at":"2026-03-14T15:09:26Z"}`, "quantity"},
		{"short key hash", events.TypeAPIKeyIssued,
			`{"key_id":"key_1","account_id":"acc_1","name":"n","key_hash":"abc","key_prefix":"tg_"}`, "key_hash"},
		{"upper-case key hash", events.TypeAPIKeyIssued,
			`{"key_id":"key_1","account_id":"acc_1","name":"n","key_hash":"` + strings.ToUpper(keyHx) + `","key_prefix":"tg_"}`, "key_hash"},
		{"status not an error", events.TypeCompletionFailed,
			`{"completion_id":"chatcmpl-1","account_id":"acc_1","key_id":"key_1","model":"m","status":200,"error_type":"x","error_message":"y","latency_ms":0}`, "status"},
		{"not an object", events.TypeAPIKeyRevoked, `["key_1","acc_1"]`, "object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := v.Validate(c.typ, 1, nil, []byte(c.data))
			if err == nil {
				t.Fatalf("%s validated: %s", c.typ, c.data)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not mention %q: %v", c.want, err)
			}
		})
	}
}

func TestInvalidEnvelopeFails(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	data := `{"key_id":"key_1","account_id":"acc_1"}`
	good := map[string]any{
		"event_id": "0b7e3a0e-9d0c-4c57-8a57-8d1f0e6a9b10", "stream_id": "apikey-key_1", "stream_version": 2,
		"type": "apikey.revoked", "schema_version": 1, "occurred_at": "2026-03-14T15:09:26Z",
		"data": map[string]any{}, "metadata": map[string]any{"account_id": "acc_1", "actor": "admin"},
		"position": 7,
	}
	mutate := func(f func(m map[string]any)) []byte {
		m := make(map[string]any, len(good))
		for k, val := range good {
			m[k] = val
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := v.Validate(events.TypeAPIKeyRevoked, 1, mutate(func(map[string]any) {}), []byte(data)); err != nil {
		t.Fatalf("good envelope: %v", err)
	}
	cases := []struct {
		name string
		f    func(m map[string]any)
		want string
	}{
		{"event id not a uuid", func(m map[string]any) { m["event_id"] = "evt_1" }, "event_id"},
		{"stream version zero", func(m map[string]any) { m["stream_version"] = 0 }, "stream_version"},
		{"schema version zero", func(m map[string]any) { m["schema_version"] = 0 }, "schema_version"},
		{"unknown stream", func(m map[string]any) { m["stream_id"] = "user-1" }, "stream_id"},
		{"missing occurred_at", func(m map[string]any) { delete(m, "occurred_at") }, "occurred_at"},
		{"data not an object", func(m map[string]any) { m["data"] = "x" }, "data"},
		{"metadata extra field", func(m map[string]any) { m["metadata"] = map[string]any{"tenant": "t"} }, "tenant"},
		{"extra field", func(m map[string]any) { m["recorded_at"] = "2026-03-14T15:09:26Z" }, "recorded_at"},
		{"position not an integer", func(m map[string]any) { m["position"] = "7" }, "position"},
		{"type mismatch", func(m map[string]any) { m["type"] = "apikey.issued" }, "apikey.issued"},
		{"version mismatch", func(m map[string]any) { m["schema_version"] = 2 }, "v2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := v.Validate(events.TypeAPIKeyRevoked, 1, mutate(c.f), []byte(data))
			if err == nil {
				t.Fatal("envelope validated")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not mention %q: %v", c.want, err)
			}
		})
	}
}

func TestUnknownTypeOrVersionIsError(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	for _, c := range []struct {
		typ string
		ver int
	}{{"account.exploded", 1}, {events.TypeAccountCreated, 2}, {events.TypeAccountCreated, 0}, {"envelope", 1}} {
		err := v.Validate(c.typ, c.ver, nil, []byte(`{}`))
		if !errors.Is(err, schemas.ErrNoSchema) {
			t.Errorf("%s v%d: err = %v, want ErrNoSchema", c.typ, c.ver, err)
		}
	}
	if err := v.Validate(events.TypeAPIKeyRevoked, 1, nil, []byte(`{not json`)); err == nil {
		t.Error("malformed JSON validated")
	}
}

func TestValidatorConcurrentUse(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	data, err := json.Marshal(events.APIKeyRevoked{KeyID: "key_1", AccountID: "acc_1"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for range 50 {
				if err := v.Validate(events.TypeAPIKeyRevoked, 1, nil, data); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
