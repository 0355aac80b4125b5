package openaiwire_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

// WithIDAndModel gives the same object a decode and re-encode would,
// keeping every other byte as it came.
func TestWithIDAndModel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{`{"id":"up-1","object":"chat.completion","model":"gpt-x","choices":[]}`, `{"id":"cmpl","object":"chat.completion","model":"m","choices":[]}`},
		{` { "model" : "a" , "x" : {"id":"inner","model":[1,"}"]}, "id": "b" } `, ` { "model" : "m" , "x" : {"id":"inner","model":[1,"}"]}, "id": "cmpl" } `},
		{`{"choices":[{"delta":{"content":"a\"},\u0000"}}]}`, `{"id":"cmpl","model":"m","choices":[{"delta":{"content":"a\"},\u0000"}}]}`},
		{`{}`, `{"id":"cmpl","model":"m"}`},
		{`{"id":null,"n":1e5}`, `{"model":"m","id":"cmpl","n":1e5}`},
		{`{"model":true}`, `{"id":"cmpl","model":"m"}`},
	} {
		got, err := openaiwire.WithIDAndModel([]byte(tc.in), "cmpl", "m")
		if err != nil || string(got) != tc.want {
			t.Errorf("WithIDAndModel(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
			continue
		}
		var a, b map[string]any
		if err := json.Unmarshal(got, &a); err != nil {
			t.Errorf("%s: %v", got, err)
		}
		_ = json.Unmarshal([]byte(tc.in), &b)
		b["id"], b["model"] = "cmpl", "m"
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s decodes to %v, want %v", got, a, b)
		}
	}
	for _, bad := range []string{``, `[]`, `"x"`, `{"a"}`, `{"a":}`, `{"a":1`, `{"a":"b}`, `{"a":1}x`, `{"a":[1}`, `{,}`} {
		if got, err := openaiwire.WithIDAndModel([]byte(bad), "cmpl", "m"); err == nil {
			t.Errorf("WithIDAndModel(%q) = %s, want an error", bad, got)
		}
	}
}

// FuzzWithIDAndModel: on any valid object the result decodes to the
// object with id and model set; nothing panics on any input.
func FuzzWithIDAndModel(f *testing.F) {
	for _, s := range []string{`{"id":"x","model":"y","choices":[{"index":0}]}`, `{}`, `{"a":"\\\"{"}`, `[1]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := openaiwire.WithIDAndModel([]byte(in), "cmpl", "m")
		var want map[string]any
		if json.Unmarshal([]byte(in), &want) != nil || want == nil {
			return
		}
		if err != nil {
			t.Fatalf("WithIDAndModel(%q): %v", in, err)
		}
		var have map[string]any
		if err := json.Unmarshal(got, &have); err != nil {
			t.Fatalf("WithIDAndModel(%q) = %q: %v", in, got, err)
		}
		want["id"], want["model"] = "cmpl", "m"
		if !reflect.DeepEqual(have, want) {
			t.Fatalf("WithIDAndModel(%q) = %q", in, got)
		}
	})
}
