// Package usage is the usage ledger: one row per finished completion
// (usage_ledger) with its tokens and cost, kept from the event log by a
// projector the server wires into the read models' Set, and the query
// that sums it by model, key or UTC day for GET /v1/usage.
package usage
