package config

import "time"

// Routing defaults.
const (
	// DefaultMaxAttempts bounds the provider calls of one request (first try,
	// fallbacks and retries together).
	DefaultMaxAttempts = 3
	// DefaultBaseBackoff is the backoff before the first retry round.
	DefaultBaseBackoff = 250 * time.Millisecond
	// DefaultMaxBackoff caps the exponential backoff between retry rounds.
	DefaultMaxBackoff = 8 * time.Second
	// DefaultDeadline bounds one request's routing: every attempt and backoff.
	DefaultDeadline = 5 * time.Minute
	// DefaultCooldownFailures is how many consecutive failures open a deployment's circuit.
	DefaultCooldownFailures = 3
	// DefaultCooldownDuration is how long an open deployment is skipped before one probe request.
	DefaultCooldownDuration = 30 * time.Second
)

// Routing is the retry, fallback and cooldown policy (see package llm).
type Routing struct {
	// MaxAttempts bounds the provider calls of one request, first try,
	// fallbacks and retries together; default 3.
	MaxAttempts int `yaml:"max_attempts"`
	// BaseBackoff is the backoff before the first retry round (after every
	// deployment failed once); it doubles each round, with full jitter; default 250ms.
	BaseBackoff Duration `yaml:"base_backoff"`
	// MaxBackoff caps the backoff; default 8s. A provider's Retry-After is
	// honoured even when longer, as long as it ends before the deadline.
	MaxBackoff Duration `yaml:"max_backoff"`
	// Deadline bounds one request's attempts and backoffs together; default 5m.
	// For a stream it bounds the time until the stream is established.
	Deadline Duration `yaml:"deadline"`
	// Cooldown is the per-deployment circuit breaker.
	Cooldown Cooldown `yaml:"cooldown"`
}

// Cooldown is the per-deployment circuit breaker policy.
type Cooldown struct {
	// Failures is how many consecutive failed attempts (429, 5xx, timeouts,
	// connection errors, rejected provider credentials) open the circuit; default 3.
	Failures int `yaml:"failures"`
	// Duration is how long an open deployment is skipped; afterwards one
	// probe request is let through (half-open): success closes the circuit,
	// failure opens it again. Default 30s.
	Duration Duration `yaml:"duration"`
}

// WithDefaults returns r with every unset field set to its default, for
// configs built in code rather than loaded.
func (r Routing) WithDefaults() Routing {
	if r.MaxAttempts == 0 {
		r.MaxAttempts = DefaultMaxAttempts
	}
	if r.BaseBackoff == 0 {
		r.BaseBackoff = Duration(DefaultBaseBackoff)
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = Duration(DefaultMaxBackoff)
	}
	if r.Deadline == 0 {
		r.Deadline = Duration(DefaultDeadline)
	}
	if r.Cooldown.Failures == 0 {
		r.Cooldown.Failures = DefaultCooldownFailures
	}
	if r.Cooldown.Duration == 0 {
		r.Cooldown.Duration = Duration(DefaultCooldownDuration)
	}
	return r
}

func (r Routing) validate(bad *problems) {
	if r.MaxAttempts < 1 {
		bad.add("routing.max_attempts", "must be at least 1, got %d", r.MaxAttempts)
	}
	if r.BaseBackoff < 0 {
		bad.add("routing.base_backoff", "must not be negative, got %s", r.BaseBackoff.D())
	}
	if r.MaxBackoff < r.BaseBackoff {
		bad.add("routing.max_backoff", "must be at least base_backoff (%s), got %s", r.BaseBackoff.D(), r.MaxBackoff.D())
	}
	if r.Deadline <= 0 {
		bad.add("routing.deadline", "must be positive, got %s", r.Deadline.D())
	}
	if r.Cooldown.Failures < 1 {
		bad.add("routing.cooldown.failures", "must be at least 1, got %d", r.Cooldown.Failures)
	}
	if r.Cooldown.Duration <= 0 {
		bad.add("routing.cooldown.duration", "must be positive, got %s", r.Cooldown.Duration.D())
	}
}
