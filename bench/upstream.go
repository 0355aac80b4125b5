package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

// upstreamModel is the model name the fake provider reports.
const upstreamModel = "bench-upstream-model"

// upstream is a fake OpenAI-compatible provider: it answers every chat
// completion with the same pre-rendered chat.completion object (or, for
// "stream": true, the same pre-rendered chunks, each flushed on its own)
// after sleeping its latency, so that it costs next to nothing itself.
type upstream struct {
	srv     *http.Server
	baseURL string // e.g. http://127.0.0.1:41234/v1
	done    chan struct{}
	// accepted counts connections; inflight and peak the requests thinking
	// at once (the slow mode's proof that they were all held together).
	accepted       *atomic.Int64
	inflight, peak atomic.Int64
}

// resetPeak starts a new phase's peak.
func (u *upstream) resetPeak() { u.peak.Store(u.inflight.Load()) }

// completionBody renders the answer once: a complete chat.completion object
// with usage, as OpenAI sends it.
func completionBody() ([]byte, error) {
	type message struct {
		Role    string  `json:"role"`
		Content string  `json:"content"`
		Refusal *string `json:"refusal"`
	}
	type choice struct {
		Index        int     `json:"index"`
		Message      message `json:"message"`
		Logprobs     *string `json:"logprobs"`
		FinishReason string  `json:"finish_reason"`
	}
	body := struct {
		ID                string   `json:"id"`
		Object            string   `json:"object"`
		Created           int64    `json:"created"`
		Model             string   `json:"model"`
		Choices           []choice `json:"choices"`
		Usage             any      `json:"usage"`
		SystemFingerprint string   `json:"system_fingerprint"`
		ServiceTier       string   `json:"service_tier"`
	}{
		ID:      "chatcmpl-bench0000000000000000000000",
		Object:  "chat.completion",
		Created: 1_700_000_000,
		Model:   upstreamModel,
		Choices: []choice{{
			Message:      message{Role: "assistant", Content: answerText},
			FinishReason: "stop",
		}},
		Usage: map[string]any{
			"prompt_tokens": 24, "completion_tokens": 23, "total_tokens": 47,
			"prompt_tokens_details":     map[string]int{"cached_tokens": 0, "audio_tokens": 0},
			"completion_tokens_details": map[string]int{"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
		},
		SystemFingerprint: "fp_bench",
		ServiceTier:       "default",
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("render fake completion: %w", err)
	}
	return b, nil
}

// upstreamMaxStreams is the fake provider's HTTP/2 streams per connection:
// like a large provider's edge, it takes all the bench sends.
const upstreamMaxStreams = 100_000

// startUpstream serves the fake provider on 127.0.0.1:0.
func startUpstream(latency time.Duration, logger *slog.Logger) (*upstream, error) {
	body, err := completionBody()
	if err != nil {
		return nil, err
	}
	length := strconv.Itoa(len(body))
	u := &upstream{done: make(chan struct{})}
	mux := http.NewServeMux()
	stream, err := streamEvents()
	if err != nil {
		return nil, err
	}
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		// Read the request as a real provider would, then think.
		raw, err := io.ReadAll(r.Body)
		var req struct {
			Stream        bool                      `json:"stream"`
			StreamOptions *openaiwire.StreamOptions `json:"stream_options"`
		}
		if err == nil {
			err = json.Unmarshal(raw, &req)
		}
		if err != nil {
			http.Error(w, `{"error":{"message":"could not read the request body","type":"invalid_request_error"}}`, http.StatusBadRequest)
			return
		}
		n := u.inflight.Add(1)
		defer u.inflight.Add(-1)
		for p := u.peak.Load(); n > p && !u.peak.CompareAndSwap(p, n); p = u.peak.Load() {
		}
		if latency > 0 {
			t := time.NewTimer(latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		h := w.Header()
		if req.Stream {
			writeStream(w, stream, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
			return
		}
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{length}
		_, _ = w.Write(body) // the client went away: nothing to do
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake upstream: listen: %w", err)
	}
	// HTTP/1.1 and h2c like Tollgate: the slow mode's provider client
	// multiplexes all its calls over a few h2c connections, as it would to
	// a real provider over TLS, so that 10,000 calls in flight do not need
	// 10,000 sockets on each side in this one process.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	u.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30*time.Second + latency,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		Protocols:         &protocols,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: upstreamMaxStreams},
	}
	u.baseURL = "http://" + ln.Addr().String() + "/v1"
	cl := &countingListener{Listener: ln}
	u.accepted = &cl.accepted
	go func() {
		defer close(u.done)
		if err := u.srv.Serve(cl); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("fake upstream stopped", "error", err)
		}
	}()
	return u, nil
}

// close stops the fake upstream within ctx.
func (u *upstream) close(ctx context.Context) error {
	err := u.srv.Shutdown(ctx)
	<-u.done
	if err != nil {
		return fmt.Errorf("fake upstream: shutdown: %w", err)
	}
	return nil
}

// answerText is the fake provider's answer, in full or in chunks.
const answerText = "Tollgate's benchmark answer: a short reply of a few dozen tokens, about the size of a typical chat turn."

// streamed is a pre-rendered stream: its server-sent events, and the
// usage event sent before [DONE] when the request asked for it.
type streamed struct {
	events [][]byte
	usage  []byte
}

// streamEvents renders the stream once, as OpenAI sends it: a first chunk
// with the role, the answer in chunks of a few words, a chunk with the
// finish reason, then (when asked for) a usage-only chunk.
func streamEvents() (streamed, error) {
	chunk := func(d openaiwire.Delta, finish *string) openaiwire.Chunk {
		return openaiwire.Chunk{ID: "chatcmpl-bench0000000000000000000000", Object: openaiwire.ObjectChunk, Created: 1_700_000_000,
			Model: upstreamModel, SystemFingerprint: "fp_bench", Usage: json.RawMessage("null"),
			Choices: []openaiwire.ChunkChoice{{Delta: d, FinishReason: finish}}}
	}
	chunks := []openaiwire.Chunk{chunk(openaiwire.Delta{Role: "assistant", Content: openaiwire.String("")}, nil)}
	words := strings.SplitAfter(answerText, " ")
	for i := 0; i < len(words); i += 3 {
		piece := strings.Join(words[i:min(i+3, len(words))], "")
		chunks = append(chunks, chunk(openaiwire.Delta{Content: openaiwire.String(piece)}, nil))
	}
	stop := "stop"
	chunks = append(chunks, chunk(openaiwire.Delta{}, &stop))
	usage := openaiwire.Chunk{ID: chunks[0].ID, Object: openaiwire.ObjectChunk, Created: chunks[0].Created, Model: upstreamModel,
		SystemFingerprint: "fp_bench", Choices: []openaiwire.ChunkChoice{}, Usage: json.RawMessage(`{"prompt_tokens":24,"completion_tokens":23,"total_tokens":47}`)}
	var s streamed
	event := func(c openaiwire.Chunk) ([]byte, error) {
		b, err := json.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("render fake stream: %w", err)
		}
		return []byte("data: " + string(b) + "\n\n"), nil
	}
	for _, c := range chunks {
		e, err := event(c)
		if err != nil {
			return streamed{}, err
		}
		s.events = append(s.events, e)
	}
	var err error
	s.usage, err = event(usage)
	return s, err
}

// writeStream sends s, flushing every event, then [DONE].
func writeStream(w http.ResponseWriter, s streamed, withUsage bool) {
	h := w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["Cache-Control"] = []string{"no-cache"}
	rc := http.NewResponseController(w)
	send := func(e []byte) bool {
		_, err := w.Write(e)
		return err == nil && rc.Flush() == nil
	}
	for _, e := range s.events {
		if !send(e) {
			return // the client went away
		}
	}
	if withUsage && !send(s.usage) {
		return
	}
	send([]byte(doneEvent))
}

// doneEvent ends a stream.
const doneEvent = "data: [DONE]\n\n"
