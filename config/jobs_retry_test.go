package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const retryModels = "providers: [{name: echo, kind: echo}]\nmodels: [{name: echo, deployments: [{provider: echo, model: echo}], price: {input_per_million: \"1\", output_per_million: \"1\"}}]\n"

func TestJobsRetryPolicy(t *testing.T) {
	t.Parallel()
	def := Default()
	if def.Jobs.OnExpiredLease != OnExpiredAbandon || def.Jobs.MaxRetries != DefaultMaxRetries || def.Jobs.Retry() {
		t.Errorf("defaults: on_expired_lease %q max_retries %d", def.Jobs.OnExpiredLease, def.Jobs.MaxRetries)
	}
	// Under abandon the reservation TTL keeps its own default.
	if def.Quota.ReservationTTL.D() != DefaultReservationTTL || def.Jobs.MinReservationTTL() != 0 {
		t.Errorf("abandon: reservation_ttl %s, min %s", def.Quota.ReservationTTL.D(), def.Jobs.MinReservationTTL())
	}

	// Retry with the defaults: the reservation's default TTL grows to
	// cover three runs (the first and two retries), each a lease plus a
	// reaper interval, and the margin.
	c, err := Parse([]byte(retryModels + "jobs: {on_expired_lease: retry}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := 3*(DefaultClaimLease+DefaultReaperInterval) + 5*time.Minute
	if !c.Jobs.Retry() || c.Jobs.MaxRetries != 2 || c.Jobs.MinReservationTTL() != want || c.Quota.ReservationTTL.D() != want {
		t.Errorf("retry: %+v, reservation_ttl %s, want %s", c.Jobs, c.Quota.ReservationTTL.D(), want)
	}

	// An explicit TTL long enough is kept; max_retries is read.
	c, err = Parse([]byte(retryModels + "jobs: {on_expired_lease: retry, max_retries: 1, lease: 1m, reaper_interval: 10s}\nquota: {reservation_ttl: 1h}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Jobs.MaxRetries != 1 || c.Quota.ReservationTTL.D() != time.Hour || c.Jobs.MinReservationTTL() != 2*70*time.Second+5*time.Minute {
		t.Errorf("explicit: %+v, reservation_ttl %s", c.Jobs, c.Quota.ReservationTTL.D())
	}

	for _, tc := range []struct {
		field string
		yaml  string
	}{
		{"jobs.on_expired_lease", "jobs: {on_expired_lease: requeue}\n"},
		{"jobs.max_retries", "jobs: {on_expired_lease: retry, max_retries: 11}\n"},
		{"jobs.max_retries", "jobs: {max_retries: -1}\n"},
		// An explicit TTL shorter than the retries need is refused, not
		// silently raised.
		{"quota.reservation_ttl", "jobs: {on_expired_lease: retry}\nquota: {reservation_ttl: 15m}\n"},
	} {
		c, err := Parse([]byte(retryModels + tc.yaml))
		if err == nil {
			err = c.Validate()
		}
		var ve *ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%q: err = %v, want one on %s", tc.yaml, err, tc.field)
		}
	}
}
