package handlers

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultOutageLogInterval is how often the log repeats that a dependency
// is unavailable while it stays so.
const DefaultOutageLogInterval = 10 * time.Second

// NewOutageLogHandler wraps next so that a dependency outage is logged
// once per interval, not once per request or retry: a warning or error
// record carrying an error that Unavailable recognises passes the first
// time its (level, message, dependency) is seen in an interval, with
// attributes dependency and suppressed (how many such records were dropped
// since the last one that passed); the others are counted and dropped.
// Every other record passes untouched. Loggers derived with With and
// WithGroup share the count. Wrapping a handler this returned returns it.
func NewOutageLogHandler(next slog.Handler, interval time.Duration, now func() time.Time) slog.Handler {
	if h, ok := next.(*outageHandler); ok {
		return h
	}
	if interval <= 0 {
		interval = DefaultOutageLogInterval
	}
	if now == nil {
		now = time.Now
	}
	return &outageHandler{next: next, st: &outageState{interval: interval, now: now, seen: map[outageKey]*outageEntry{}}}
}

type outageHandler struct {
	next slog.Handler
	st   *outageState
}

type outageKey struct {
	level   slog.Level
	message string
	dep     Dependency
}

type outageEntry struct {
	passed     time.Time
	suppressed int
}

type outageState struct {
	interval time.Duration
	now      func() time.Time
	mu       sync.Mutex
	seen     map[outageKey]*outageEntry
}

// maxOutageKeys bounds the state: messages are constants, so this is
// never reached but by a bug; then counting starts afresh.
const maxOutageKeys = 1024

func (h *outageHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *outageHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	dep, ok := recordDependency(r)
	if !ok {
		return h.next.Handle(ctx, r)
	}
	key := outageKey{level: r.Level, message: r.Message, dep: dep}
	st := h.st
	st.mu.Lock()
	now := st.now()
	e := st.seen[key]
	if e != nil && now.Sub(e.passed) < st.interval {
		e.suppressed++
		st.mu.Unlock()
		return nil
	}
	suppressed := 0
	if e != nil {
		suppressed = e.suppressed
	}
	if len(st.seen) >= maxOutageKeys {
		clear(st.seen)
	}
	st.seen[key] = &outageEntry{passed: now}
	st.mu.Unlock()
	r = r.Clone()
	r.AddAttrs(slog.String("dependency", string(dep)), slog.Int("suppressed", suppressed),
		slog.Duration("log_interval", st.interval))
	return h.next.Handle(ctx, r)
}

func (h *outageHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &outageHandler{next: h.next.WithAttrs(as), st: h.st}
}

func (h *outageHandler) WithGroup(name string) slog.Handler {
	return &outageHandler{next: h.next.WithGroup(name), st: h.st}
}

// recordDependency finds an error attribute that says a dependency is
// unavailable.
func recordDependency(r slog.Record) (Dependency, bool) {
	var dep Dependency
	var found bool
	var visit func(a slog.Attr) bool
	visit = func(a slog.Attr) bool {
		v := a.Value.Resolve()
		switch v.Kind() {
		case slog.KindGroup:
			for _, g := range v.Group() {
				if !visit(g) {
					return false
				}
			}
		case slog.KindAny:
			if err, ok := v.Any().(error); ok {
				if dep, found = Unavailable(err); found {
					return false
				}
			}
		}
		return true
	}
	r.Attrs(visit)
	return dep, found
}
