package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

// The reference proxy is what the issue compares Tollgate with: the
// simplest gateway that durably records every request and its answer.
// For each chat completion it decodes the request, does one durable INSERT
// (autocommit, synchronous_commit on), forwards the request to the
// upstream, decodes the answer, does one more durable INSERT and answers.
// It checks no key, limit or budget and keeps no read model.

// referencePoolSize is the reference proxy's database pool: Tollgate's default.
const referencePoolSize = 20

// referenceTable is the reference proxy's own table in the bench's database.
const referenceTable = `CREATE TABLE IF NOT EXISTS bench_reference_log (
	request_id        uuid        NOT NULL,
	kind              text        NOT NULL, -- request or response
	model             text        NOT NULL,
	status            int,
	prompt_tokens     bigint,
	completion_tokens bigint,
	body              jsonb       NOT NULL,
	at                timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (request_id, kind))`

const referenceInsert = `INSERT INTO bench_reference_log (request_id, kind, model, status, prompt_tokens, completion_tokens, body)
	VALUES ($1, $2, $3, $4, $5, $6, $7)`

// reference is the reference proxy.
type reference struct {
	pool     *pgxpool.Pool
	client   *http.Client
	upstream string // the upstream's chat completions URL
	logger   *slog.Logger
}

// serveReference runs the reference proxy until ctx ends.
func serveReference(ctx context.Context, s childSpec, logger *slog.Logger, out *messageWriter) error {
	pcfg, err := pgxpool.ParseConfig(s.DatabaseURL)
	if err != nil {
		return fmt.Errorf("bench reference: database URL: %w", err)
	}
	pcfg.MaxConns = referencePoolSize
	pcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on" // durable before the answer
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("bench reference: %w", err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, referenceTable); err != nil {
		return fmt.Errorf("bench reference: create its table: %w", err)
	}
	p := &reference{pool: pool, upstream: s.UpstreamURL + "/chat/completions", logger: logger,
		client: &http.Client{Transport: newTransport(s.Concurrency), Timeout: time.Minute + s.UpstreamLatency}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", p.chat)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("bench reference: listen: %w", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	err = out.send(childMessage{Addr: ln.Addr().String()})
	if err == nil {
		select {
		case <-ctx.Done():
		case err = <-served:
		}
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutCtx); serr != nil {
		err = errors.Join(err, fmt.Errorf("bench reference: shutdown: %w", serr))
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// referenceRequest is the request as the reference decodes it.
type referenceRequest struct {
	openaiwire.Request
	Model  string `json:"model"`
	Stream bool   `json:"stream"`
}

// referenceResponse is the answer as the reference decodes it.
type referenceResponse struct {
	ID    string `json:"id"`
	Model string `json:"model"`
	openaiwire.ResponseView
}

// chat serves one chat completion.
func (p *reference) chat(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	var req referenceRequest
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil || req.Model == "" || len(req.Messages) == 0 {
		p.error(w, http.StatusBadRequest, "invalid_request_error", fmt.Errorf("request: %v", err))
		return
	}
	id := uuid.New()
	if _, err := p.pool.Exec(ctx, referenceInsert, id, "request", req.Model, nil, nil, nil, body); err != nil {
		p.error(w, http.StatusServiceUnavailable, "server_error", fmt.Errorf("record the request: %w", err))
		return
	}
	up, err := http.NewRequestWithContext(ctx, http.MethodPost, p.upstream, bytes.NewReader(body))
	if err != nil {
		p.error(w, http.StatusInternalServerError, "server_error", err)
		return
	}
	up.Header.Set("Content-Type", "application/json")
	up.Header.Set("Authorization", "Bearer sk-bench")
	resp, err := p.client.Do(up)
	if err != nil {
		p.error(w, http.StatusBadGateway, "upstream_error", fmt.Errorf("upstream: %w", err))
		return
	}
	defer func() { _ = resp.Body.Close() }()
	if req.Stream && resp.StatusCode == http.StatusOK {
		p.relayStream(w, r, id, req.Model, resp.Body)
		return
	}
	raw, err := io.ReadAll(resp.Body)
	var out referenceResponse
	if err == nil && resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(raw, &out)
	}
	if err != nil {
		p.error(w, http.StatusBadGateway, "upstream_error", fmt.Errorf("upstream answer: %w", err))
		return
	}
	prompt, completion, _ := out.Usage.Counts()
	if !json.Valid(raw) {
		raw = []byte("{}")
	}
	if _, err := p.pool.Exec(ctx, referenceInsert, id, "response", req.Model, resp.StatusCode, prompt, completion, raw); err != nil {
		p.error(w, http.StatusServiceUnavailable, "server_error", fmt.Errorf("record the answer: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(raw)
}

// relayStream forwards the upstream's events as they come, decoding each
// chunk (for the usage), and records the outcome before the final [DONE].
func (p *reference) relayStream(w http.ResponseWriter, r *http.Request, id uuid.UUID, model string, body io.Reader) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	var usage *openaiwire.UsageReport
	br := bufio.NewReader(body)
	for {
		line, err := br.ReadBytes('\n')
		data, isData := bytes.CutPrefix(line, []byte("data: "))
		if isData && string(bytes.TrimSpace(data)) == "[DONE]" {
			break
		}
		if isData {
			var c openaiwire.Chunk
			if json.Unmarshal(data, &c) == nil {
				if u, _ := c.UsageOf(); u != nil {
					usage = u
				}
			}
		}
		if _, werr := w.Write(line); werr != nil {
			return // the client went away
		}
		if len(bytes.TrimSpace(line)) == 0 {
			_ = rc.Flush() // the end of an event
		}
		if err != nil {
			break
		}
	}
	prompt, completion, _ := usage.Counts()
	if _, err := p.pool.Exec(r.Context(), referenceInsert, id, "response", model, http.StatusOK, prompt, completion, `{"stream":true}`); err != nil {
		p.logger.Warn("bench reference: record the answer", "error", err)
		return // no [DONE]: the answer was not recorded
	}
	_, _ = w.Write([]byte(doneEvent))
	_ = rc.Flush()
}

func (p *reference) error(w http.ResponseWriter, status int, kind string, err error) {
	p.logger.Warn("bench reference", "status", status, "error", err)
	b, _ := json.Marshal(openaiwire.NewErrorBody(err.Error(), kind, "", ""))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
