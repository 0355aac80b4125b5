// Package e2e holds the end-to-end tests: a whole Tollgate process (every
// role) on real parts — its own PostgreSQL database, the PostgreSQL or the
// Kafka bus (sarama against an in-process Kafka-protocol broker),
// stripe-mock behind a recording proxy, and an httptest provider speaking
// OpenAI's wire format — driven by the official OpenAI Go SDK.
package e2e
