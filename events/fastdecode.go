package events

import (
	"encoding"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"time"
)

// A plan decodes one data type's JSON without encoding/json's scanner:
// the type's fields by JSON name, read with a jsonReader. Types whose
// fields are all of the kinds it reads (strings, integers, booleans,
// times, raw JSON and structs of those) have one, built once with the
// registry: every type a completion records does. A decode returns false
// where its jsonReader gives up, and Decode then uses encoding/json; the
// tests check that a plan's value always equals encoding/json's.
type plan struct {
	typ reflect.Type
	// fields are in the order of the type's, which json.Marshal writes
	// them in; byName indexes them.
	fields []planField
	byName map[string]int
}

// planField is one field of a plan.
type planField struct {
	name  string
	index int
	kind  fieldKind
	// sub is a struct field's own plan.
	sub *plan
}

type fieldKind int

const (
	fieldString fieldKind = iota
	fieldInt
	fieldBool
	fieldTime
	fieldRaw
	fieldStruct
)

var (
	timeType            = reflect.TypeFor[time.Time]()
	rawType             = reflect.TypeFor[json.RawMessage]()
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	validNameAlphabet   = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
)

// newPlan returns t's plan, or false when t has a field a plan does not
// read as encoding/json would (an embedded struct, a ",string" option, a
// pointer, a map, a slice, a type with its own unmarshaler…).
func newPlan(t reflect.Type) (*plan, bool) {
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	p := &plan{typ: t, byName: map[string]int{}}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			return nil, false
		}
		name, opts, hasOpts := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || (name == "-" && !hasOpts) {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if !validName(name) || slices.Contains(strings.Split(opts, ","), "string") {
			return nil, false
		}
		if _, dup := p.byName[name]; dup {
			return nil, false
		}
		pf, ok := newPlanField(i, f.Type)
		if !ok {
			return nil, false
		}
		pf.name = name
		p.byName[name] = len(p.fields)
		p.fields = append(p.fields, pf)
	}
	return p, true
}

func newPlanField(i int, t reflect.Type) (planField, bool) {
	switch {
	case t == timeType:
		return planField{index: i, kind: fieldTime}, true
	case t == rawType:
		return planField{index: i, kind: fieldRaw}, true
	case reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType):
		return planField{}, false
	}
	switch t.Kind() {
	case reflect.String:
		return planField{index: i, kind: fieldString}, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return planField{index: i, kind: fieldInt}, true
	case reflect.Bool:
		return planField{index: i, kind: fieldBool}, true
	case reflect.Struct:
		sub, ok := newPlan(t)
		return planField{index: i, kind: fieldStruct, sub: sub}, ok
	}
	return planField{}, false
}

// validName reports whether name is a JSON name a plan matches exactly as
// encoding/json does (it matches others in its own ways).
func validName(name string) bool {
	return name != "" && strings.Trim(name, validNameAlphabet) == ""
}

// decode reads raw as one object of the plan's type.
func (p *plan) decode(raw json.RawMessage) (Data, bool) {
	v := reflect.New(p.typ).Elem()
	r := jsonReader{b: raw}
	next := 0
	if !r.document(func(k []byte) bool { return r.field(p, v, k, &next) }) {
		return nil, false
	}
	d, ok := v.Interface().(Data)
	return d, ok
}

// lookup returns the field named k, trying the one expected next first.
func (p *plan) lookup(k []byte, next *int) (planField, bool) {
	i := *next
	if i >= len(p.fields) || p.fields[i].name != string(k) {
		var ok bool
		if i, ok = p.byName[string(k)]; !ok {
			return planField{}, false
		}
	}
	*next = i + 1
	return p.fields[i], true
}

// field reads the value of member k into its field of v, a value of p's
// type; next is the index of the field expected next.
func (r *jsonReader) field(p *plan, v reflect.Value, k []byte, next *int) bool {
	f, ok := p.lookup(k, next)
	if !ok {
		return false
	}
	fv := v.Field(f.index)
	switch f.kind {
	case fieldString:
		var s string
		if !r.str(&s) {
			return false
		}
		fv.SetString(s)
	case fieldInt:
		var n int64
		if !r.int64(&n) || fv.OverflowInt(n) {
			return false
		}
		fv.SetInt(n)
	case fieldBool:
		var b bool
		if !r.bool(&b) {
			return false
		}
		fv.SetBool(b)
	case fieldTime:
		return r.time(fv.Addr().Interface().(*time.Time))
	case fieldRaw:
		return r.raw(fv.Addr().Interface().(*json.RawMessage))
	case fieldStruct:
		// Into the field as it is: a repeated key adds to what the first
		// set, as with encoding/json.
		subNext := 0
		return r.object(func(k []byte) bool { return r.field(f.sub, fv, k, &subNext) })
	}
	return true
}

// fastDecoder returns the plan decoder of the type decode decodes, nil when
// the type has no plan.
func fastDecoder(decode func(json.RawMessage) (Data, error)) func(json.RawMessage) (Data, bool) {
	zero, err := decode(json.RawMessage(`{}`))
	if err != nil {
		return nil
	}
	p, ok := newPlan(reflect.TypeOf(zero))
	if !ok {
		return nil
	}
	return p.decode
}
