package stripe

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// responseInfoKey keys a *responseInfo in a Stripe request's context.
type responseInfoKey struct{}

// responseInfo is what the reporter needs of Stripe's last HTTP answer to a
// call and stripe-go's *stripe.Error does not carry: the headers telling
// whether and when to retry.
type responseInfo struct {
	mu          sync.Mutex
	status      int
	retryAfter  string
	shouldRetry string
}

func (i *responseInfo) get() (status int, retryAfter, shouldRetry string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.status, i.retryAfter, i.shouldRetry
}

// headerTransport records, for requests whose context carries a
// *responseInfo, the status and retry headers of the response (the last
// one, when stripe-go retried).
type headerTransport struct{ next http.RoundTripper }

func (t headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if info, ok := req.Context().Value(responseInfoKey{}).(*responseInfo); ok && resp != nil {
		info.mu.Lock()
		info.status = resp.StatusCode
		info.retryAfter = resp.Header.Get("Retry-After")
		info.shouldRetry = resp.Header.Get("Stripe-Should-Retry")
		info.mu.Unlock()
	}
	return resp, err
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP
// date (RFC 9110 §10.2.3). ok is false when it is absent or unreadable.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// pacer spaces calls evenly at a rate (a token bucket of depth one, kept
// as the time the next call may start), so the reporter stays under
// Stripe's rate limit however many records are due.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newPacer(perSecond float64) *pacer {
	return &pacer{interval: time.Duration(float64(time.Second) / perSecond)}
}

// reserve takes the next slot at or after now and returns how long to wait
// for it.
func (p *pacer) reserve(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next.Before(now) {
		p.next = now
	}
	wait := p.next.Sub(now)
	p.next = p.next.Add(p.interval)
	return wait
}

// keyedLocks holds one lock per key (customer and meter), so that at most
// one Stripe call per key is in flight whoever calls; a key's entry lives
// only while someone holds or waits for it.
type keyedLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	sem  chan struct{}
	refs int
}

// lock waits for key's lock, or for ctx to end. The returned func unlocks.
func (k *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l, ok := k.locks[key]
	if !ok {
		l = &keyLock{sem: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.sem <- struct{}{}:
		return func() { <-l.sem; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryAfterError carries how long Stripe asked the reporter to wait when
// that was longer than it waits within a pass; Run waits at least that long.
type retryAfterError struct {
	wait time.Duration
	err  error
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// longestRetryAfter returns the longest wait any retryAfterError in err asks for.
func longestRetryAfter(err error) time.Duration {
	var longest time.Duration
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		var ra *retryAfterError
		if errors.As(err, &ra) {
			longest = max(longest, ra.wait)
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return longest
}
