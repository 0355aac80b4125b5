package llmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Script is what a Scripted provider answers, on the OpenAI wire format.
type Script struct {
	// Pieces are the answer's content as raw JSON string literals, quotes
	// included (`"a\u0000b"`, `"\ud800"`): a stream sends one chunk per
	// piece, exactly these bytes as the delta's content; a plain answer's
	// content is their concatenation (Content). Default: one piece, `"ok"`.
	Pieces []string
	// Delay is the wait before a plain answer, and before a stream's
	// first chunk.
	Delay time.Duration
	// Gap is the wait between two chunks of a stream.
	Gap time.Duration
	// ErrorMessage, when set, makes the provider refuse every request
	// with 400 and this error message (a raw JSON string literal).
	ErrorMessage string
}

// Usage the Scripted provider reports: ScriptedPrompt prompt tokens and
// one completion token per piece.
const ScriptedPrompt = 7

// Content is the answer's content as one raw JSON string literal: the
// pieces' insides, concatenated, between quotes.
func (s Script) Content() string {
	var b strings.Builder
	b.WriteByte('"')
	for _, p := range s.pieces() {
		b.WriteString(p[1 : len(p)-1])
	}
	b.WriteByte('"')
	return b.String()
}

func (s Script) pieces() []string {
	if len(s.Pieces) == 0 {
		return []string{`"ok"`}
	}
	return s.Pieces
}

// Scripted is a fake OpenAI-compatible provider answering its Script,
// plain or streamed, with every byte of content as given.
type Scripted struct {
	*httptest.Server
	script Script
	calls  atomic.Int64
}

// NewScripted starts a Scripted provider; it is closed when the test ends.
// Each piece must be a valid JSON string literal.
func NewScripted(t testing.TB, s Script) *Scripted {
	t.Helper()
	for _, p := range s.pieces() {
		if !json.Valid([]byte(p)) || len(p) < 2 || p[0] != '"' {
			t.Fatalf("llmtest: piece %q is not a JSON string literal", p)
		}
	}
	u := &Scripted{script: s}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

// Calls returns how often the provider was called.
func (u *Scripted) Calls() int64 { return u.calls.Load() }

func (u *Scripted) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	u.calls.Add(1)
	var req struct {
		Stream bool `json:"stream"`
	}
	_ = json.Unmarshal(raw, &req)
	s := u.script
	if s.ErrorMessage != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":{"message":%s,"type":"invalid_request_error","code":null}}`, s.ErrorMessage)
		return
	}
	if !sleep(r, s.Delay) {
		return
	}
	pieces := s.pieces()
	usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, ScriptedPrompt, len(pieces), ScriptedPrompt+len(pieces))
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"up-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":%s}`,
			s.Content(), usage)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	send := func(data string) bool {
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	const head = `{"id":"up-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[`
	if !send(head + `{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`) {
		return
	}
	for i, p := range pieces {
		if i > 0 && !sleep(r, s.Gap) {
			return
		}
		if !send(head + `{"index":0,"delta":{"content":` + p + `},"finish_reason":null}]}`) {
			return
		}
	}
	send(head + `{"index":0,"delta":{},"finish_reason":"stop"}]}`)
	send(`{"id":"up-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":` + usage + `}`)
	send("[DONE]")
}

// sleep waits d unless the request ends first; it reports whether the
// request is still on.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}
