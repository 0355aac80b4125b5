package config

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Defaults of the environment.
const (
	DefaultDatabaseURL    = "postgres://127.0.0.1:5432/tollgate?sslmode=disable"
	DefaultHTTPAddr       = ":8080"
	DefaultMeterEventName = "tollgate_tokens"
	DefaultLogLevel       = "info"
	// DefaultResponseDeadline is Env.ResponseDeadline's default.
	DefaultResponseDeadline = 55 * time.Second
)

// Env holds settings taken from environment variables.
type Env struct {
	DatabaseURL          string   // TOLLGATE_DATABASE_URL
	HTTPAddr             string   // TOLLGATE_HTTP_ADDR
	AdminToken           string   // TOLLGATE_ADMIN_TOKEN (may be empty: the server then generates and prints one)
	KafkaBrokers         []string // TOLLGATE_KAFKA_BROKERS, comma separated; empty = PostgreSQL bus
	RedisURL             string   // TOLLGATE_REDIS_URL
	StripeSecretKey      string   // STRIPE_SECRET_KEY
	StripeWebhookSecret  string   // STRIPE_WEBHOOK_SECRET
	StripeAPIBase        string   // STRIPE_API_BASE (e.g. http://127.0.0.1:12111 for stripe-mock)
	StripeMeterEventName string   // STRIPE_METER_EVENT_NAME
	InstanceID           string   // TOLLGATE_INSTANCE_ID, default hostname-pid
	LogLevel             string   // TOLLGATE_LOG_LEVEL
	// ResponseDeadline (TOLLGATE_RESPONSE_DEADLINE, default 55s, under
	// common 60 s proxy limits) is how long a synchronous request waits for
	// its answer before it is answered 202 with its job id instead.
	ResponseDeadline time.Duration
	// DatabaseQueryTimeout (TOLLGATE_DATABASE_QUERY_TIMEOUT; 0 = the
	// server's default, 30s) bounds every database statement of a serving
	// process, so a hung PostgreSQL answers 503 instead of holding requests.
	DatabaseQueryTimeout time.Duration
	// CallbackSecret (TOLLGATE_CALLBACK_SECRET) keys the HMAC signature of
	// job result callbacks; empty = callbacks are off (a callback_url is
	// refused).
	CallbackSecret string
	// BusPublish (TOLLGATE_BUS_PUBLISH) is what the outbox relay
	// publishes: BusPublishAll (every event, and the jobs; the default on
	// Kafka) or BusPublishRoutes (only the jobs; the default on the
	// PostgreSQL bus). See PublishAllEvents.
	BusPublish string
}

// parseEnv reads Env from getenv, with defaults; a duration that does not
// parse is a problem (and leaves its default).
func parseEnv(getenv func(string) string) (Env, problems) {
	or := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}
	var bad problems
	duration := func(key string, def time.Duration, example string) time.Duration {
		d, ok := parsePositiveDuration(getenv(key), def)
		if !ok {
			bad.add(key, "must be a positive duration such as %s", example)
		}
		return d
	}
	var brokers []string
	for _, b := range strings.Split(getenv("TOLLGATE_KAFKA_BROKERS"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	env := Env{
		DatabaseURL:          or("TOLLGATE_DATABASE_URL", DefaultDatabaseURL),
		HTTPAddr:             or("TOLLGATE_HTTP_ADDR", DefaultHTTPAddr),
		AdminToken:           getenv("TOLLGATE_ADMIN_TOKEN"),
		KafkaBrokers:         brokers,
		BusPublish:           parseBusPublish(getenv("TOLLGATE_BUS_PUBLISH"), brokers),
		RedisURL:             getenv("TOLLGATE_REDIS_URL"),
		StripeSecretKey:      getenv("STRIPE_SECRET_KEY"),
		StripeWebhookSecret:  getenv("STRIPE_WEBHOOK_SECRET"),
		StripeAPIBase:        getenv("STRIPE_API_BASE"),
		StripeMeterEventName: or("STRIPE_METER_EVENT_NAME", DefaultMeterEventName),
		InstanceID:           instanceID(getenv("TOLLGATE_INSTANCE_ID")),
		LogLevel:             or("TOLLGATE_LOG_LEVEL", DefaultLogLevel),
		ResponseDeadline:     duration("TOLLGATE_RESPONSE_DEADLINE", DefaultResponseDeadline, "55s"),
		DatabaseQueryTimeout: duration("TOLLGATE_DATABASE_QUERY_TIMEOUT", 0, "30s"),
		CallbackSecret:       getenv("TOLLGATE_CALLBACK_SECRET"),
	}
	return env, bad
}

// instanceID is TOLLGATE_INSTANCE_ID, or hostname-pid when it is unset.
func instanceID(id string) string {
	if id != "" {
		return id
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "tollgate"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// parsePositiveDuration parses s as a Go duration: def when s is empty,
// false when it is not a positive duration.
func parsePositiveDuration(s string, def time.Duration) (time.Duration, bool) {
	if s = strings.TrimSpace(s); s == "" {
		return def, true
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return def, false
	}
	return d, true
}

// validate checks the durations (a negative one is set in code: parseEnv
// refuses them), the callback secret's length and what the bus publishes.
func (e Env) validate(bad *problems) {
	if e.ResponseDeadline < 0 {
		bad.add("TOLLGATE_RESPONSE_DEADLINE", "must be a positive duration such as 55s")
	}
	if e.DatabaseQueryTimeout < 0 {
		bad.add("TOLLGATE_DATABASE_QUERY_TIMEOUT", "must be a positive duration such as 30s")
	}
	if s := e.CallbackSecret; s != "" && len(s) < MinCallbackSecret {
		bad.add("TOLLGATE_CALLBACK_SECRET", "must be at least %d characters", MinCallbackSecret)
	}
	e.validateBus(bad)
}
