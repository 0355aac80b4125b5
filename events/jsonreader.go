package events

import (
	"encoding/json"
	"math"
	"time"
	"unicode/utf8"
)

// jsonReader reads the JSON objects json.Marshal writes for event data,
// without reflection, for the fast decoders of the types read most. It
// gives up (its methods return false) on anything it does not read
// exactly as encoding/json would: a key it is not given a field for, a
// string with an escape, a null, a number that is not a plain integer of
// the field's size, or JSON that is not valid. The caller then decodes
// with encoding/json, which decides, so that a fast decode's value is
// always encoding/json's.
type jsonReader struct {
	b []byte
	i int
}

// document reads b as one object, calling field for each member with the
// reader placed at its value, which field must read (true) or give up on
// (false); then nothing but white space may follow.
func (r *jsonReader) document(field func(key []byte) bool) bool {
	if !r.object(field) {
		return false
	}
	r.ws()
	return r.i == len(r.b)
}

func (r *jsonReader) ws() {
	if r.i < len(r.b) && r.b[r.i] > ' ' {
		return // what json.Marshal writes: no white space
	}
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// next skips white space and reports whether the next byte is c, reading
// it if so.
func (r *jsonReader) next(c byte) bool {
	r.ws()
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

// object reads an object, calling field for each member (see document).
func (r *jsonReader) object(field func(key []byte) bool) bool {
	if !r.next('{') {
		return false
	}
	if r.next('}') {
		return true
	}
	for {
		r.ws()
		key, ok := r.plainString()
		if !ok || !r.next(':') {
			return false
		}
		r.ws()
		if !field(key) {
			return false
		}
		if r.next(',') {
			continue
		}
		return r.next('}')
	}
}

// plainString reads a string without escapes and returns its bytes
// (between the quotes, not copied).
func (r *jsonReader) plainString() ([]byte, bool) {
	if r.i >= len(r.b) || r.b[r.i] != '"' {
		return nil, false
	}
	start := r.i + 1
	for j := start; j < len(r.b); j++ {
		switch c := r.b[j]; {
		case c == '"':
			r.i = j + 1
			return r.b[start:j], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// str reads a string field. A string that is not valid UTF-8 is left to
// encoding/json, which replaces the invalid bytes.
func (r *jsonReader) str(dst *string) bool {
	s, ok := r.plainString()
	if !ok {
		return false
	}
	for _, c := range s {
		if c >= utf8.RuneSelf {
			if !utf8.Valid(s) {
				return false
			}
			break
		}
	}
	*dst = string(s)
	return true
}

// int64 reads an integer field: an optional minus and digits without a
// leading zero, within int64.
func (r *jsonReader) int64(dst *int64) bool {
	neg := r.i < len(r.b) && r.b[r.i] == '-'
	j := r.i
	if neg {
		j++
	}
	start := j
	var n uint64
	for ; j < len(r.b) && r.b[j] >= '0' && r.b[j] <= '9'; j++ {
		if j-start == 19 {
			// Twenty digits: out of range, as encoding/json will say.
			return false
		}
		n = n*10 + uint64(r.b[j]-'0') // at most 19 digits: no overflow
	}
	switch {
	case j == start, r.b[start] == '0' && j-start > 1:
		return false
	case j < len(r.b) && (r.b[j] == '.' || r.b[j] == 'e' || r.b[j] == 'E'):
		return false
	case !neg && n > math.MaxInt64, neg && n > -math.MinInt64:
		return false
	}
	r.i = j
	*dst = int64(n)
	if neg {
		*dst = -int64(n) // -(1<<63) wraps to itself: MinInt64
	}
	return true
}

// bool reads a boolean field.
func (r *jsonReader) bool(dst *bool) bool {
	switch {
	case r.literal("true"):
		*dst = true
	case r.literal("false"):
		*dst = false
	default:
		return false
	}
	return true
}

func (r *jsonReader) literal(lit string) bool {
	if len(r.b)-r.i < len(lit) || string(r.b[r.i:r.i+len(lit)]) != lit {
		return false
	}
	r.i += len(lit)
	return true
}

// time reads a time field with time.Time's own UnmarshalJSON, as
// encoding/json does.
func (r *jsonReader) time(dst *time.Time) bool {
	start := r.i
	if _, ok := r.plainString(); !ok {
		return false
	}
	return dst.UnmarshalJSON(r.b[start:r.i]) == nil
}

// raw reads any value but null into a json.RawMessage field: a copy of its
// bytes, as encoding/json makes.
func (r *jsonReader) raw(dst *json.RawMessage) bool {
	start := r.i
	if r.literal("null") || !r.skip(0) {
		return false
	}
	*dst = append(json.RawMessage(nil), r.b[start:r.i]...)
	return true
}

// maxDepth bounds the nesting skip follows; deeper values are left to
// encoding/json.
const maxDepth = 1000

// skip reads one valid JSON value of any kind, at nesting depth.
func (r *jsonReader) skip(depth int) bool {
	if r.i >= len(r.b) || depth > maxDepth {
		return false
	}
	switch c := r.b[r.i]; {
	case c == '{':
		return r.object(func([]byte) bool { return r.skip(depth + 1) })
	case c == '[':
		return r.array(depth)
	case c == '"':
		return r.skipString()
	case c == '-' || (c >= '0' && c <= '9'):
		return r.skipNumber()
	default:
		return r.literal("true") || r.literal("false") || r.literal("null")
	}
}

func (r *jsonReader) array(depth int) bool {
	r.i++ // [
	if r.next(']') {
		return true
	}
	for {
		r.ws()
		if !r.skip(depth + 1) {
			return false
		}
		if r.next(',') {
			continue
		}
		return r.next(']')
	}
}

// skipString reads a string, escapes included: \" \\ \/ \b \f \n \r \t
// and \u with four hex digits. Any other byte but a control character
// may stand in it (encoding/json accepts invalid UTF-8 there).
func (r *jsonReader) skipString() bool {
	for j := r.i + 1; j < len(r.b); j++ {
		switch c := r.b[j]; {
		case c == '"':
			r.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			j++
			if j >= len(r.b) {
				return false
			}
			switch r.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(r.b) || !isHex(r.b[j+1]) || !isHex(r.b[j+2]) || !isHex(r.b[j+3]) || !isHex(r.b[j+4]) {
					return false
				}
				j += 4
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// skipNumber reads a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (r *jsonReader) skipNumber() bool {
	j := r.i
	if r.b[j] == '-' {
		j++
	}
	digits := func() int {
		n := 0
		for ; j < len(r.b) && r.b[j] >= '0' && r.b[j] <= '9'; j++ {
			n++
		}
		return n
	}
	switch {
	case j < len(r.b) && r.b[j] == '0':
		j++
	case digits() == 0:
		return false
	}
	if j < len(r.b) && r.b[j] == '.' {
		j++
		if digits() == 0 {
			return false
		}
	}
	if j < len(r.b) && (r.b[j] == 'e' || r.b[j] == 'E') {
		j++
		if j < len(r.b) && (r.b[j] == '+' || r.b[j] == '-') {
			j++
		}
		if digits() == 0 {
			return false
		}
	}
	r.i = j
	return true
}
