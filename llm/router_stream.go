package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"time"

	"github.com/tollgate/tollgate/config"
)

// firstTokenAter is implemented by the providers' streams.
type firstTokenAter interface{ firstTokenAt() time.Time }

// routedStream is the Stream Router.Stream returns: the established
// provider stream plus the attempts before it, metrics and the breaker.
type routedStream struct {
	Stream
	r        *Router
	ctx      context.Context
	cancel   context.CancelCauseFunc
	model    string
	dep      config.Deployment
	start    time.Time
	first    json.RawMessage
	attempts []*Error
	br       *breaker
	ended    bool
	ttftSeen bool
}

// Next implements Stream.
func (s *routedStream) Next() (json.RawMessage, error) {
	if s.first != nil {
		c := s.first
		s.first = nil
		s.observeTTFT()
		return c, nil
	}
	if s.ended {
		return s.Stream.Next()
	}
	c, err := s.Stream.Next()
	s.observeTTFT()
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, io.EOF):
		s.end("success")
	case s.ctx.Err() != nil:
		s.end("canceled")
	default:
		var le *Error
		if errors.As(err, &le) {
			annotate(le, s.dep, s.r.now().Sub(s.start))
			s.br.failure(le, s.r.now(), s.r.failureSeq.Add(1))
			s.r.metrics.attempts.WithLabelValues(s.model, s.dep.Provider, s.dep.Model, le.Class).Inc()
		}
		s.end("error")
	}
	return nil, err
}

func (s *routedStream) observeTTFT() {
	if s.ttftSeen {
		return
	}
	if d := s.TimeToFirstToken(); d > 0 {
		s.ttftSeen = true
		s.r.metrics.ttft.WithLabelValues(s.model, s.dep.Provider, s.dep.Model).Observe(d.Seconds())
	}
}

func (s *routedStream) end(outcome string) {
	if s.ended {
		return
	}
	s.ended = true
	s.r.metrics.requests.WithLabelValues(s.model, s.dep.Provider, s.dep.Model, outcome).Inc()
}

// TimeToFirstToken implements Stream, measured from the start of Router.Stream.
func (s *routedStream) TimeToFirstToken() time.Duration {
	f, ok := s.Stream.(firstTokenAter)
	if !ok {
		return s.Stream.TimeToFirstToken()
	}
	at := f.firstTokenAt()
	if at.IsZero() {
		return 0
	}
	return max(at.Sub(s.start), time.Nanosecond)
}

// Attempts implements Stream.
func (s *routedStream) Attempts() []*Error { return s.attempts }

// Close implements Stream: it cancels the upstream call.
func (s *routedStream) Close() error {
	s.end("canceled")
	s.first = nil
	s.cancel(context.Canceled)
	return s.Stream.Close()
}
