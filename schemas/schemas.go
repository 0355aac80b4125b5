// Package schemas holds the contracts that outlive any one build: a JSON
// Schema for every event type and version (events/<type>.v<N>.json), and
// the SQL migrations of the PostgreSQL database (migrations/NNNN_*.sql).
package schemas

import "embed"

// Events holds the event JSON Schemas, named "<type>.v<version>.json".
//
//go:embed events/*.json
var Events embed.FS

// Migrations holds the SQL migrations, applied in file name order.
//
//go:embed migrations/*.sql
var Migrations embed.FS
