package callbacks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/completion/jobs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// Config configures a Dispatcher.
type Config struct {
	Service *commands.Service
	// Pool holds the jobs read model (where pending callbacks are found)
	// and the callback leases.
	Pool *pgxpool.Pool
	// Render returns the body sent for a finished job: the job JSON as
	// GET /v1/jobs/{id} shows it.
	Render func(completion.Completion) ([]byte, error)
	// Secret keys the HMAC signature (TOLLGATE_CALLBACK_SECRET).
	Secret []byte
	// Instance names this dispatcher in leases and events' actor.
	Instance string
	// AllowPrivateNetworks lets callbacks reach every address, also those
	// CheckAddress refuses (loopback, private, link-local, shared, …).
	// Off by default: a client must not be able to make Tollgate call
	// into its own network.
	AllowPrivateNetworks bool
	// Lookup resolves callback hosts (tests); the system resolver when nil.
	Lookup Lookup
	// MaxAttempts per callback; default 8.
	MaxAttempts int
	// InitialBackoff is the wait after the first failed attempt, doubled
	// after each next one up to MaxBackoff; defaults 2s and 5m.
	InitialBackoff, MaxBackoff time.Duration
	// Timeout bounds one attempt (connect to last byte); default 10s.
	Timeout time.Duration
	// Interval is the time between looks for pending callbacks; default 2s.
	Interval time.Duration
	// Concurrency bounds the callbacks sent at once; default 16.
	Concurrency int
	// Client overrides the HTTP client (tests); built from the settings
	// above when nil.
	Client *http.Client
	// Sleep waits between attempts; a timer honouring ctx when nil.
	Sleep    func(ctx context.Context, d time.Duration) error
	Now      func() time.Time
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 8
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = 2 * time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Interval == 0 {
		c.Interval = 2 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Client == nil {
		c.Client = NewClientWithLookup(c.Timeout, c.AllowPrivateNetworks, c.Lookup)
	}
}

// Validate reports a missing dependency or a bad setting.
func (c *Config) Validate() error {
	switch {
	case c.Service == nil || c.Pool == nil || c.Render == nil:
		return errors.New("callbacks: Service, Pool and Render are required")
	case len(c.Secret) < 16:
		return errors.New("callbacks: Secret must be at least 16 bytes")
	case c.Instance == "":
		return errors.New("callbacks: Instance is required")
	case c.MaxAttempts < 1 || c.InitialBackoff <= 0 || c.MaxBackoff < c.InitialBackoff || c.Timeout <= 0 || c.Interval <= 0 || c.Concurrency < 1:
		return errors.New("callbacks: MaxAttempts, backoffs, Timeout, Interval and Concurrency must be positive, MaxBackoff >= InitialBackoff")
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Lookup resolves a host name to the addresses a callback may be dialled
// at; net.DefaultResolver.LookupNetIP's "ip" lookup when nil. Tests map
// names to loopback addresses with it.
type Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

// NewClient returns the callback HTTP client: every attempt bounded by
// timeout, no redirects followed (a 3xx is a failed attempt), no proxy
// from the environment, and, unless allowPrivate, no connection to an
// address CheckAddress refuses — checked on the address actually dialled,
// so DNS cannot smuggle one in.
func NewClient(timeout time.Duration, allowPrivate bool) *http.Client {
	return NewClientWithLookup(timeout, allowPrivate, nil)
}

// NewClientWithLookup is NewClient resolving names with lookup.
func NewClientWithLookup(timeout time.Duration, allowPrivate bool, lookup Lookup) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%s: %w", address, ErrForbiddenAddress)
			}
			return CheckAddress(ap.Addr())
		}
	}
	dial := dialer.DialContext
	if lookup != nil {
		dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			if _, perr := netip.ParseAddr(host); perr == nil {
				return dialer.DialContext(ctx, network, address)
			}
			addrs, err := lookup(ctx, host)
			if err != nil {
				return nil, &net.DNSError{Err: err.Error(), Name: host, IsNotFound: true}
			}
			var errs []error
			for _, a := range addrs {
				c, err := dialer.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
				if err == nil {
					return c, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(append(errs, fmt.Errorf("%s: no address could be dialled", host))...)
		}
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:           dial,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Dispatcher sends pending callbacks. Several may run (one per worker
// process): a lease row per callback keeps two from sending the same one
// at once, and the outcome event is decided on the completion's stream,
// so a completion gets one outcome.
type Dispatcher struct {
	cfg      Config
	outcomes *prometheus.CounterVec
	retries  prometheus.Counter
	inflight sync.Map // completion id → struct{}: sends running in this process
}

// NewDispatcher returns a Dispatcher.
func NewDispatcher(cfg Config) (*Dispatcher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg: cfg,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_callbacks_total",
			Help: "Job callbacks by outcome (delivered, failed).",
		}, []string{"outcome"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_callback_retries_total",
			Help: "Callback attempts after a failed one.",
		}),
	}
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{d.outcomes, d.retries} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("callbacks: register metrics: %w", err)
			}
		}
	}
	return d, nil
}

// Run looks for pending callbacks every Interval and sends them, until ctx
// ends; then it waits for the sends under way.
func (d *Dispatcher) Run(ctx context.Context) error {
	slots := make(chan struct{}, d.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		ids, err := jobs.PendingCallbacks(ctx, d.cfg.Pool, 4*d.cfg.Concurrency)
		if err != nil && ctx.Err() == nil {
			d.cfg.Logger.Error("pending callbacks", "error", err)
		}
		for _, id := range ids {
			if _, busy := d.inflight.LoadOrStore(id, struct{}{}); busy {
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				d.inflight.Delete(id)
				return ctx.Err()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots; d.inflight.Delete(id) }()
				if _, err := d.Send(ctx, id); err != nil && ctx.Err() == nil {
					d.cfg.Logger.Error("callback", "completion_id", id, "error", err)
				}
			}()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Outcome is what Send did.
type Outcome string

// Outcomes of Send.
const (
	// Skipped: nothing to send (no callback, not finished, an outcome is
	// recorded, or another dispatcher holds the lease).
	Skipped   Outcome = "skipped"
	Delivered Outcome = "delivered"
	Failed    Outcome = "failed"
)

// Send delivers one completion's callback, retrying with backoff, and
// records the outcome.
func (d *Dispatcher) Send(ctx context.Context, completionID string) (Outcome, error) {
	c, err := d.cfg.Service.Completion(ctx, completionID)
	if err != nil {
		return Skipped, err
	}
	if !c.Finished() || c.CallbackURL == "" || c.CallbackDelivered != nil || c.CallbackFailed != nil {
		return Skipped, nil
	}
	ok, err := d.lease(ctx, completionID)
	if err != nil || !ok {
		return Skipped, err
	}
	defer d.unlease(completionID)
	// Read again under the lease: another dispatcher may have recorded an
	// outcome between the first read and the lease.
	if c, err = d.cfg.Service.Completion(ctx, completionID); err != nil {
		return Skipped, err
	}
	if c.CallbackDelivered != nil || c.CallbackFailed != nil {
		return Skipped, nil
	}
	md := events.Metadata{CorrelationID: "callback_" + completionID, Actor: "callbacks:" + d.cfg.Instance}
	var cmd completion.RecordCallback
	if err := CheckURL(c.CallbackURL, d.cfg.AllowPrivateNetworks); err != nil {
		// Validated at the edge; this guards older or foreign events.
		cmd.Failed = &events.CompletionCallbackFailed{Attempts: 1, Error: err.Error()}
	} else {
		body, err := d.cfg.Render(c)
		if err != nil {
			return Skipped, fmt.Errorf("render job %s: %w", completionID, err)
		}
		cmd = d.deliver(ctx, c, body)
		if ctx.Err() != nil {
			// Stopped mid-way: not an outcome; the next run sends again.
			return Skipped, ctx.Err()
		}
	}
	_, err = d.cfg.Service.RecordCallback(context.WithoutCancel(ctx), md, completionID, cmd)
	if errors.Is(err, domainerr.ErrAlreadyExists) || errors.Is(err, events.ErrConflict) {
		return Skipped, nil
	}
	if err != nil {
		return Skipped, fmt.Errorf("record callback of %s: %w", completionID, err)
	}
	if cmd.Delivered != nil {
		d.outcomes.WithLabelValues(string(Delivered)).Inc()
		return Delivered, nil
	}
	d.outcomes.WithLabelValues(string(Failed)).Inc()
	d.cfg.Logger.Warn("callback failed", "completion_id", completionID, "attempts", cmd.Failed.Attempts,
		"status", cmd.Failed.Status, "error", cmd.Failed.Error)
	return Failed, nil
}

// deliver makes the attempts and returns the outcome to record.
func (d *Dispatcher) deliver(ctx context.Context, c completion.Completion, body []byte) completion.RecordCallback {
	var status int
	var lastErr string
	backoff := d.cfg.InitialBackoff
	for attempt := 1; ; attempt++ {
		var retry bool
		status, retry, lastErr = d.attempt(ctx, c, body)
		if lastErr == "" {
			return completion.RecordCallback{Delivered: &events.CompletionCallbackDelivered{Status: status, Attempts: attempt}}
		}
		if !retry || attempt >= d.cfg.MaxAttempts || ctx.Err() != nil {
			return completion.RecordCallback{Failed: &events.CompletionCallbackFailed{Status: status, Attempts: attempt, Error: lastErr}}
		}
		if err := d.cfg.Sleep(ctx, backoff); err != nil {
			return completion.RecordCallback{Failed: &events.CompletionCallbackFailed{Status: status, Attempts: attempt, Error: lastErr}}
		}
		d.retries.Inc()
		backoff = min(2*backoff, d.cfg.MaxBackoff)
	}
}

// attempt posts once. It returns the status (0 without an answer),
// whether a failure is worth retrying, and "" on success or the error.
// A 4xx other than 408 and 429 is the receiver refusing this body, so it
// is final; everything else (5xx, 408, 429, 3xx, no answer) is retried.
func (d *Dispatcher) attempt(ctx context.Context, c completion.Completion, body []byte) (int, bool, string) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.CallbackURL, bytes.NewReader(body))
	if err != nil {
		return 0, false, "bad callback URL: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Tollgate-Callbacks/1")
	req.Header.Set(JobIDHeader, c.ID)
	req.Header.Set(SignatureHeader, Sign(d.cfg.Secret, d.cfg.Now(), body))
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		if errors.Is(err, ErrForbiddenAddress) {
			return 0, false, forbiddenReason(err)
		}
		return 0, true, "no answer: " + errorClass(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return resp.StatusCode, false, ""
	}
	final := resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests
	return resp.StatusCode, !final, "receiver answered " + strconv.Itoa(resp.StatusCode)
}

// errorClass names a transport error without echoing URLs or bodies.
func errorClass(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	default:
		var oe *net.OpError
		if errors.As(err, &oe) {
			return "connection error: " + oe.Op
		}
		return "transport error"
	}
}

// leaseFor is how long one dispatcher may hold a callback: the whole retry
// schedule with every attempt timing out, plus a minute.
func (d *Dispatcher) leaseFor() time.Duration {
	total, b := time.Minute, d.cfg.InitialBackoff
	for range d.cfg.MaxAttempts {
		total += d.cfg.Timeout + b
		b = min(2*b, d.cfg.MaxBackoff)
	}
	return total
}

// lease takes the callback's lease if it is free or expired: a short
// statement, so no connection is held while the callback is sent.
func (d *Dispatcher) lease(ctx context.Context, id string) (bool, error) {
	now := d.cfg.Now()
	tag, err := d.cfg.Pool.Exec(ctx, `INSERT INTO callback_leases (completion_id, holder, until) VALUES ($1, $2, $3)
		ON CONFLICT (completion_id) DO UPDATE SET holder = excluded.holder, until = excluded.until
		WHERE callback_leases.until < $4`, id, d.cfg.Instance, now.Add(d.leaseFor()), now)
	if err != nil {
		return false, fmt.Errorf("lease callback of %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// unlease frees the lease once the outcome is stored (or the send was
// given up), so another dispatcher need not wait for it to expire.
func (d *Dispatcher) unlease(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.cfg.Pool.Exec(ctx, `DELETE FROM callback_leases WHERE completion_id = $1 AND holder = $2`, id, d.cfg.Instance); err != nil {
		d.cfg.Logger.Warn("free callback lease", "completion_id", id, "error", err)
	}
}
