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
	"sync/atomic"
	"time"
)

// upstreamModel is the model name the fake provider reports.
const upstreamModel = "bench-upstream-model"

// upstream is a fake OpenAI-compatible provider: it answers every chat
// completion with the same pre-rendered chat.completion object after
// sleeping its latency, so that it costs next to nothing itself.
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
			Message:      message{Role: "assistant", Content: "Tollgate's benchmark answer: a short reply of a few dozen tokens, about the size of a typical chat turn."},
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
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		// Read the request as a real provider would, then think.
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
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
