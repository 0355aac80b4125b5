package config

import "strings"

// What the outbox relay publishes (Env.BusPublish, TOLLGATE_BUS_PUBLISH).
const (
	// BusPublishAll publishes every event to tollgate.events, and queued
	// jobs to tollgate.jobs as well: the default on Kafka, where analysts
	// and tools outside Tollgate read the event stream.
	BusPublishAll = "all"
	// BusPublishRoutes publishes only the queued jobs, to tollgate.jobs:
	// the default on the PostgreSQL bus, where no one reads
	// tollgate.events (Tollgate's projector follows the event store, and
	// `tollgate events export` reads it), which would otherwise hold a
	// second copy of every event.
	BusPublishRoutes = "routes"
)

// parseBusPublish is TOLLGATE_BUS_PUBLISH, lower-cased, or its default
// for the bus the brokers select when it is unset.
func parseBusPublish(v string, kafkaBrokers []string) string {
	if v = strings.ToLower(strings.TrimSpace(v)); v != "" {
		return v
	}
	if len(kafkaBrokers) > 0 {
		return BusPublishAll
	}
	return BusPublishRoutes
}

// PublishAllEvents reports whether the relay publishes every event to
// tollgate.events: BusPublish is "all", or it is unset (an Env built in
// code) and Kafka brokers are configured.
func (e Env) PublishAllEvents() bool {
	if e.BusPublish == "" {
		return len(e.KafkaBrokers) > 0
	}
	return e.BusPublish == BusPublishAll
}

// validateBus checks BusPublish.
func (e Env) validateBus(bad *problems) {
	switch e.BusPublish {
	case "", BusPublishAll, BusPublishRoutes:
	default:
		bad.add("TOLLGATE_BUS_PUBLISH", "must be %q or %q, not %q", BusPublishAll, BusPublishRoutes, e.BusPublish)
	}
}
