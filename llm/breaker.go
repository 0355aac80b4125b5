package llm

import (
	"sync"
	"time"
)

// Circuit states, also the values of the cooldown state gauge.
const (
	circuitClosed   = 0
	circuitOpen     = 1
	circuitHalfOpen = 2
)

// breaker is one deployment's circuit: it opens after `threshold`
// consecutive failed attempts, skips the deployment for `cooldown`, then
// lets exactly one probe through (half-open): the probe's success closes
// it, its failure opens it again for another cooldown.
type breaker struct {
	threshold int
	cooldown  time.Duration
	onState   func(state int)

	mu        sync.Mutex
	state     int
	failures  int
	openUntil time.Time
	probing   bool
	lastErr   *Error
	lastSeq   uint64
}

// admit reports whether an attempt may go to the deployment now, and
// whether it is the half-open probe (which must end in success, failure or
// release).
func (b *breaker) admit(now time.Time) (ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case circuitClosed:
		return true, false
	case circuitOpen:
		if now.Before(b.openUntil) {
			return false, false
		}
		b.setState(circuitHalfOpen)
	}
	if b.probing {
		return false, false // another request is probing
	}
	b.probing = true
	return true, true
}

// peek reports whether admit would let an attempt through now, without
// taking the probe.
func (b *breaker) peek(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case circuitClosed:
		return true
	case circuitOpen:
		return !now.Before(b.openUntil)
	default:
		return !b.probing
	}
}

// success records an attempt the deployment answered (a client error
// included: the upstream is up).
func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.probing = 0, false
	b.setState(circuitClosed)
}

// failure records a failed attempt and opens the circuit at the threshold,
// or at once when it was the half-open probe.
func (b *breaker) failure(err *Error, now time.Time, seq uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastErr, b.lastSeq = err, seq
	b.failures++
	if b.state == circuitHalfOpen || b.failures >= b.threshold {
		b.openUntil = now.Add(b.cooldown)
		b.probing = false
		b.setState(circuitOpen)
	}
}

// release gives back a probe whose attempt ended without a verdict (the
// caller went away): the next request probes instead.
func (b *breaker) release(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
}

// snapshot returns the last real failure and when the cooldown ends.
func (b *breaker) snapshot() (*Error, time.Time, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastErr, b.openUntil, b.failures
}

// lastFailure returns the last real failure and its sequence number.
func (b *breaker) lastFailure() (*Error, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastErr, b.lastSeq
}

func (b *breaker) setState(s int) {
	if b.state != s {
		b.state = s
		if b.onState != nil {
			b.onState(s)
		}
	}
}
