package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/mux"
)

// Client input is checked here before anything is stored: text that
// PostgreSQL or a provider cannot take is a 400 naming the parameter,
// never a 500 from deep inside an append.
//
//   - A JSON body must be UTF-8 (RFC 8259 §8.1): a byte sequence that is
//     not is refused as invalid_json, naming the field that holds it.
//   - A \u escape of a lone UTF-16 surrogate (\ud800 without its low half)
//     encodes no character: Go would turn it into U+FFFD (the stored
//     request would not be the one sent), PostgreSQL's jsonb refuses it
//     and providers reject it. It is refused as invalid_value, naming the
//     field.
//   - \u0000 is a character like any other in a chat message and is kept;
//     in names and identifiers control characters are refused.

// textProblem is what is wrong with a JSON string.
type textProblem int

const (
	textOK textProblem = iota
	// textNotUTF8: raw bytes that are not UTF-8.
	textNotUTF8
	// textLoneSurrogate: a \u escape of an unpaired UTF-16 surrogate.
	textLoneSurrogate
)

// badText is the first problem found in a JSON document and where.
type badText struct {
	path    string
	problem textProblem
	// offset is the byte offset of the problem in the document.
	offset int
}

// jsonTextError checks a JSON body that is syntactically valid for text
// PostgreSQL cannot store as sent, and returns the error naming where.
func jsonTextError(body []byte) *apiError {
	bt, ok := findBadText(body)
	if !ok {
		return nil
	}
	where := bt.path
	if where == "" {
		where = "the body"
	}
	switch bt.problem {
	case textNotUTF8:
		return badRequest("invalid_json", bt.path, "%s contains bytes that are not UTF-8 (at byte offset %d); JSON text must be UTF-8.", where, bt.offset)
	default:
		return badRequest("invalid_value", bt.path, "%s contains an unpaired UTF-16 surrogate escape (at byte offset %d), which encodes no character.", where, bt.offset)
	}
}

// findBadText walks valid JSON and reports the first string (value or
// key) with bytes that are not UTF-8 or an unpaired surrogate escape. A
// bad key is reported at the path of its object.
func findBadText(b []byte) (badText, bool) {
	s := &jsonWalker{b: b}
	s.value("")
	return s.bad, s.found
}

// jsonWalker is a minimal scanner over JSON that json.Valid accepted.
type jsonWalker struct {
	b     []byte
	i     int
	bad   badText
	found bool
}

func (w *jsonWalker) skipSpace() {
	for w.i < len(w.b) && (w.b[w.i] == ' ' || w.b[w.i] == '\t' || w.b[w.i] == '\n' || w.b[w.i] == '\r') {
		w.i++
	}
}

func (w *jsonWalker) value(path string) {
	w.skipSpace()
	if w.found || w.i >= len(w.b) {
		return
	}
	switch w.b[w.i] {
	case '{':
		w.object(path)
	case '[':
		w.array(path)
	case '"':
		w.str(path)
	default: // number, true, false, null
		for w.i < len(w.b) && !strings.ContainsRune(",]} \t\n\r", rune(w.b[w.i])) {
			w.i++
		}
	}
}

func (w *jsonWalker) object(path string) {
	w.i++ // {
	for !w.found {
		w.skipSpace()
		if w.i >= len(w.b) || w.b[w.i] == '}' {
			w.i++
			return
		}
		if w.b[w.i] == ',' {
			w.i++
			continue
		}
		start := w.i
		w.str(path) // the key: a problem in it is reported at the object
		if w.found {
			return
		}
		key, err := strconv.Unquote(string(w.b[start:w.i]))
		if err != nil {
			key = string(w.b[start+1 : w.i-1])
		}
		w.skipSpace()
		w.i++ // :
		child := key
		if path != "" {
			child = path + "." + key
		}
		w.value(child)
	}
}

func (w *jsonWalker) array(path string) {
	w.i++ // [
	for n := 0; !w.found; n++ {
		w.skipSpace()
		if w.i >= len(w.b) || w.b[w.i] == ']' {
			w.i++
			return
		}
		if w.b[w.i] == ',' {
			w.i++
			n--
			continue
		}
		w.value(fmt.Sprintf("%s[%d]", path, n))
	}
}

// str scans a string literal, checking its bytes and escapes.
func (w *jsonWalker) str(path string) {
	w.i++             // opening quote
	pendingHigh := -1 // offset of a high surrogate escape awaiting its low half
	fail := func(p textProblem, at int) {
		w.bad, w.found = badText{path: path, problem: p, offset: at}, true
	}
	for w.i < len(w.b) {
		c := w.b[w.i]
		switch {
		case c == '"':
			if pendingHigh >= 0 {
				fail(textLoneSurrogate, pendingHigh)
				return
			}
			w.i++
			return
		case c == '\\' && w.i+1 < len(w.b) && w.b[w.i+1] == 'u' && w.i+6 <= len(w.b):
			r, err := strconv.ParseUint(string(w.b[w.i+2:w.i+6]), 16, 32)
			if err != nil { // cannot happen after json.Valid
				fail(textLoneSurrogate, w.i)
				return
			}
			switch {
			case r >= 0xD800 && r < 0xDC00:
				if pendingHigh >= 0 {
					fail(textLoneSurrogate, pendingHigh)
					return
				}
				pendingHigh = w.i
			case r >= 0xDC00 && r < 0xE000:
				if pendingHigh < 0 {
					fail(textLoneSurrogate, w.i)
					return
				}
				pendingHigh = -1
			default:
				if pendingHigh >= 0 {
					fail(textLoneSurrogate, pendingHigh)
					return
				}
			}
			w.i += 6
		case pendingHigh >= 0:
			fail(textLoneSurrogate, pendingHigh)
			return
		case c == '\\':
			w.i += 2
		case c < utf8.RuneSelf:
			w.i++
		default:
			r, size := utf8.DecodeRune(w.b[w.i:])
			if r == utf8.RuneError && size == 1 {
				fail(textNotUTF8, w.i)
				return
			}
			w.i += size
		}
	}
}

// syntaxError is the 400 for a body that is not JSON, or is JSON of the
// wrong shape: a field of the wrong type is named.
func syntaxError(err error) *apiError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return badRequest("invalid_type", te.Field, "%s must be %s, not %s.", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return badRequest("invalid_json", "", "We could not parse the JSON body of your request: %s (at byte offset %d).", se.Error(), se.Offset)
	}
	return badRequest("invalid_json", "", "We could not parse the JSON body of your request: %s", err.Error())
}

// jsonKind names a Go kind as JSON.
func jsonKind(kind string) string {
	switch {
	case kind == "string":
		return "a string"
	case kind == "bool":
		return "a boolean"
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"):
		return "an integer in range"
	case strings.HasPrefix(kind, "float"):
		return "a number"
	case kind == "slice", kind == "array":
		return "an array"
	default:
		return "an object"
	}
}

// unmarshalClient decodes a client's JSON body into v: a 400 for a body
// that is not JSON, a field of the wrong type, bytes that are not UTF-8 or
// an unpaired surrogate, each naming the field where it can.
func unmarshalClient(body []byte, v any) *apiError {
	if err := json.Unmarshal(body, v); err != nil {
		return syntaxError(err)
	}
	return jsonTextError(body)
}

// maxNameLen bounds names (accounts, keys) and identifiers, in bytes.
const maxNameLen = 256

// checkText refuses a name or identifier that PostgreSQL cannot store or
// that would corrupt logs: bytes that are not UTF-8, control characters
// (NUL included), or more than maxNameLen bytes.
func checkText(param, s string) *apiError {
	if !utf8.ValidString(s) {
		return badRequest("invalid_value", param, "%s must be UTF-8 text.", param)
	}
	if len(s) > maxNameLen {
		return badRequest("invalid_value", param, "%s must be at most %d bytes long.", param, maxNameLen)
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return badRequest("invalid_value", param, "%s must not contain control characters (found %U at byte %d).", param, []rune(s[i:])[0], i)
	}
	return nil
}

// checkTexts checks params in order (param, value, param, value, …).
func checkTexts(pv ...string) *apiError {
	for i := 0; i+1 < len(pv); i += 2 {
		if ae := checkText(pv[i], pv[i+1]); ae != nil {
			return ae
		}
	}
	return nil
}

// checkPathVars is router middleware: every path variable ({id}) of a
// matched route is an identifier, refused with 400 naming it when it holds
// bytes that are not UTF-8 or control characters (/v1/jobs/%00).
func checkPathVars(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for name, v := range mux.Vars(r) {
			if ae := checkText(name, v); ae != nil {
				writeError(w, ae)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// clip shortens s for an error message that quotes it.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
