package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of RouterConfig.
const (
	// DefaultMaxRetries is how often a failing message is retried.
	DefaultMaxRetries = 5
	// DefaultInitialInterval is the first backoff between retries.
	DefaultInitialInterval = 100 * time.Millisecond
	// DefaultMaxInterval caps the backoff between retries.
	DefaultMaxInterval = 5 * time.Second
	// DefaultMaxElapsedTime bounds the time spent retrying one message.
	DefaultMaxElapsedTime = time.Minute
	// DefaultCloseTimeout is how long closing the router waits for handlers.
	DefaultCloseTimeout = 30 * time.Second
)

// MetaReasonPoisoned is the metadata key of the reason a message went to
// the dead-letter topic (Watermill's poison queue key).
const MetaReasonPoisoned = middleware.ReasonForPoisonedKey

// RouterConfig configures NewRouter.
type RouterConfig struct {
	// DeadLetterPublisher publishes messages that failed every retry.
	// Required; usually the bus publisher.
	DeadLetterPublisher message.Publisher
	// DeadLetterTopic is where they go; DeadLetterTopic when empty.
	DeadLetterTopic string

	// MaxRetries bounds the retries of a failing message before it is
	// dead-lettered; DefaultMaxRetries when zero, none when negative.
	MaxRetries int
	// InitialInterval is the first backoff; DefaultInitialInterval when zero.
	InitialInterval time.Duration
	// MaxInterval caps the exponential backoff; DefaultMaxInterval when zero.
	MaxInterval time.Duration
	// MaxElapsedTime bounds the time spent retrying one message;
	// DefaultMaxElapsedTime when zero.
	MaxElapsedTime time.Duration

	// CloseTimeout is how long Close waits for handlers; DefaultCloseTimeout
	// when zero.
	CloseTimeout time.Duration

	// Logger receives the router's logs; discarded when nil.
	Logger *slog.Logger
	// Registerer receives the handler metrics; nil registers none.
	Registerer prometheus.Registerer
}

func (c *RouterConfig) setDefaults() {
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = DeadLetterTopic
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.InitialInterval == 0 {
		c.InitialInterval = DefaultInitialInterval
	}
	if c.MaxInterval == 0 {
		c.MaxInterval = DefaultMaxInterval
	}
	if c.MaxElapsedTime == 0 {
		c.MaxElapsedTime = DefaultMaxElapsedTime
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration the router cannot run with.
func (c RouterConfig) Validate() error {
	var errs []error
	if c.DeadLetterPublisher == nil {
		errs = append(errs, errors.New("no dead-letter publisher"))
	}
	if c.InitialInterval < 0 || c.MaxInterval < 0 || c.MaxElapsedTime < 0 || c.CloseTimeout < 0 {
		errs = append(errs, errors.New("intervals and timeouts must not be negative"))
	}
	if c.InitialInterval > 0 && c.MaxInterval > 0 && c.MaxInterval < c.InitialInterval {
		errs = append(errs, errors.New("max interval is shorter than the initial interval"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("router config: %w", err)
	}
	return nil
}

// NewRouter returns a Watermill router whose handlers run inside, from
// outermost to innermost: handler metrics; a poison queue that publishes a
// message that failed every retry to the dead-letter topic with the reason
// in its metadata (MetaReasonPoisoned) and acks it, so it never blocks a
// partition; bounded retries with exponential backoff; and a recoverer
// that turns a handler's panic into an error.
func NewRouter(cfg RouterConfig) (*message.Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	logger := watermill.NewSlogLoggerWithLevelMapping(cfg.Logger.With("component", "router"), map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, logger)
	if err != nil {
		return nil, fmt.Errorf("bus: router: %w", err)
	}
	metrics, err := NewMetricsMiddleware(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	poison, err := middleware.PoisonQueue(cfg.DeadLetterPublisher, cfg.DeadLetterTopic)
	if err != nil {
		return nil, fmt.Errorf("bus: poison queue: %w", err)
	}
	retry := middleware.Retry{
		MaxRetries:          cfg.MaxRetries,
		InitialInterval:     cfg.InitialInterval,
		MaxInterval:         cfg.MaxInterval,
		Multiplier:          2,
		MaxElapsedTime:      cfg.MaxElapsedTime,
		RandomizationFactor: 0.2,
		ResetContextOnRetry: true,
		Logger:              logger,
	}
	r.AddMiddleware(metrics, poison, retry.Middleware, middleware.Recoverer)
	return r, nil
}

// Outcomes of a handled message, the "outcome" label of the metrics.
const (
	// OutcomeOK: the handler succeeded.
	OutcomeOK = "ok"
	// OutcomeDeadLettered: every attempt failed and the message went to
	// the dead-letter topic.
	OutcomeDeadLettered = "dead_lettered"
	// OutcomeError: the message could not even be dead-lettered; it is
	// nacked and will be redelivered.
	OutcomeError = "error"
)

// NewMetricsMiddleware returns a middleware that counts handled messages
// by handler and outcome (tollgate_bus_messages_handled_total) and times
// them (tollgate_bus_handling_seconds). Placed outside the poison queue, it
// reports a dead-lettered message as such. The metrics are registered on
// reg unless it is nil; metrics already registered there are shared.
func NewMetricsMiddleware(reg prometheus.Registerer) (message.HandlerMiddleware, error) {
	handled := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_bus_messages_handled_total",
		Help: "Bus messages handled, by handler and outcome (ok, dead_lettered, error).",
	}, []string{"handler", "outcome"})
	seconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tollgate_bus_handling_seconds",
		Help:    "Time to handle a bus message, retries included, by handler.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
	}, []string{"handler"})
	if reg != nil {
		var err error
		if handled, err = register(reg, handled); err != nil {
			return nil, err
		}
		if seconds, err = register(reg, seconds); err != nil {
			return nil, err
		}
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			name := message.HandlerNameFromCtx(msg.Context())
			poisonedBefore := msg.Metadata.Get(MetaReasonPoisoned)
			start := time.Now()
			out, err := h(msg)
			seconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
			outcome := OutcomeOK
			switch {
			case err != nil:
				outcome = OutcomeError
			case msg.Metadata.Get(MetaReasonPoisoned) != poisonedBefore:
				outcome = OutcomeDeadLettered
			}
			handled.WithLabelValues(name, outcome).Inc()
			return out, err
		}
	}, nil
}

// register registers c on reg, or returns the collector of the same
// description registered there already.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("bus: register metrics: %w", err)
	}
	return c, nil
}
