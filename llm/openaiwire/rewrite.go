package openaiwire

import (
	"encoding/json"
	"errors"
	"fmt"
)

// errNotObject: a body that is not a JSON object whose members can be read.
var errNotObject = errors.New("openaiwire: not a JSON object")

// WithIDAndModel returns obj, a JSON object (a chat.completion or one of
// its chunks), with its top-level "id" and "model" members set to id and
// model; a member that is absent is added first. Every other byte stays
// as it came: member order, spacing, escapes, numbers. It reads obj once,
// without decoding it (a provider's answer is copied, not re-encoded);
// it checks the object's structure, not that its values are valid JSON:
// callers that need that validate first (json.Valid, or a decode).
func WithIDAndModel(obj []byte, id, model string) ([]byte, error) {
	idJSON, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	modelJSON, err := json.Marshal(model)
	if err != nil {
		return nil, err
	}
	spans, hasMembers, err := topLevelValues(obj, `"id"`, `"model"`)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(obj)+len(idJSON)+len(modelJSON)+16)
	start := skipSpace(obj, 0) + 1
	out = append(out, obj[:start]...)
	added := 0
	for i, name := range []string{`"id":`, `"model":`} {
		if spans[i][0] < 0 {
			if added > 0 {
				out = append(out, ',')
			}
			out = append(append(out, name...), [][]byte{idJSON, modelJSON}[i]...)
			added++
		}
	}
	if added > 0 && hasMembers {
		out = append(out, ',')
	}
	at := start
	for _, k := range orderedSpans(spans) {
		out = append(out, obj[at:spans[k][0]]...)
		out = append(out, [][]byte{idJSON, modelJSON}[k]...)
		at = spans[k][1]
	}
	return append(out, obj[at:]...), nil
}

// orderedSpans returns the indexes of the found spans in obj's order.
func orderedSpans(spans [2][2]int) []int {
	var out []int
	for i, s := range spans {
		if s[0] >= 0 {
			out = append(out, i)
		}
	}
	if len(out) == 2 && spans[1][0] < spans[0][0] {
		out[0], out[1] = 1, 0
	}
	return out
}

// topLevelValues finds the values of the top-level members named by the
// two raw JSON keys in obj: [start, end) of each ({-1, -1} when absent;
// the last, when repeated), and whether obj has any member.
func topLevelValues(obj []byte, key0, key1 string) (spans [2][2]int, hasMembers bool, err error) {
	spans = [2][2]int{{-1, -1}, {-1, -1}}
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return spans, false, errNotObject
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return spans, false, checkTail(obj, i+1)
	}
	for {
		ks := i
		if i >= len(obj) || obj[i] != '"' {
			return spans, false, fmt.Errorf("%w: a member's name at offset %d", errNotObject, i)
		}
		if i, err = skipValue(obj, i); err != nil {
			return spans, false, err
		}
		key := string(obj[ks:i])
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] != ':' {
			return spans, false, fmt.Errorf("%w: no colon at offset %d", errNotObject, i)
		}
		vs := skipSpace(obj, i+1)
		if i, err = skipValue(obj, vs); err != nil {
			return spans, false, err
		}
		switch key {
		case key0:
			spans[0] = [2]int{vs, i}
		case key1:
			spans[1] = [2]int{vs, i}
		}
		i = skipSpace(obj, i)
		switch {
		case i < len(obj) && obj[i] == ',':
			i = skipSpace(obj, i+1)
		case i < len(obj) && obj[i] == '}':
			return spans, true, checkTail(obj, i+1)
		default:
			return spans, false, fmt.Errorf("%w: unexpected byte at offset %d", errNotObject, i)
		}
	}
}

// checkTail accepts only white space after the object.
func checkTail(obj []byte, i int) error {
	if skipSpace(obj, i) != len(obj) {
		return fmt.Errorf("%w: data after the object", errNotObject)
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the offset just past the JSON value starting at i.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return i, fmt.Errorf("%w: a value is missing at the end", errNotObject)
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1, nil
			}
		}
		return i, fmt.Errorf("%w: an unterminated string at offset %d", errNotObject, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipValue(b, j)
				if err != nil {
					return i, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
		}
		return i, fmt.Errorf("%w: an unterminated value at offset %d", errNotObject, i)
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	if j == i {
		return i, fmt.Errorf("%w: a value is missing at offset %d", errNotObject, i)
	}
	return j, nil
}
