package stripetest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Request is one request that reached the Recorder.
type Request struct {
	Method string
	Path   string
	// Form is the decoded form body (Stripe's API is form-encoded), merged
	// with nothing from the query string.
	Form url.Values
	// Header is a copy of the request's headers (Idempotency-Key, …).
	Header http.Header
	// Status is the status the client got: stripe-mock's, an intercepted
	// one, or 502 when stripe-mock could not be reached.
	Status int
}

// Response is a canned answer returned by an interceptor instead of
// forwarding the request to stripe-mock.
type Response struct {
	Status int
	// Header is added to the response; Content-Type defaults to JSON.
	Header http.Header
	Body   string
}

// Interceptor decides whether to answer a request itself: it returns the
// response and true, or false to let the request through.
type Interceptor func(Request) (Response, bool)

// Recorder is a reverse proxy in front of stripe-mock that records every
// request, so tests can assert exactly what reached Stripe.
type Recorder struct {
	mu        sync.Mutex
	requests  []*Request
	intercept Interceptor
}

// NewRecorder starts a recording reverse proxy to target (a stripe-mock
// base URL) and returns the proxy's URL. The proxy is closed in t.Cleanup.
func NewRecorder(t testing.TB, target string) (string, *Recorder) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("stripetest: recorder target %q: %v", target, err)
	}
	rec := &Recorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if e, ok := resp.Request.Context().Value(entryKey{}).(*Request); ok {
			rec.setStatus(e, resp.StatusCode)
		}
		return nil
	}
	proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if e, ok := r.Context().Value(entryKey{}).(*Request); ok {
			rec.setStatus(e, http.StatusBadGateway)
		}
		http.Error(w, "stripetest: proxy: "+err.Error(), http.StatusBadGateway)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "stripetest: read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		_ = r.Body.Close()
		form, err := url.ParseQuery(string(body))
		if err != nil {
			form = url.Values{}
		}
		req := Request{Method: r.Method, Path: r.URL.Path, Form: form, Header: r.Header.Clone()}
		if resp, ok := rec.interceptor()(req); ok {
			req.Status = resp.Status
			rec.add(req)
			for k, vs := range resp.Header {
				for _, v := range vs {
					w.Header().Add(k, v)
				}
			}
			if w.Header().Get("Content-Type") == "" {
				w.Header().Set("Content-Type", "application/json")
			}
			w.WriteHeader(resp.Status)
			_, _ = io.WriteString(w, resp.Body)
			return
		}
		e := rec.add(req)
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), entryKey{}, e)))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, rec
}

// Intercept makes the recorder answer requests itself when f says so;
// nil lets every request through again.
func (r *Recorder) Intercept(f Interceptor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.intercept = f
}

// Requests returns the requests recorded so far, oldest first.
func (r *Recorder) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Request, len(r.requests))
	for i, e := range r.requests {
		out[i] = *e
	}
	return out
}

// RequestsTo returns the recorded requests with the given method and path.
func (r *Recorder) RequestsTo(method, path string) []Request {
	var out []Request
	for _, req := range r.Requests() {
		if req.Method == method && strings.TrimRight(req.Path, "/") == strings.TrimRight(path, "/") {
			out = append(out, req)
		}
	}
	return out
}

// Reset forgets the recorded requests.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

func (r *Recorder) interceptor() Interceptor {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.intercept == nil {
		return func(Request) (Response, bool) { return Response{}, false }
	}
	return r.intercept
}

// entryKey keys the recorded entry of a forwarded request in its context.
type entryKey struct{}

func (r *Recorder) add(req Request) *Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := &req
	r.requests = append(r.requests, e)
	return e
}

func (r *Recorder) setStatus(e *Request, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.Status = status
}
