package config

import (
	"strings"
	"testing"
)

// The relay publishes every event on Kafka and only the jobs on the
// PostgreSQL bus unless TOLLGATE_BUS_PUBLISH says otherwise.
func TestBusPublish(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		brokers, publish string
		want             string
		all              bool
	}{
		{"", "", BusPublishRoutes, false},
		{"k1:9092", "", BusPublishAll, true},
		{"", "all", BusPublishAll, true},
		{"", " ALL ", BusPublishAll, true},
		{"k1:9092", "routes", BusPublishRoutes, false},
	} {
		cfg, err := Load("", env(map[string]string{"TOLLGATE_KAFKA_BROKERS": c.brokers, "TOLLGATE_BUS_PUBLISH": c.publish}))
		if err != nil {
			t.Fatalf("brokers %q, publish %q: %v", c.brokers, c.publish, err)
		}
		if cfg.Env.BusPublish != c.want || cfg.Env.PublishAllEvents() != c.all {
			t.Errorf("brokers %q, publish %q: BusPublish %q, PublishAllEvents %v; want %q, %v",
				c.brokers, c.publish, cfg.Env.BusPublish, cfg.Env.PublishAllEvents(), c.want, c.all)
		}
	}
	if _, err := Load("", env(map[string]string{"TOLLGATE_BUS_PUBLISH": "jobs"})); err == nil || !strings.Contains(err.Error(), "TOLLGATE_BUS_PUBLISH") {
		t.Errorf("TOLLGATE_BUS_PUBLISH=jobs: %v", err)
	}
	// An Env built in code, BusPublish unset: the bus decides.
	if (Env{}).PublishAllEvents() || !(Env{KafkaBrokers: []string{"k:1"}}).PublishAllEvents() {
		t.Error("unset BusPublish does not follow the bus")
	}
	bad := Default()
	bad.Env.BusPublish = "some"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "TOLLGATE_BUS_PUBLISH") {
		t.Errorf("Validate with BusPublish %q: %v", bad.Env.BusPublish, err)
	}
}
