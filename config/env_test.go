package config

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestEnv(t *testing.T) {
	t.Parallel()
	cfg, err := Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Env
	if e.DatabaseURL != DefaultDatabaseURL || e.HTTPAddr != ":8080" || e.LogLevel != "info" ||
		e.StripeMeterEventName != "tollgate_tokens" || e.KafkaBrokers != nil || e.AdminToken != "" {
		t.Errorf("default env = %+v", e)
	}
	if !strings.HasSuffix(e.InstanceID, "-"+strconv.Itoa(os.Getpid())) {
		t.Errorf("default instance id %q does not end in the pid", e.InstanceID)
	}

	cfg, err = Load("", env(map[string]string{
		"TOLLGATE_DATABASE_URL":           "postgres://db/x",
		"TOLLGATE_HTTP_ADDR":              "127.0.0.1:9000",
		"TOLLGATE_ADMIN_TOKEN":            "adm",
		"TOLLGATE_KAFKA_BROKERS":          " k1:9092, ,k2:9092 ",
		"TOLLGATE_REDIS_URL":              "redis://r:6379/0",
		"STRIPE_SECRET_KEY":               "sk_test_x",
		"STRIPE_WEBHOOK_SECRET":           "whsec_x",
		"STRIPE_API_BASE":                 "http://127.0.0.1:12111",
		"STRIPE_METER_EVENT_NAME":         "custom",
		"TOLLGATE_INSTANCE_ID":            "api-1",
		"TOLLGATE_LOG_LEVEL":              "debug",
		"TOLLGATE_RESPONSE_DEADLINE":      "20s",
		"TOLLGATE_DATABASE_QUERY_TIMEOUT": "3s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Env{ResponseDeadline: 20 * time.Second, DatabaseQueryTimeout: 3 * time.Second,
		DatabaseURL: "postgres://db/x", HTTPAddr: "127.0.0.1:9000", AdminToken: "adm",
		KafkaBrokers: []string{"k1:9092", "k2:9092"}, BusPublish: BusPublishAll, RedisURL: "redis://r:6379/0",
		StripeSecretKey: "sk_test_x", StripeWebhookSecret: "whsec_x", StripeAPIBase: "http://127.0.0.1:12111",
		StripeMeterEventName: "custom", InstanceID: "api-1", LogLevel: "debug",
	}
	if !reflect.DeepEqual(cfg.Env, want) {
		t.Errorf("env = %+v\nwant %+v", cfg.Env, want)
	}
	if _, err := Load("", env(map[string]string{"TOLLGATE_RESPONSE_DEADLINE": "soon"})); err == nil || !strings.Contains(err.Error(), "TOLLGATE_RESPONSE_DEADLINE") {
		t.Errorf("a bad TOLLGATE_RESPONSE_DEADLINE: %v", err)
	}
	if _, err := Load("", env(map[string]string{"TOLLGATE_DATABASE_QUERY_TIMEOUT": "-1s"})); err == nil || !strings.Contains(err.Error(), "TOLLGATE_DATABASE_QUERY_TIMEOUT") {
		t.Errorf("a bad TOLLGATE_DATABASE_QUERY_TIMEOUT: %v", err)
	}
}
