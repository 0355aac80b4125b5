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
}

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

// startUpstream serves the fake provider on 127.0.0.1:0.
func startUpstream(latency time.Duration, logger *slog.Logger) (*upstream, error) {
	body, err := completionBody()
	if err != nil {
		return nil, err
	}
	length := strconv.Itoa(len(body))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		// Read the request as a real provider would, then think.
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, `{"error":{"message":"could not read the request body","type":"invalid_request_error"}}`, http.StatusBadRequest)
			return
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
	u := &upstream{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30*time.Second + latency,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		baseURL: "http://" + ln.Addr().String() + "/v1",
		done:    make(chan struct{}),
	}
	go func() {
		defer close(u.done)
		if err := u.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
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
