package config

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// ValidationError is one problem found by Validate (or a value Parse could
// not parse), naming the offending field.
type ValidationError struct {
	Field   string // e.g. "models[2].price.input_per_million"
	Message string
	Err     error // underlying cause, if any
}

// Error implements error.
func (e *ValidationError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Field, e.Message, e.Err)
	}
	return e.Field + ": " + e.Message
}

// Unwrap returns the underlying cause.
func (e *ValidationError) Unwrap() error { return e.Err }

// problems collects *ValidationError.
type problems []error

// add records a problem of field.
func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// wrap records a problem of field caused by err.
func (p *problems) wrap(field, msg string, err error) {
	*p = append(*p, &ValidationError{Field: field, Message: msg, Err: err})
}

// checkName checks the name of the list entry at field f: required, and
// unique among seen (the names so far, to which it is added).
func checkName(f, what, name string, seen map[string]bool, bad *problems) {
	switch {
	case name == "":
		bad.add(f+".name", "required")
	case seen[name]:
		bad.add(f+".name", "duplicate %s name %q", what, name)
	}
	seen[name] = true
}

// Duration is a time.Duration written in YAML as "30s", "1h".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration: %w", n.Line, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: duration %q (use e.g. \"30s\", \"1h\"): %w", n.Line, s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
