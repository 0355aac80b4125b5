package events

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fastTypes are the types with a fast decoder, each with a zero value to
// decode into with encoding/json.
func fastTypes(t testing.TB) map[string]typeInfo {
	t.Helper()
	out := map[string]typeInfo{}
	for name, info := range registry {
		if info.fast != nil {
			out[name] = info
		}
	}
	if len(out) < 7 {
		t.Fatalf("%d fast decoders; want the seven of a completion's events", len(out))
	}
	return out
}

// checkFast fails t when the fast decoder of typ returns a value for raw
// that encoding/json does not, and reports whether it returned one.
func checkFast(t testing.TB, typ string, info typeInfo, raw []byte) bool {
	t.Helper()
	got, ok := info.fast(raw)
	if !ok {
		return false
	}
	want, err := info.decode(raw)
	if err != nil {
		t.Fatalf("%s %q: fast decode gave %+v, encoding/json an error: %v", typ, raw, got, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s %q:\nfast          %#v\nencoding/json %#v", typ, raw, got, want)
	}
	return true
}

// randomData returns a value of typ's Go type with every field drawn from
// rng: integers up to the extremes, times in several zones, JSON bodies,
// and strings, plain (ASCII or not, nothing json.Marshal escapes) or wild
// (quotes, escapes, HTML, control characters and invalid UTF-8 too).
func randomData(rng *rand.Rand, info typeInfo, wild bool) Data {
	zero, _ := info.decode(json.RawMessage(`{}`))
	v := reflect.New(reflect.TypeOf(zero)).Elem()
	fill(rng, v, wild)
	return v.Interface().(Data)
}

func fill(rng *rand.Rand, v reflect.Value, wild bool) {
	switch v.Interface().(type) {
	case time.Time:
		zones := []*time.Location{time.UTC, time.FixedZone("", 3600), time.FixedZone("", -5*3600-1800)}
		t := time.Unix(rng.Int64N(4_000_000_000), rng.Int64N(1e9)).In(zones[rng.IntN(len(zones))])
		v.Set(reflect.ValueOf(t))
		return
	case json.RawMessage:
		bodies := []string{`{"model":"m","messages":[{"role":"user","content":"h\u00e9 \"x\" \\ <b>"}]}`, `[1,-2.5e3,true,null,{}]`, `"s"`, `0`, `{"a":{"b":[[],{}]}}`}
		v.SetBytes([]byte(bodies[rng.IntN(len(bodies))]))
		return
	}
	switch v.Kind() {
	case reflect.String:
		parts := []string{"acc_1", "c-42", "gpt-4o", "é", "日本", " ", "", "2026-03"}
		if wild {
			parts = append(parts, `"`, `\`, "<&>", "\x00", "\n", "\xff", "\u2028")
		}
		var b strings.Builder
		for range rng.IntN(4) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		v.SetString(b.String())
	case reflect.Int, reflect.Int64:
		ns := []int64{0, 1, -1, 9, 10, 12345, -987654321, math.MaxInt64, math.MinInt64, 999_999_999_999_999_999, rng.Int64()}
		v.SetInt(ns[rng.IntN(len(ns))])
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(rng, v.Field(i), wild)
		}
	}
}

func TestFastDecodeEqualsEncodingJSON(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 8))
	for typ, info := range fastTypes(t) {
		for i := range 1500 {
			wild := i%2 == 1
			raw, err := json.Marshal(randomData(rng, info, wild))
			if err != nil {
				t.Fatal(err)
			}
			if !checkFast(t, typ, info, raw) && !wild {
				t.Fatalf("%s %s: fast decode gave up on what json.Marshal wrote without an escape", typ, raw)
			}
			// And mutations of it: most are not valid, or not data of typ.
			for range 3 {
				checkFast(t, typ, info, mutate(rng, raw))
			}
		}
	}
}

// mutate returns raw with a few bytes changed, inserted or removed.
func mutate(rng *rand.Rand, raw []byte) []byte {
	b := append([]byte(nil), raw...)
	alphabet := []byte(`{}[]":,\ -+.eE0123456789tfnulr` + "\x00\xff\t")
	for range 1 + rng.IntN(3) {
		if len(b) == 0 {
			break
		}
		i := rng.IntN(len(b))
		c := alphabet[rng.IntN(len(alphabet))]
		switch rng.IntN(3) {
		case 0:
			b[i] = c
		case 1:
			b = append(b[:i], append([]byte{c}, b[i:]...)...)
		default:
			b = append(b[:i], b[i+1:]...)
		}
	}
	return b
}

// Inputs encoding/json reads in its own way, or refuses: the fast decoders
// must give up on them or agree.
var fastEdgeCases = []string{
	`{}`, ` {} `, `{"completion_id":"c1"}`, `{"completion_id":"c1","completion_id":"c2"}`,
	`{"Completion_ID":"c1"}`, `{"completion_id":null}`, `null`, `[]`, `{"completion_id":"c\u00e91"}`,
	`{"completion_id":"c1",}`, `{"completion_id":"c1"} x`, `{"completion_id":"c1"}{}`, `{"completion_id" : "c1" }`,
	`{"cost_nano_usd":1.0}`, `{"cost_nano_usd":1e3}`, `{"cost_nano_usd":-0}`, `{"cost_nano_usd":01}`,
	`{"cost_nano_usd":9223372036854775807}`, `{"cost_nano_usd":9223372036854775808}`, `{"cost_nano_usd":-9223372036854775808}`,
	`{"cost_nano_usd":"1"}`, `{"tokens":-}`, `{"status":502}`, `{"status":5.02e2}`,
	`{"lease_expires_at":"2026-03-14T15:09:26.535897932Z"}`, `{"lease_expires_at":"2026-03-14T15:09:26+01:00"}`,
	`{"lease_expires_at":"2026-03-14"}`, `{"lease_expires_at":null}`, `{"expires_at":"2026-13-01T00:00:00Z"}`,
	`{"request":{"a":[1,2,{"b":"\u0041\n"}]}}`, `{"request":null}`, `{"request":{"a":}}`, `{"request":"\x"}`,
	`{"request":[1,]}`, `{"request":01}`, `{"request":-}`, `{"request":1.}`, `{"request":.5}`, `{"request":1e}`,
	`{"request":"\ud800"}`, `{"request":"` + "\x01" + `"}`, `{"request":tru}`, `{"response":{"x":1}}`,
	`{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}`, `{"usage":null}`, `{"usage":{"estimated":true}}`,
	`{"usage":{"Prompt_Tokens":1}}`, `{"stream":true,"stream":false}`, `{"stream":1}`, `{"day":"` + "\xff" + `"}`,
	`{"completion_id":"` + "\u2028" + `"}`, `{"completion_id":"` + "\x7f" + `"}`, "{\"completion_id\":\"c1\"\n}",
	`{"request":` + strings.Repeat("[", 1200) + strings.Repeat("]", 1200) + `}`,
}

func TestFastDecodeEdgeCases(t *testing.T) {
	t.Parallel()
	for typ, info := range fastTypes(t) {
		for _, c := range fastEdgeCases {
			checkFast(t, typ, info, []byte(c))
		}
	}
}

func FuzzFastDecode(f *testing.F) {
	for _, c := range fastEdgeCases {
		f.Add([]byte(c))
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for _, info := range fastTypes(f) {
		raw, err := json.Marshal(randomData(rng, info, true))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for typ, info := range fastTypes(t) {
			checkFast(t, typ, info, raw)
		}
	})
}
