package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/tollgate/tollgate/config"
)

// Router maps client-facing models to their deployments and falls back
// between them. It is safe for concurrent use.
type Router struct {
	providers map[string]Provider
	logger    *slog.Logger
}

// NewRouter builds one Provider per configured provider. client nil = a
// client with sane transport timeouts (NewHTTPClient); getenv resolves each
// provider's api_key_env (nil = no keys); logger nil = discard.
func NewRouter(cfg *config.Config, client *http.Client, getenv func(string) string, logger *slog.Logger) (*Router, error) {
	if cfg == nil {
		return nil, errors.New("llm: new router: nil config")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if client == nil {
		client = NewHTTPClient()
	}
	r := &Router{providers: make(map[string]Provider, len(cfg.Providers)), logger: logger}
	for _, p := range cfg.Providers {
		switch p.Kind {
		case config.KindEcho:
			r.providers[p.Name] = NewEcho(p.Name)
		case config.KindOpenAI:
			var key string
			if p.APIKeyEnv != "" && getenv != nil {
				key = getenv(p.APIKeyEnv)
			}
			if p.APIKeyEnv != "" && key == "" {
				// Not fatal: the server should still start and serve its other
				// providers; requests here fail as rejected credentials (502).
				logger.Warn("llm provider API key is not set", "provider", p.Name, "env", p.APIKeyEnv)
			}
			r.providers[p.Name] = NewOpenAI(p, key, client)
		default:
			return nil, fmt.Errorf("llm: provider %q: unknown kind %q", p.Name, p.Kind)
		}
	}
	return r, nil
}

// Complete runs a chat completion for the client-facing model. It rewrites
// "model" in body to each deployment's upstream model (every other field is
// passed through untouched, except "stream" and "stream_options", which are
// removed because Complete returns one complete object) and tries the
// deployments in order, falling back to the next one only on a Retryable
// *Error; a non-retryable error, or the end of ctx, returns at once. The last
// error is returned when all fail.
func (r *Router) Complete(ctx context.Context, model config.Model, body json.RawMessage) (*Response, error) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil || req == nil {
		return nil, invalidRequest("", "request body must be a JSON object")
	}
	delete(req, "stream")
	delete(req, "stream_options")
	if len(model.Deployments) == 0 {
		return nil, fmt.Errorf("llm: model %q has no deployments", model.Name)
	}
	var attempts []*Error
	var last error
	for i, d := range model.Deployments {
		p, ok := r.providers[d.Provider]
		if !ok {
			// Validate prevents this; a config edited after NewRouter could not.
			return nil, fmt.Errorf("llm: model %q deployment %d: unknown provider %q", model.Name, i, d.Provider)
		}
		upstream, err := withModel(req, d.Model)
		if err != nil {
			return nil, fmt.Errorf("llm: model %q: %w", model.Name, err)
		}
		resp, err := p.ChatCompletion(ctx, d.Model, upstream)
		if err == nil {
			if resp.Provider == "" {
				resp.Provider = d.Provider
			}
			if resp.UpstreamModel == "" {
				resp.UpstreamModel = d.Model
			}
			resp.Attempts = attempts
			return resp, nil
		}
		last = err
		var le *Error
		if !errors.As(err, &le) || !le.Retryable || ctx.Err() != nil {
			return nil, err
		}
		attempts = append(attempts, le)
		if i < len(model.Deployments)-1 {
			r.logger.WarnContext(ctx, "llm deployment failed, falling back",
				"model", model.Name, "provider", d.Provider, "upstream_model", d.Model,
				"status", le.Status, "upstream_status", le.UpstreamStatus, "type", le.Type, "error", le.Message)
		}
	}
	return nil, last
}

// withModel returns the request with "model" set to upstreamModel.
func withModel(req map[string]json.RawMessage, upstreamModel string) (json.RawMessage, error) {
	m, err := json.Marshal(upstreamModel)
	if err != nil {
		return nil, fmt.Errorf("encode model name: %w", err)
	}
	req["model"] = m
	// No HTML escaping: the client's text reaches the provider as written.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
