// Package bus wires Tollgate's event bus with Watermill: Kafka (through
// watermill-kafka on IBM/sarama) when brokers are configured, PostgreSQL
// (through watermill-sql on the pgx pool) otherwise.
//
// Every event travels on one topic, Topic, as a message whose payload is the
// JSON envelope and whose metadata (Kafka headers) carry the CloudEvents 1.0
// binary-mode attributes, so that tools outside Tollgate read it as it is.
// On Kafka the record key is the event's account, so one account's events
// stay in order.
//
// Worker is the worker role's consumer of the jobs topic: it claims and
// runs each queued completion through the executor.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	// Topic carries every event.
	Topic = "tollgate.events"
	// DeadLetterTopic receives messages that no handler could process,
	// with the reason in their metadata.
	DeadLetterTopic = "tollgate.events.dead"
)

// Defaults of Config.
const (
	// DefaultClientID names Tollgate to the Kafka brokers.
	DefaultClientID = "tollgate"
	// DefaultSQLPollInterval is how often an idle PostgreSQL subscriber
	// looks for new messages.
	DefaultSQLPollInterval = 100 * time.Millisecond
	// DefaultSQLAckDeadline is how long a PostgreSQL subscriber waits for a
	// message to be acked before redelivering it.
	DefaultSQLAckDeadline = 30 * time.Second
	// DefaultSQLBatchSize is how many messages a PostgreSQL subscriber
	// reads at once.
	DefaultSQLBatchSize = 100
)

// Config selects and configures the bus.
type Config struct {
	// KafkaBrokers selects Kafka when not empty (host:port each).
	KafkaBrokers []string
	// KafkaVersion is the Kafka protocol version; 2.8.0 when zero. It must
	// be at least 0.11, which the idempotent producer needs.
	KafkaVersion sarama.KafkaVersion
	// ClientID names this process to the brokers; DefaultClientID when empty.
	ClientID string

	// Pool is the PostgreSQL pool used when KafkaBrokers is empty.
	Pool *pgxpool.Pool
	// SQLPollInterval is how often an idle PostgreSQL subscriber polls;
	// DefaultSQLPollInterval when zero.
	SQLPollInterval time.Duration
	// SQLAckDeadline is how long a PostgreSQL subscriber waits for an ack
	// before redelivering; DefaultSQLAckDeadline when zero. A message being
	// handled holds a database transaction open until it is acked, so
	// handlers should ack quickly.
	SQLAckDeadline time.Duration
	// SQLBatchSize is how many messages a PostgreSQL subscriber reads at
	// once; DefaultSQLBatchSize when zero.
	SQLBatchSize int

	// Logger receives the bus's logs; discarded when nil.
	Logger *slog.Logger
}

// Kafka reports whether the configuration selects Kafka.
func (c Config) Kafka() bool { return len(c.KafkaBrokers) > 0 }

func (c *Config) setDefaults() {
	if c.KafkaVersion == (sarama.KafkaVersion{}) {
		c.KafkaVersion = sarama.V2_8_0_0
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.SQLPollInterval == 0 {
		c.SQLPollInterval = DefaultSQLPollInterval
	}
	if c.SQLAckDeadline == 0 {
		c.SQLAckDeadline = DefaultSQLAckDeadline
	}
	if c.SQLBatchSize == 0 {
		c.SQLBatchSize = DefaultSQLBatchSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration the bus cannot run with. Zero fields
// that have defaults are valid.
func (c Config) Validate() error {
	var errs []error
	if c.Kafka() {
		for _, b := range c.KafkaBrokers {
			if b == "" {
				errs = append(errs, errors.New("empty Kafka broker address"))
			}
		}
		if c.KafkaVersion != (sarama.KafkaVersion{}) && !c.KafkaVersion.IsAtLeast(sarama.V0_11_0_0) {
			errs = append(errs, fmt.Errorf("kafka version %s is older than 0.11, which the idempotent producer needs", c.KafkaVersion))
		}
	} else if c.Pool == nil {
		errs = append(errs, errors.New("neither Kafka brokers nor a PostgreSQL pool configured"))
	}
	if c.SQLPollInterval < 0 {
		errs = append(errs, errors.New("SQL poll interval must not be negative"))
	}
	if c.SQLAckDeadline < 0 {
		errs = append(errs, errors.New("SQL ack deadline must not be negative"))
	}
	if c.SQLBatchSize < 0 {
		errs = append(errs, errors.New("SQL batch size must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bus config: %w", err)
	}
	return nil
}

func (c Config) prepare() (Config, error) {
	if err := c.Validate(); err != nil {
		return c, err
	}
	c.setDefaults()
	return c, nil
}

func (c Config) wmLogger() watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(c.Logger.With("component", "bus"), map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})
}

// SaramaProducerConfig returns the sarama configuration of the publisher:
// an idempotent producer (every write acknowledged by all in-sync replicas,
// one request in flight per broker, retried writes deduplicated by the
// broker).
func (c Config) SaramaProducerConfig() *sarama.Config {
	c.setDefaults()
	sc := kafka.DefaultSaramaSyncPublisherConfig()
	sc.Version = c.KafkaVersion
	sc.ClientID = c.ClientID
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Retry.Max = 10
	sc.Producer.Retry.Backoff = 100 * time.Millisecond
	sc.Metadata.Retry.Backoff = 250 * time.Millisecond
	return sc
}

// SaramaConsumerConfig returns the sarama configuration of subscribers:
// consumer groups that start from the oldest offset when they are new.
func (c Config) SaramaConsumerConfig() *sarama.Config {
	c.setDefaults()
	sc := kafka.DefaultSaramaSubscriberConfig()
	sc.Version = c.KafkaVersion
	sc.ClientID = c.ClientID
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Metadata.Retry.Backoff = 250 * time.Millisecond
	// The coordinator may hold a JoinGroup for up to the rebalance
	// timeout (waiting for members that have not rejoined, such as one
	// killed -9 without leaving the group), but sarama gives up on every
	// response after Net.ReadTimeout (30s). With sarama's default rebalance
	// timeout of 60s, a rebalance held past 30s timed the join out at every
	// live member, which rejoined as a new member and restarted the wait:
	// after a worker was killed the group never settled and queued jobs
	// waited forever (faults.TestKillKafka). So the rebalance timeout stays
	// below the read timeout.
	sc.Consumer.Group.Rebalance.Timeout = min(sc.Consumer.Group.Rebalance.Timeout, sc.Net.ReadTimeout*2/3)
	return sc
}

func (c Config) sqlSchema() wsql.SchemaAdapter {
	return horizonSchema{wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: c.SQLBatchSize}}
}

// NewPublisher returns the bus's publisher. On Kafka, the record key is
// PartitionKey of the message.
func NewPublisher(cfg Config) (message.Publisher, error) {
	cfg, err := cfg.prepare()
	if err != nil {
		return nil, err
	}
	if cfg.Kafka() {
		pub, err := kafka.NewPublisher(kafka.PublisherConfig{
			Brokers:               cfg.KafkaBrokers,
			Marshaler:             kafka.NewWithPartitioningMarshaler(partitionKey),
			OverwriteSaramaConfig: cfg.SaramaProducerConfig(),
		}, cfg.wmLogger())
		if err != nil {
			return nil, fmt.Errorf("bus: kafka publisher: %w", err)
		}
		return pub, nil
	}
	pub, err := wsql.NewPublisher(wsql.BeginnerFromPgx(cfg.Pool), wsql.PublisherConfig{
		SchemaAdapter:        cfg.sqlSchema(),
		AutoInitializeSchema: true,
	}, cfg.wmLogger())
	if err != nil {
		return nil, fmt.Errorf("bus: postgresql publisher: %w", err)
	}
	return pub, nil
}

// NewSubscriber returns a subscriber in consumerGroup. Each group receives
// every message once (at least once: after a crash, unacked messages are
// redelivered); a new group starts from the oldest message.
func NewSubscriber(cfg Config, consumerGroup string) (message.Subscriber, error) {
	cfg, err := cfg.prepare()
	if err != nil {
		return nil, err
	}
	if consumerGroup == "" {
		return nil, errors.New("bus: subscriber needs a consumer group")
	}
	if cfg.Kafka() {
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
			Brokers:               cfg.KafkaBrokers,
			Unmarshaler:           kafka.NewWithPartitioningMarshaler(partitionKey),
			OverwriteSaramaConfig: cfg.SaramaConsumerConfig(),
			ConsumerGroup:         consumerGroup,
		}, cfg.wmLogger())
		if err != nil {
			return nil, fmt.Errorf("bus: kafka subscriber: %w", err)
		}
		return sub, nil
	}
	ack := cfg.SQLAckDeadline
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(cfg.Pool), wsql.SubscriberConfig{
		ConsumerGroup:    consumerGroup,
		AckDeadline:      &ack,
		PollInterval:     cfg.SQLPollInterval,
		SchemaAdapter:    cfg.sqlSchema(),
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
	}, cfg.wmLogger())
	if err != nil {
		return nil, fmt.Errorf("bus: postgresql subscriber: %w", err)
	}
	return sub, nil
}

// Ping reports whether the bus is reachable: on Kafka, that the brokers
// answer a metadata request; on PostgreSQL, that the pool reaches the
// database.
func Ping(ctx context.Context, cfg Config) error {
	cfg, err := cfg.prepare()
	if err != nil {
		return err
	}
	if !cfg.Kafka() {
		if err := cfg.Pool.Ping(ctx); err != nil {
			return fmt.Errorf("bus: ping postgresql: %w", err)
		}
		return nil
	}
	sc := cfg.SaramaConsumerConfig()
	sc.Metadata.Retry.Max = 0
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 && d < sc.Net.DialTimeout {
			sc.Net.DialTimeout, sc.Net.ReadTimeout, sc.Net.WriteTimeout = d, d, d
		}
	}
	done := make(chan error, 1)
	go func() {
		client, err := sarama.NewClient(cfg.KafkaBrokers, sc)
		if err != nil {
			done <- err
			return
		}
		err = client.RefreshMetadata()
		if len(client.Brokers()) == 0 && err == nil {
			err = errors.New("no brokers in metadata")
		}
		done <- errors.Join(err, client.Close())
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("bus: ping kafka %v: %w", cfg.KafkaBrokers, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bus: ping kafka %v: %w", cfg.KafkaBrokers, ctx.Err())
	}
}
