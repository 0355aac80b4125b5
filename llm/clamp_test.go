package llm

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tollgate/tollgate/config"
)

// The provider receives output limits within what admission reserved: a
// client's max_tokens above the model's max_output_tokens is lowered to
// it, and with both fields set neither exceeds the one the reservation
// counted (max_completion_tokens).
func TestUpstreamOutputLimitsStayWithinTheReservation(t *testing.T) {
	t.Parallel()
	u := newUpstream(t, ok)
	p := newPolicy(t, config.Routing{MaxAttempts: 1}, 5*time.Second, u) // the model's cap is 1000
	for i, c := range []struct {
		req                string
		maxTokens, maxComp string // what the provider must receive ("" = absent)
	}{
		{`{"max_tokens":50000}`, "1000", ""},
		{`{"max_tokens":200}`, "200", ""},
		{`{"max_completion_tokens":5000}`, "", "1000"},
		{`{"max_completion_tokens":10,"max_tokens":900}`, "10", "10"},
		{`{}`, "", ""},
	} {
		var req map[string]json.RawMessage
		if err := json.Unmarshal([]byte(c.req), &req); err != nil {
			t.Fatal(err)
		}
		req["messages"] = json.RawMessage(`[{"role":"user","content":"hi"}]`)
		raw, _ := json.Marshal(req)
		if _, err := p.r.Complete(context.Background(), p.model, raw); err != nil {
			t.Fatal(err)
		}
		u.mu.Lock()
		body := u.bodies[i]
		u.mu.Unlock()
		if string(body["max_tokens"]) != c.maxTokens || string(body["max_completion_tokens"]) != c.maxComp {
			t.Errorf("client %s: provider got max_tokens %s, max_completion_tokens %s; want %q, %q", c.req,
				body["max_tokens"], body["max_completion_tokens"], c.maxTokens, c.maxComp)
		}
	}
}
