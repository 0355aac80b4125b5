// Package llmtest gives tests an LLM provider that speaks OpenAI's chat
// completions wire format, and the configuration that routes a model to
// it, so tests of the executor, the workers and the jobs use one fake
// provider instead of a copy each.
package llmtest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/config"
)

// Answer is the chat.completion every Upstream returns: "ok", for 3 prompt
// and 2 completion tokens.
const Answer = `{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`

// Upstream is a fake OpenAI-compatible provider that counts its calls.
type Upstream struct {
	*httptest.Server
	calls  atomic.Int64
	mu     sync.Mutex
	bodies []string
}

// NewUpstream starts an Upstream that answers Answer after delay; it is
// closed when the test ends.
func NewUpstream(t testing.TB, delay time.Duration) *Upstream {
	t.Helper()
	u := &Upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.bodies = append(u.bodies, string(b))
		u.mu.Unlock()
		u.calls.Add(1)
		time.Sleep(delay)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, Answer)
	}))
	t.Cleanup(u.Close)
	return u
}

// Bodies returns the request bodies the provider received, in order.
func (u *Upstream) Bodies() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.bodies...)
}

// Calls returns how often the provider was called.
func (u *Upstream) Calls() int64 { return u.calls.Load() }

// ConfigYAML is a configuration routing model "m" to provider "up" at
// baseURL, priced inputPerMillion/outputPerMillion USD, with plan "free";
// extra (YAML) is appended.
func ConfigYAML(baseURL, inputPerMillion, outputPerMillion, extra string) string {
	return fmt.Sprintf(`
providers: [{name: up, kind: openai, base_url: %q}]
models: [{name: m, deployments: [{provider: up, model: m}], price: {input_per_million: %q, output_per_million: %q}}]
plans: [{name: free}]
%s`, baseURL, inputPerMillion, outputPerMillion, extra)
}

// Config parses and validates ConfigYAML.
func Config(t testing.TB, baseURL, inputPerMillion, outputPerMillion, extra string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(ConfigYAML(baseURL, inputPerMillion, outputPerMillion, extra)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}
