package events

import (
	"encoding/json"
	"fmt"
)

// Upcaster turns the data of one schema version into the next version's.
type Upcaster func(json.RawMessage) (json.RawMessage, error)

type typeInfo struct {
	// version is the current schema version, the one New writes.
	version int
	// decode unmarshals current-version data.
	decode func(json.RawMessage) (Data, error)
	// fast, when not nil, decodes current-version data without
	// reflection, or returns false for decode to do it.
	fast func(json.RawMessage) (Data, bool)
	// upcasters[v] lifts version v to v+1.
	upcasters map[int]Upcaster
}

func decoder[T Data]() func(json.RawMessage) (Data, error) {
	return func(raw json.RawMessage) (Data, error) {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		return v, nil
	}
}

// registry is fixed at compile time and never written: adding an event type
// or version is a code change, with its schema in schemas/events. Each stream
// keeps its types in its own file (account.go, apikey.go, completion.go,
// billingrecord.go, stripeevent.go).
var registry = mergeTypes(accountTypes, apikeyTypes, completionTypes, billingrecordTypes, stripeeventTypes)

// mergeTypes joins the areas' type tables; a name in two of them is a
// programming error caught by the tests (the later table would win).
func mergeTypes(tables ...map[string]typeInfo) map[string]typeInfo {
	out := map[string]typeInfo{}
	for _, t := range tables {
		for name, info := range t {
			info.fast = fastDecoder(info.decode)
			out[name] = info
		}
	}
	return out
}

// Types lists every registered event type with its current schema version.
func Types() map[string]int {
	out := make(map[string]int, len(registry))
	for name, t := range registry {
		out[name] = t.version
	}
	return out
}

// Decode returns an envelope's data as its Go type, upcasting stored data
// of an older schema version to the current one first.
func Decode(e Envelope) (Data, error) {
	t, ok := registry[e.Type]
	if !ok {
		return nil, fmt.Errorf("event %s type %q: %w", e.EventID, e.Type, ErrUnknownType)
	}
	if e.decoded != nil && e.SchemaVersion == t.version {
		return e.decoded, nil
	}
	raw := e.Data
	for v := e.SchemaVersion; v < t.version; v++ {
		up, ok := t.upcasters[v]
		if !ok {
			return nil, fmt.Errorf("event %s: no upcaster for %s v%d", e.EventID, e.Type, v)
		}
		var err error
		if raw, err = up(raw); err != nil {
			return nil, fmt.Errorf("event %s: upcast %s v%d: %w", e.EventID, e.Type, v, err)
		}
	}
	if e.SchemaVersion > t.version {
		return nil, fmt.Errorf("event %s: %s v%d is newer than this build knows (v%d)", e.EventID, e.Type, e.SchemaVersion, t.version)
	}
	if t.fast != nil {
		if d, ok := t.fast(raw); ok {
			return d, nil
		}
	}
	d, err := t.decode(raw)
	if err != nil {
		return nil, fmt.Errorf("event %s: decode %s: %w", e.EventID, e.Type, err)
	}
	return d, nil
}

// Stream id prefixes.
const (
	StreamAccount       = "account-"
	StreamAPIKey        = "apikey-"
	StreamCompletion    = "completion-"
	StreamBillingRecord = "billingrecord-"
)
