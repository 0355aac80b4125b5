// Package outbox relays the event store to the bus. The events table is the
// outbox: the Relay follows the store's global order from its checkpoint,
// publishes each batch in order and then saves the checkpoint. A crash
// between the two re-publishes the batch (delivery is at least once, and
// consumers are idempotent by event id), and nothing committed is ever
// skipped or lost; nothing uncommitted is ever published, because the store
// only reads transactions older than every running one.
//
// A relay publishes every event to its topic and some to its routes'
// topics as well, or (RoutesOnly) only the routes: then it reads only the
// event types the routes can match, and its checkpoint moves past the
// others unread.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
)

// Defaults of RelayConfig.
const (
	// DefaultPollInterval is the wait after a batch that was not full.
	DefaultPollInterval = 20 * time.Millisecond
	// DefaultBatchSize is the most events relayed at once.
	DefaultBatchSize = 500
	// DefaultMaxBackoff caps the wait between attempts after an error.
	DefaultMaxBackoff = 5 * time.Second
)

// Publisher publishes events, in the order given, to a topic; it returns
// once the bus holds them all (or an error, and the relay tries the batch
// again). bus.EventPublisher is the Watermill one: Kafka or PostgreSQL,
// the events as CloudEvents messages.
type Publisher interface {
	Publish(ctx context.Context, topic string, evs ...events.Envelope) error
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Store is the event store to follow. Required.
	Store *pgstore.Store
	// Publisher is the bus publisher. Required.
	Publisher Publisher
	// Topic is where events are published (bus.Topic). Required: it names
	// the checkpoint even when RoutesOnly.
	Topic string
	// Routes publish some events to further topics as well (after Topic,
	// before the checkpoint moves), e.g. queued jobs to the workers' topic.
	Routes []Route
	// RoutesOnly publishes the Routes alone, nothing to Topic: for a bus
	// where nobody reads Topic (the PostgreSQL bus, where Tollgate's own
	// roles read only the jobs topic), which would otherwise hold a second
	// copy of the log. When every route lists its Types, the relay reads
	// only events of those types (pgstore.Store.ReadMatching), and its
	// checkpoint still moves over the whole log. It needs a route.
	RoutesOnly bool
	// Name names the relay's checkpoint; "outbox:<Topic>" when empty.
	Name string
	// PollInterval is the wait after a batch that was not full;
	// DefaultPollInterval when zero. After a full batch the relay reads
	// again at once.
	PollInterval time.Duration
	// BatchSize is the most events read and published at once;
	// DefaultBatchSize when zero.
	BatchSize int
	// MaxBackoff caps the wait between attempts after an error (it starts
	// at PollInterval and doubles); DefaultMaxBackoff when zero.
	MaxBackoff time.Duration
	// Logger receives the relay's logs; discarded when nil.
	Logger *slog.Logger
	// Registerer receives the relay's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Route sends the events Match selects to Topic too.
type Route struct {
	Topic string
	Match func(events.Envelope) bool
	// Types are the event types Match can select (bus.JobTypes for
	// bus.IsJob); empty when it may select any. Under RoutesOnly the relay
	// reads no other type when every route has them.
	Types []string
}

func (c *RelayConfig) setDefaults() {
	if c.Name == "" {
		c.Name = "outbox:" + c.Topic
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration the relay cannot run with. Zero fields
// that have defaults are valid.
func (c RelayConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("no event store"))
	}
	if c.Publisher == nil {
		errs = append(errs, errors.New("no publisher"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("no topic"))
	}
	if c.PollInterval < 0 {
		errs = append(errs, errors.New("poll interval must not be negative"))
	}
	if c.BatchSize < 0 {
		errs = append(errs, errors.New("batch size must not be negative"))
	}
	if c.MaxBackoff < 0 {
		errs = append(errs, errors.New("max backoff must not be negative"))
	}
	for i, r := range c.Routes {
		if r.Topic == "" || r.Match == nil {
			errs = append(errs, fmt.Errorf("route %d needs a topic and a match", i))
		}
	}
	if c.RoutesOnly && len(c.Routes) == 0 {
		errs = append(errs, errors.New("routes only, but no route"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("relay config: %w", err)
	}
	return nil
}

// Relay publishes the event store's events to the bus in global order.
type Relay struct {
	cfg RelayConfig
	// cur is the checkpoint, loaded once: while a relay runs it is the
	// checkpoint's only writer (RunAsLeader makes sure of that).
	cur *pgstore.Cursor
	// types are the only event types read (RoutesOnly, every route's
	// Types); nil reads every event.
	types         []string
	lagUpdated    time.Time
	relayed       prometheus.Counter
	publishErrors prometheus.Counter
	lag           prometheus.Gauge
}

// NewRelay returns a relay. Its metrics (tollgate_outbox_events_relayed_total,
// tollgate_outbox_publish_errors_total, tollgate_outbox_lag_events, each
// labelled with the relay's name) are registered on cfg.Registerer.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	labels := prometheus.Labels{"relay": cfg.Name}
	r := &Relay{
		cfg:   cfg,
		types: readTypes(cfg),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "tollgate_outbox_events_relayed_total",
			Help:        "Events published to the bus by the outbox relay: to its topic, or under routes only to its routes (re-publications after a crash included).",
			ConstLabels: labels,
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "tollgate_outbox_publish_errors_total",
			Help:        "Batches the outbox relay failed to publish.",
			ConstLabels: labels,
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "tollgate_outbox_lag_events",
			Help:        "Events committed after the relay's checkpoint in the global order (up to 1,000,000).",
			ConstLabels: labels,
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.relayed, r.publishErrors, r.lag} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("outbox: register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Name returns the relay's checkpoint name.
func (r *Relay) Name() string { return r.cfg.Name }

// readTypes returns the only event types a relay of cfg needs to read:
// nil (all of them) unless it publishes only routes that each list theirs.
func readTypes(cfg RelayConfig) []string {
	if !cfg.RoutesOnly {
		return nil
	}
	var types []string
	for _, route := range cfg.Routes {
		if len(route.Types) == 0 {
			return nil
		}
		types = append(types, route.Types...)
	}
	slices.Sort(types)
	return slices.Compact(types)
}

// RunOnce relays one batch: it reads up to BatchSize events after the
// checkpoint, publishes them in order and saves the checkpoint after the
// last (under RoutesOnly with typed routes: the events of those types,
// and the checkpoint after the last event of any type it passed). It
// returns how many events it read; BatchSize means more may be waiting.
func (r *Relay) RunOnce(ctx context.Context) (int, error) {
	pool := r.cfg.Store.Pool()
	if r.cur == nil {
		c, err := pgstore.LoadCheckpoint(ctx, pool, r.cfg.Name)
		if err != nil {
			return 0, fmt.Errorf("outbox %s: %w", r.cfg.Name, err)
		}
		r.cur = &c
	}
	cur := *r.cur
	var evs []events.Envelope
	var next pgstore.Cursor
	var err error
	if r.types != nil {
		evs, next, err = r.cfg.Store.ReadMatching(ctx, cur, r.cfg.BatchSize, pgstore.Filter{Types: r.types})
	} else {
		evs, next, err = r.cfg.Store.ReadAll(ctx, cur, r.cfg.BatchSize, pgstore.Filter{})
	}
	if err != nil {
		return 0, fmt.Errorf("outbox %s: %w", r.cfg.Name, err)
	}
	if err := r.publish(ctx, cur, evs); err != nil {
		r.publishErrors.Inc()
		return 0, fmt.Errorf("outbox %s: %w", r.cfg.Name, err)
	}
	// Publish, then checkpoint: a crash in between publishes again.
	if next != cur {
		if err := pgstore.SaveCheckpoint(ctx, pool, r.cfg.Name, next); err != nil {
			return len(evs), fmt.Errorf("outbox %s: %w", r.cfg.Name, err)
		}
		*r.cur = next
	}
	// Behind, the lag costs a query; once a second is plenty for a gauge.
	// A batch that was not full may still leave events behind: ones held
	// back by a transaction still appending.
	if time.Since(r.lagUpdated) >= time.Second {
		lag, err := r.cfg.Store.Behind(ctx, *r.cur)
		if err != nil {
			return len(evs), fmt.Errorf("outbox %s: %w", r.cfg.Name, err)
		}
		r.lag.Set(float64(lag))
		r.lagUpdated = time.Now()
	}
	return len(evs), nil
}

// publish sends evs to the topic (unless RoutesOnly), then to each route
// what it selects, in order; it returns once the bus holds them all.
func (r *Relay) publish(ctx context.Context, cur pgstore.Cursor, evs []events.Envelope) error {
	if len(evs) == 0 {
		return nil
	}
	published := 0
	if !r.cfg.RoutesOnly {
		if err := r.cfg.Publisher.Publish(ctx, r.cfg.Topic, evs...); err != nil {
			return fmt.Errorf("publish %d events after position %d: %w", len(evs), cur.Position, err)
		}
		published = len(evs)
	}
	for _, route := range r.cfg.Routes {
		var routed []events.Envelope
		for _, e := range evs {
			if route.Match(e) {
				routed = append(routed, e)
			}
		}
		if len(routed) == 0 {
			continue
		}
		if err := r.cfg.Publisher.Publish(ctx, route.Topic, routed...); err != nil {
			return fmt.Errorf("publish %d events to %s: %w", len(routed), route.Topic, err)
		}
		if r.cfg.RoutesOnly {
			published += len(routed)
		}
	}
	r.relayed.Add(float64(published))
	return nil
}

// Run relays until ctx ends, then returns nil. After a full batch it reads
// again at once, otherwise it waits PollInterval; after an error it logs it
// and backs off (PollInterval doubling up to MaxBackoff).
func (r *Relay) Run(ctx context.Context) error {
	log := r.cfg.Logger.With("component", "outbox", "relay", r.cfg.Name)
	topics := make([]string, 0, 1+len(r.cfg.Routes))
	if !r.cfg.RoutesOnly {
		topics = append(topics, r.cfg.Topic)
	}
	for _, route := range r.cfg.Routes {
		topics = append(topics, route.Topic)
	}
	log.Info("outbox relay started", "topics", topics, "reads_types", r.types, "batch_size", r.cfg.BatchSize)
	backoff := r.cfg.PollInterval
	for {
		n, err := r.RunOnce(ctx)
		if ctx.Err() != nil {
			log.Info("outbox relay stopped")
			return nil
		}
		wait := r.cfg.PollInterval
		switch {
		case err != nil:
			log.Error("outbox relay failed; retrying", "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(2*backoff, r.cfg.MaxBackoff)
		case n >= r.cfg.BatchSize:
			backoff = r.cfg.PollInterval
			continue
		default:
			backoff = r.cfg.PollInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			log.Info("outbox relay stopped")
			return nil
		case <-t.C:
		}
	}
}
