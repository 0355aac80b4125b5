package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

// errAttemptTimeout is the cancellation cause of an attempt that ran past
// its provider's timeout (or, for a stream, went idle for that long).
var errAttemptTimeout = errors.New("attempt timed out")

// httpBase is what the HTTP providers share: the transport, the key, the
// per-attempt timeout and the mapping of HTTP failures to *Error.
type httpBase struct {
	name    string
	apiKey  string
	timeout time.Duration
	// transport makes the calls (the client's Transport; see newHTTPBase).
	transport http.RoundTripper
	now       func() time.Time
}

// newHTTPBase is p's transport: client's (nil: NewHTTPClient()), and p's
// timeout (unset: config.DefaultProviderTimeout).
//
// Only the client's Transport is used (http.DefaultTransport when nil):
// each call is bounded by its context, not by the client's Timeout, and a
// provider's redirect is not followed (http.Client would follow a 307 or
// 308 with the body and turn a POST into a GET on a 301 to 303) but
// answered as the misconfigured base_url it is (see statusError). Calling
// the transport also spares the client's copy of each request's headers
// and three frames on a stack that waits for the provider (handlers'
// runInline).
func newHTTPBase(p config.Provider, apiKey string, client *http.Client) httpBase {
	if client == nil {
		client = NewHTTPClient()
	}
	timeout := p.Timeout.D()
	if timeout <= 0 {
		timeout = config.DefaultProviderTimeout
	}
	var rt http.RoundTripper = http.DefaultTransport
	if client.Transport != nil {
		rt = client.Transport
	}
	return httpBase{name: p.Name, apiKey: apiKey, timeout: timeout, transport: rt, now: time.Now}
}

// providerHeaders are a provider's request headers, for a JSON answer and
// for a stream: built once from its auth headers and shared by all its
// requests, which never modify them (nor does a transport).
type providerHeaders struct {
	once         sync.Once
	json, stream http.Header
}

// get returns the headers, built with auth (called once) the first time.
func (h *providerHeaders) get(auth func() http.Header) (jsonHeader, streamHeader http.Header) {
	h.once.Do(func() {
		h.json, h.stream = auth(), auth()
		for _, x := range []http.Header{h.json, h.stream} {
			x.Set("Content-Type", "application/json")
		}
		h.json.Set("Accept", "application/json")
		h.stream.Set("Accept", "text/event-stream")
	})
	return h.json, h.stream
}

// attempt bounds one call by the provider timeout. The returned reset
// re-arms the timer (a stream's idle timeout); stop releases it.
func (b *httpBase) attempt(parent context.Context) (ctx context.Context, reset func(), stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	timer := time.AfterFunc(b.timeout, func() { cancel(errAttemptTimeout) })
	return ctx, func() { timer.Reset(b.timeout) }, func() { timer.Stop(); cancel(context.Canceled) }
}

// post sends body (JSON) with header (providerHeaders', never modified)
// and returns the response; a non-2xx response is read, closed and mapped
// with parseErr.
func (b *httpBase) post(parent, ctx context.Context, url string, header http.Header, body []byte, parseErr errorParser) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: b.name, Class: ClassClientError,
			Message: fmt.Sprintf("provider %q is misconfigured: %v", b.name, err)}
	}
	req.Header = header
	resp, err := b.transport.RoundTrip(req)
	if err != nil {
		return nil, b.transportError(parent, ctx, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return resp, nil
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		return nil, b.transportError(parent, ctx, err)
	}
	return nil, b.statusError(resp, raw, parseErr)
}

// readAll reads a 2xx body up to MaxResponseBytes.
func (b *httpBase) readAll(parent, ctx context.Context, resp *http.Response) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, b.transportError(parent, ctx, err)
	}
	if len(raw) > MaxResponseBytes {
		return nil, &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: b.name, Retryable: true, Class: ClassServerError,
			UpstreamStatus: resp.StatusCode, Message: fmt.Sprintf("provider %q returned a response larger than %d bytes", b.name, MaxResponseBytes)}
	}
	return raw, nil
}

// transportError maps a failure to get or read a response.
// parent is the caller's context, ctx the one bounded by the provider timeout.
func (b *httpBase) transportError(parent, ctx context.Context, err error) error {
	if parent.Err() != nil {
		// The caller gave up (client disconnected, shutdown, its own
		// deadline): not a provider failure, and no fallback should run.
		return fmt.Errorf("llm provider %q: %w", b.name, context.Cause(parent))
	}
	var ne net.Error
	if errors.Is(context.Cause(ctx), errAttemptTimeout) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &Error{Status: http.StatusGatewayTimeout, Type: openaiwire.TypeTimeout, Provider: b.name, Retryable: true, Class: ClassTimeout,
			Message: fmt.Sprintf("provider %q did not answer in time", b.name)}
	}
	// Connection refused, reset, DNS failure...: the provider is unreachable.
	// The Go error is not shown to clients: it names internal hosts.
	return &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: b.name, Retryable: true, Class: ClassConnection,
		Message: fmt.Sprintf("provider %q is unreachable", b.name)}
}

// errorParser extracts message, type and code from a provider's error body.
type errorParser func(raw []byte) (msg, typ, code string)

// statusError maps a non-2xx upstream response to an *Error.
func (b *httpBase) statusError(resp *http.Response, raw []byte, parse errorParser) *Error {
	status := resp.StatusCode
	msg, typ, code := parse(raw) // a non-JSON error body still maps by status
	msg = b.scrub(msg)
	e := &Error{Provider: b.name, UpstreamStatus: status, Code: code, RetryAfter: retryAfter(resp.Header, b.now())}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// The client's request was fine: it is Tollgate's key that the
		// provider rejected. Say so without echoing the provider's message,
		// which may quote part of the key. Another deployment may hold a
		// good key, so the Router falls back.
		e.Status, e.Type, e.Code, e.Retryable, e.Class = http.StatusBadGateway, openaiwire.TypeUpstream, "", true, ClassProviderAuth
		e.Message = fmt.Sprintf("provider %q rejected Tollgate's credentials (HTTP %d); the operator must fix the provider API key", b.name, status)
	case status == http.StatusTooManyRequests:
		// Provider rate limits are on Tollgate's account; their messages name
		// its organization, so they are not passed on.
		e.Status, e.Type, e.Retryable, e.Class = http.StatusTooManyRequests, openaiwire.TypeRateLimit, true, ClassRateLimited
		e.Message = fmt.Sprintf("provider %q is rate limiting requests; try again later", b.name)
	case status == http.StatusRequestTimeout:
		e.Status, e.Type, e.Retryable, e.Class = http.StatusGatewayTimeout, openaiwire.TypeTimeout, true, ClassTimeout
		e.Message = fmt.Sprintf("provider %q timed out (HTTP 408)", b.name)
	case status >= 500:
		// Includes Anthropic's 529 overloaded_error.
		e.Status, e.Type, e.Retryable, e.Class = http.StatusBadGateway, openaiwire.TypeUpstream, true, ClassServerError
		e.Message = fmt.Sprintf("provider %q failed (HTTP %d)", b.name, status)
		if msg != "" {
			e.Message += ": " + msg
		}
	case status >= 400:
		// A client error: the provider's own words are the most useful answer.
		e.Status, e.Type, e.Class = status, typ, ClassClientError
		if e.Type == "" {
			e.Type = openaiwire.TypeInvalidRequest
		}
		e.Message = msg
		if e.Message == "" {
			e.Message = fmt.Sprintf("provider %q rejected the request (HTTP %d %s)", b.name, status, http.StatusText(status))
		}
	default:
		// 1xx/3xx: redirects are not followed (see newHTTPBase), so
		// this is a misconfigured base_url.
		e.Status, e.Type, e.Class = http.StatusBadGateway, openaiwire.TypeUpstream, ClassServerError
		e.Message = fmt.Sprintf("provider %q answered with unexpected HTTP %d", b.name, status)
	}
	return e
}

// invalid is the error for a 2xx answer that is not what the API promises.
func (b *httpBase) invalid(status int, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadGateway, Type: openaiwire.TypeUpstream, Provider: b.name, Retryable: true, Class: ClassServerError,
		UpstreamStatus: status, Message: fmt.Sprintf("provider %q returned an invalid response: ", b.name) + fmt.Sprintf(format, args...)}
}

// scrub makes a provider message safe to show: never the API key, bounded length, valid UTF-8.
func (b *httpBase) scrub(msg string) string {
	if b.apiKey != "" {
		msg = strings.ReplaceAll(msg, b.apiKey, "[redacted]")
	}
	msg = strings.ToValidUTF8(msg, "")
	if len(msg) > maxErrorMessage {
		cut := maxErrorMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

// maxRetryAfter caps a Retry-After header so a broken provider cannot park
// a deployment for days; the cooldown handles long outages.
const maxRetryAfter = time.Hour

// retryAfter reads Retry-After (delay-seconds or an HTTP date) and the
// retry-after-ms header some OpenAI-compatible servers send; 0 = none.
func retryAfter(h http.Header, now time.Time) time.Duration {
	var d time.Duration
	if ms := strings.TrimSpace(h.Get("Retry-After-Ms")); ms != "" {
		if v, err := strconv.ParseFloat(ms, 64); err == nil && v > 0 {
			d = time.Duration(v * float64(time.Millisecond))
		}
	}
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" && d == 0 {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
			if secs > 0 {
				d = time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
			}
		} else if t, err := http.ParseTime(v); err == nil && t.After(now) {
			d = t.Sub(now)
		}
	}
	return min(d, maxRetryAfter)
}

// openAIErrorBody parses OpenAI's {"error":{"message","type","code"}}.
func openAIErrorBody(raw []byte) (msg, typ, code string) {
	var body openaiwire.ProviderError
	_ = json.Unmarshal(raw, &body) // a body that is not one still maps by status
	if body.Error == nil {
		return "", "", ""
	}
	return body.Error.Message, body.Error.Type, openaiwire.CodeText(body.Error.Code)
}
