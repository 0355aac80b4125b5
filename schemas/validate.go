package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ErrNoSchema is returned by Validate for an event type and version that has
// no schema in Events.
var ErrNoSchema = errors.New("no schema for event type and version")

// envelopeFile is the name, in Events, of the envelope's schema.
const envelopeFile = "envelope.json"

// schemaBase is the base URL the embedded schemas are registered under; each
// file's own $id is relative to nothing, so resolution never leaves Events.
const schemaBase = "https://schemas.tollgate.dev/events/"

// schemaKey names one event type at one schema version.
type schemaKey struct {
	eventType string
	version   int
}

// Validator checks events against the JSON Schemas embedded in Events. It is
// safe for concurrent use: compiled schemas are only read.
type Validator struct {
	data     map[schemaKey]*jsonschema.Schema
	envelope *jsonschema.Schema
}

// NewValidator compiles every schema embedded in Events: the envelope's
// (envelope.json) and one per event type and version ("<type>.v<N>.json").
// Formats (date-time, uuid, email) are asserted, not just annotated.
func NewValidator() (*Validator, error) {
	entries, err := fs.ReadDir(Events, "events")
	if err != nil {
		return nil, fmt.Errorf("read embedded schemas: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	// Refuse to fetch anything: every schema must be embedded.
	c.UseLoader(jsonschema.SchemeURLLoader{})

	keys := make(map[string]schemaKey, len(entries))
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".json") {
			continue
		}
		if name != envelopeFile {
			k, err := parseSchemaName(name)
			if err != nil {
				return nil, err
			}
			keys[name] = k
		}
		raw, err := Events.ReadFile("events/" + name)
		if err != nil {
			return nil, fmt.Errorf("read schema %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("parse schema %s: %w", name, err)
		}
		if err := c.AddResource(schemaBase+name, doc); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", name, err)
		}
	}

	v := &Validator{data: make(map[schemaKey]*jsonschema.Schema, len(keys))}
	for name, k := range keys {
		sch, err := c.Compile(schemaBase + name)
		if err != nil {
			return nil, fmt.Errorf("compile schema %s: %w", name, err)
		}
		v.data[k] = sch
	}
	if v.envelope, err = c.Compile(schemaBase + envelopeFile); err != nil {
		return nil, fmt.Errorf("compile schema %s: %w", envelopeFile, err)
	}
	return v, nil
}

// parseSchemaName splits "<type>.v<N>.json" into its type and version.
func parseSchemaName(name string) (schemaKey, error) {
	base := strings.TrimSuffix(name, ".json")
	i := strings.LastIndex(base, ".v")
	if i <= 0 {
		return schemaKey{}, fmt.Errorf("schema file %s: want <type>.v<version>.json", name)
	}
	ver, err := strconv.Atoi(base[i+2:])
	if err != nil || ver < 1 {
		return schemaKey{}, fmt.Errorf("schema file %s: version is not a positive integer", name)
	}
	return schemaKey{eventType: base[:i], version: ver}, nil
}

// Has reports whether a schema exists for eventType at version.
func (v *Validator) Has(eventType string, version int) bool {
	_, ok := v.data[schemaKey{eventType, version}]
	return ok
}

// Validate checks data against the schema of eventType at schemaVersion. When
// envelopeJSON is not nil it also checks the envelope against envelope.json
// and that the envelope's type and schema_version are eventType and
// schemaVersion; data may then be nil, in which case the envelope's own data
// is validated. An event type and version without a schema is an error
// matching ErrNoSchema.
func (v *Validator) Validate(eventType string, schemaVersion int, envelopeJSON []byte, data []byte) error {
	sch, ok := v.data[schemaKey{eventType, schemaVersion}]
	if !ok {
		return fmt.Errorf("%s v%d: %w", eventType, schemaVersion, ErrNoSchema)
	}
	if envelopeJSON != nil {
		envData, err := v.validateEnvelope(eventType, schemaVersion, envelopeJSON)
		if err != nil {
			return err
		}
		if data == nil {
			data = envData
		}
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s v%d data: parse: %w", eventType, schemaVersion, err)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("%s v%d data: %w", eventType, schemaVersion, err)
	}
	return nil
}

// validateEnvelope checks an envelope and returns its raw data.
func (v *Validator) validateEnvelope(eventType string, schemaVersion int, envelopeJSON []byte) (json.RawMessage, error) {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(envelopeJSON))
	if err != nil {
		return nil, fmt.Errorf("%s v%d envelope: parse: %w", eventType, schemaVersion, err)
	}
	if err := v.envelope.Validate(inst); err != nil {
		return nil, fmt.Errorf("%s v%d envelope: %w", eventType, schemaVersion, err)
	}
	var head struct {
		Type          string          `json:"type"`
		SchemaVersion int             `json:"schema_version"`
		Data          json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(envelopeJSON, &head); err != nil {
		return nil, fmt.Errorf("%s v%d envelope: decode: %w", eventType, schemaVersion, err)
	}
	if head.Type != eventType || head.SchemaVersion != schemaVersion {
		return nil, fmt.Errorf("envelope is %s v%d, validated as %s v%d", head.Type, head.SchemaVersion, eventType, schemaVersion)
	}
	return head.Data, nil
}
