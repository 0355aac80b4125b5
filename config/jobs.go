package config

import "time"

// Defaults of the jobs section.
const (
	DefaultClaimLease             = 10 * time.Minute
	DefaultReaperInterval         = 30 * time.Second
	DefaultLongPollMax            = 60 * time.Second
	DefaultCallbackMaxAttempts    = 8
	DefaultCallbackInitialBackoff = 2 * time.Second
	DefaultCallbackMaxBackoff     = 5 * time.Minute
	DefaultCallbackTimeout        = 10 * time.Second
	DefaultMaxRetries             = 2
	DefaultInlineClaimAfter       = 30 * time.Second
	// MinCallbackSecret is the shortest TOLLGATE_CALLBACK_SECRET accepted.
	MinCallbackSecret = 16
)

// What the reaper does with a job whose claim's lease expired
// (Jobs.OnExpiredLease).
const (
	// OnExpiredAbandon ends it with completion.abandoned (the default).
	OnExpiredAbandon = "abandon"
	// OnExpiredRetry requeues a queued (async) job up to MaxRetries times
	// (completion.requeued); a synchronous one is still abandoned.
	OnExpiredRetry = "retry"
)

// reservationMargin is what a reservation must outlive the last retry's
// lease by: the reaper's interval is added per run, this once, for the
// queue's own delay.
const reservationMargin = 5 * time.Minute

// Jobs configures background jobs: claims and their reaper, long polls
// and result callbacks.
type Jobs struct {
	// Lease is how long an executor's claim is valid; past it the reaper
	// ends the request as abandoned. It must outlast the slowest provider
	// call with its retries. Default 10m.
	Lease Duration `yaml:"lease"`
	// ReaperInterval is the time between reaper passes; default 30s.
	ReaperInterval Duration `yaml:"reaper_interval"`
	// InlineClaimAfter is how long a synchronous request runs before its
	// request and claim are stored on their own; a shorter one stores
	// them with its outcome, in one append. Default 30s (a tenth of a
	// lease shorter than 5m); under a third of the lease.
	InlineClaimAfter Duration `yaml:"inline_claim_after"`
	// LongPollMax bounds GET /v1/jobs/{id}?wait=; default 60s.
	LongPollMax Duration `yaml:"long_poll_max"`
	// OnExpiredLease is what the reaper does with a job whose executor's
	// lease expired: "abandon" (default) ends it; "retry" sends a queued
	// (async) job back to the queue, up to MaxRetries times, and abandons
	// it at the expiry after that. A synchronous request is always
	// abandoned: the client's connection died with its API instance, so
	// no one would receive a retry's answer (a client that got the job id
	// at the response deadline reads the abandonment there).
	OnExpiredLease string `yaml:"on_expired_lease"`
	// MaxRetries is how many times a job may be requeued under
	// OnExpiredLease "retry"; default 2 (0 means the default: use
	// "abandon" for none).
	MaxRetries int `yaml:"max_retries"`
	// Callbacks configures result callbacks.
	Callbacks Callbacks `yaml:"callbacks"`
}

// Retry reports whether expired claims of queued jobs are requeued.
func (j Jobs) Retry() bool { return j.OnExpiredLease == OnExpiredRetry }

// MinReservationTTL is the shortest quota reservation TTL that keeps a
// job's budget reserved through every run the retry policy allows: each
// run holds a lease and may wait a reaper interval to be requeued, plus a
// margin for the queue. Under "abandon" it is 0 (no constraint beyond
// quota's own default, which already outlasts the default lease).
func (j Jobs) MinReservationTTL() time.Duration {
	if !j.Retry() {
		return 0
	}
	return time.Duration(j.MaxRetries+1)*(j.Lease.D()+j.ReaperInterval.D()) + reservationMargin
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

func (j *Jobs) setDefaults() {
	setDuration(&j.Lease, DefaultClaimLease)
	setDuration(&j.ReaperInterval, DefaultReaperInterval)
	setDuration(&j.InlineClaimAfter, min(DefaultInlineClaimAfter, j.Lease.D()/10))
	setDuration(&j.LongPollMax, DefaultLongPollMax)
	setDuration(&j.Callbacks.InitialBackoff, DefaultCallbackInitialBackoff)
	setDuration(&j.Callbacks.MaxBackoff, DefaultCallbackMaxBackoff)
	setDuration(&j.Callbacks.Timeout, DefaultCallbackTimeout)
	if j.Callbacks.MaxAttempts == 0 {
		j.Callbacks.MaxAttempts = DefaultCallbackMaxAttempts
	}
	if j.OnExpiredLease == "" {
		j.OnExpiredLease = OnExpiredAbandon
	}
	if j.MaxRetries == 0 {
		j.MaxRetries = DefaultMaxRetries
	}
}

// validate checks the jobs section, and that the quota's reservations
// outlast the retries it allows.
func (j Jobs) validate(q Quota, bad *problems) {
	if j.Lease.D() < time.Second {
		bad.add("jobs.lease", "must be at least 1s, got %s", j.Lease.D())
	}
	if d := j.InlineClaimAfter.D(); d < 10*time.Millisecond || d >= j.Lease.D()/3 {
		bad.add("jobs.inline_claim_after", "must be at least 10ms and under a third of jobs.lease (%s), got %s", j.Lease.D()/3, d)
	}
	if j.ReaperInterval.D() < 100*time.Millisecond {
		bad.add("jobs.reaper_interval", "must be at least 100ms, got %s", j.ReaperInterval.D())
	}
	if j.LongPollMax.D() < time.Second || j.LongPollMax.D() > 10*time.Minute {
		bad.add("jobs.long_poll_max", "must be from 1s to 10m, got %s", j.LongPollMax.D())
	}
	switch j.OnExpiredLease {
	case OnExpiredAbandon, OnExpiredRetry:
	default:
		bad.add("jobs.on_expired_lease", "must be %q or %q, got %q", OnExpiredAbandon, OnExpiredRetry, j.OnExpiredLease)
	}
	if j.MaxRetries < 1 || j.MaxRetries > 10 {
		bad.add("jobs.max_retries", "must be from 1 to 10, got %d", j.MaxRetries)
	}
	// A retry runs on the request's budget reservation: were it to expire
	// first, the limiter would admit other requests against budget the
	// retry is about to spend.
	if need := j.MinReservationTTL(); need > 0 && q.ReservationTTL.D() < need {
		bad.add("quota.reservation_ttl", "must be at least %s with jobs.on_expired_lease %q ((max_retries+1) × (lease+reaper_interval) + %s), got %s",
			need, OnExpiredRetry, reservationMargin, q.ReservationTTL.D())
	}
	j.Callbacks.validate(bad)
}

func (cb Callbacks) validate(bad *problems) {
	if cb.MaxAttempts < 1 || cb.MaxAttempts > 50 {
		bad.add("jobs.callbacks.max_attempts", "must be from 1 to 50, got %d", cb.MaxAttempts)
	}
	if cb.InitialBackoff <= 0 {
		bad.add("jobs.callbacks.initial_backoff", "must be positive, got %s", cb.InitialBackoff.D())
	}
	if cb.MaxBackoff < cb.InitialBackoff {
		bad.add("jobs.callbacks.max_backoff", "must be at least initial_backoff (%s), got %s", cb.InitialBackoff.D(), cb.MaxBackoff.D())
	}
	if cb.Timeout <= 0 || cb.Timeout.D() > 5*time.Minute {
		bad.add("jobs.callbacks.timeout", "must be positive and at most 5m, got %s", cb.Timeout.D())
	}
}
