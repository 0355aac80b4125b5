package llm

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tollgate/tollgate/config"
)

// maxTokensRequirer is a provider that needs max_tokens in every request.
type maxTokensRequirer interface{ requiresMaxTokens() bool }

// upstreamBody is the request for one deployment: "model" set to its
// upstream model and, for providers that require max_tokens, the model's
// max_output_tokens when the client set no limit.
func upstreamBody(req map[string]json.RawMessage, model config.Model, c candidate) (json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(req)+1)
	for k, v := range req {
		out[k] = v
	}
	m, err := json.Marshal(c.dep.Model)
	if err != nil {
		return nil, fmt.Errorf("encode model name: %w", err)
	}
	out["model"] = m
	clampOutputLimits(out, model.MaxOutputTokens)
	if mr, ok := c.prov.(maxTokensRequirer); ok && mr.requiresMaxTokens() && model.MaxOutputTokens > 0 {
		_, a := out["max_tokens"]
		_, b := out["max_completion_tokens"]
		if !a && !b {
			out["max_tokens"], _ = json.Marshal(model.MaxOutputTokens)
		}
	}
	return encodeJSON(out)
}

// clampOutputLimits keeps the provider within what admission reserved
// for (quota.WorstCase): max_completion_tokens, else max_tokens, capped by
// the model's max_output_tokens. A client's limit above that cap — or,
// with both fields set, the one the reservation did not count — is
// lowered to it, so whichever field a provider honours, a completion
// cannot cost more than its reservation.
func clampOutputLimits(req map[string]json.RawMessage, modelCap int64) {
	limit := func(field string) int64 {
		var n int64
		if raw, ok := req[field]; !ok || json.Unmarshal(raw, &n) != nil {
			return 0
		}
		return n
	}
	reserved := limit("max_completion_tokens")
	if reserved <= 0 {
		reserved = limit("max_tokens")
	}
	if modelCap > 0 && (reserved <= 0 || reserved > modelCap) {
		reserved = modelCap
	}
	if reserved <= 0 {
		return
	}
	for _, field := range []string{"max_completion_tokens", "max_tokens"} {
		if limit(field) > reserved {
			req[field], _ = json.Marshal(reserved)
		}
	}
}

// encodeJSON marshals v without HTML escaping, so the client's text reaches
// the provider as written.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
