// Package compose only holds the test that validates docker-compose.yml (and
// the Prometheus configuration it mounts, deploy/prometheus.yml): that the
// file loads as the Compose specification defines it, and that every Tollgate
// role is wired to the services it needs.
package compose
