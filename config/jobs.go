package config

import (
	"fmt"
	"time"
)

// Defaults of the jobs section.
const (
	DefaultClaimLease             = 10 * time.Minute
	DefaultReaperInterval         = 30 * time.Second
	DefaultLongPollMax            = 60 * time.Second
	DefaultCallbackMaxAttempts    = 8
	DefaultCallbackInitialBackoff = 2 * time.Second
	DefaultCallbackMaxBackoff     = 5 * time.Minute
	DefaultCallbackTimeout        = 10 * time.Second
	// MinCallbackSecret is the shortest TOLLGATE_CALLBACK_SECRET accepted.
	MinCallbackSecret = 16
)

// Jobs configures background jobs: claims and their reaper, long polls
// and result callbacks.
type Jobs struct {
	// Lease is how long an executor's claim is valid; past it the reaper
	// ends the request as abandoned. It must outlast the slowest provider
	// call with its retries. Default 10m.
	Lease Duration `yaml:"lease"`
	// ReaperInterval is the time between reaper passes; default 30s.
	ReaperInterval Duration `yaml:"reaper_interval"`
	// LongPollMax bounds GET /v1/jobs/{id}?wait=; default 60s.
	LongPollMax Duration `yaml:"long_poll_max"`
	// Callbacks configures result callbacks.
	Callbacks Callbacks `yaml:"callbacks"`
}

// Callbacks configures the delivery of job results to callback URLs. The
// signing secret is TOLLGATE_CALLBACK_SECRET (Env.CallbackSecret).
type Callbacks struct {
	// MaxAttempts per callback; default 8.
	MaxAttempts int `yaml:"max_attempts"`
	// InitialBackoff is the wait after the first failed attempt, doubled
	// each time up to MaxBackoff; defaults 2s and 5m.
	InitialBackoff Duration `yaml:"initial_backoff"`
	MaxBackoff     Duration `yaml:"max_backoff"`
	// Timeout bounds one attempt; default 10s.
	Timeout Duration `yaml:"timeout"`
	// AllowPrivateNetworks lets callbacks reach loopback, private and
	// link-local addresses (development, tests). Default false.
	AllowPrivateNetworks bool `yaml:"allow_private_networks"`
}

func (j *Jobs) applyDefaults() {
	setDur := func(d *Duration, def time.Duration) {
		if *d == 0 {
			*d = Duration(def)
		}
	}
	setDur(&j.Lease, DefaultClaimLease)
	setDur(&j.ReaperInterval, DefaultReaperInterval)
	setDur(&j.LongPollMax, DefaultLongPollMax)
	setDur(&j.Callbacks.InitialBackoff, DefaultCallbackInitialBackoff)
	setDur(&j.Callbacks.MaxBackoff, DefaultCallbackMaxBackoff)
	setDur(&j.Callbacks.Timeout, DefaultCallbackTimeout)
	if j.Callbacks.MaxAttempts == 0 {
		j.Callbacks.MaxAttempts = DefaultCallbackMaxAttempts
	}
}

// validateJobs returns the problems of the jobs section and its secret.
func (c *Config) validateJobs() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	j := c.Jobs
	if j.Lease.D() < time.Second {
		bad("jobs.lease", "must be at least 1s, got %s", j.Lease.D())
	}
	if j.ReaperInterval.D() < 100*time.Millisecond {
		bad("jobs.reaper_interval", "must be at least 100ms, got %s", j.ReaperInterval.D())
	}
	if j.LongPollMax.D() < time.Second || j.LongPollMax.D() > 10*time.Minute {
		bad("jobs.long_poll_max", "must be from 1s to 10m, got %s", j.LongPollMax.D())
	}
	cb := j.Callbacks
	if cb.MaxAttempts < 1 || cb.MaxAttempts > 50 {
		bad("jobs.callbacks.max_attempts", "must be from 1 to 50, got %d", cb.MaxAttempts)
	}
	if cb.InitialBackoff <= 0 {
		bad("jobs.callbacks.initial_backoff", "must be positive, got %s", cb.InitialBackoff.D())
	}
	if cb.MaxBackoff < cb.InitialBackoff {
		bad("jobs.callbacks.max_backoff", "must be at least initial_backoff (%s), got %s", cb.InitialBackoff.D(), cb.MaxBackoff.D())
	}
	if cb.Timeout <= 0 || cb.Timeout.D() > 5*time.Minute {
		bad("jobs.callbacks.timeout", "must be positive and at most 5m, got %s", cb.Timeout.D())
	}
	if s := c.Env.CallbackSecret; s != "" && len(s) < MinCallbackSecret {
		bad("TOLLGATE_CALLBACK_SECRET", "must be at least %d characters", MinCallbackSecret)
	}
	return errs
}
