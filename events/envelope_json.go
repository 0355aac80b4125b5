package events

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"
)

// AppendJSON appends the envelope's JSON encoding to dst: the bytes
// json.Marshal(e) gives for an envelope whose Data is compact JSON, at a
// fraction of its cost. Data is copied as it is, neither validated nor
// compacted (json.Marshal does both with every json.RawMessage), so it must
// be valid JSON: the store's always is (its column is of type json), and
// New's is json.Marshal's. Empty Data encodes as null.
//
// It fails only for a time json.Marshal cannot encode either (a year
// outside 0–9999).
func (e Envelope) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"event_id":"`...)
	dst = appendUUID(dst, e.EventID)
	dst = append(dst, `","stream_id":`...)
	dst = appendJSONString(dst, e.StreamID)
	dst = append(dst, `,"stream_version":`...)
	dst = strconv.AppendInt(dst, e.StreamVersion, 10)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, e.Type)
	dst = append(dst, `,"schema_version":`...)
	dst = strconv.AppendInt(dst, int64(e.SchemaVersion), 10)
	dst = append(dst, `,"occurred_at":"`...)
	dst, err := e.OccurredAt.AppendText(dst)
	if err != nil {
		return nil, fmt.Errorf("event %s occurred_at: %w", e.EventID, err)
	}
	dst = append(dst, `","data":`...)
	if len(e.Data) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, e.Data...)
	}
	dst = append(dst, `,"metadata":{`...)
	sep := ""
	for _, f := range [...]struct{ key, value string }{
		{`"account_id":`, e.Metadata.AccountID},
		{`"correlation_id":`, e.Metadata.CorrelationID},
		{`"causation_id":`, e.Metadata.CausationID},
		{`"actor":`, e.Metadata.Actor},
	} {
		if f.value != "" { // omitempty
			dst = append(dst, sep...)
			dst = append(dst, f.key...)
			dst = appendJSONString(dst, f.value)
			sep = ","
		}
	}
	dst = append(dst, '}')
	if e.Position != 0 { // omitempty
		dst = append(dst, `,"position":`...)
		dst = strconv.AppendInt(dst, e.Position, 10)
	}
	return append(dst, '}'), nil
}

// appendUUID appends id in its canonical form, as id.String() spells it.
func appendUUID(dst []byte, id uuid.UUID) []byte {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return append(dst, b[:]...)
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it: quotes, backslashes and control characters, and also <, >,
// &, U+2028 and U+2029; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
