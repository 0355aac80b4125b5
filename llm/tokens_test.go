package llm

import (
	"strings"
	"testing"
)

func TestCountTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text string
		want int64
	}{
		{"", 0},
		{"hello", 1},
		{"hello world", 2},                // "hello", " world"
		{"Hello, world!", 4},              // "Hello", ",", " world", "!"
		{"12345", 2},                      // "123", "45"
		{" 1234567", 3},                   // " 123", "456", "7"
		{"2024-01-15", 6},                 // "202", "4", "-", "01", "-", "15"
		{"don't", 3},                      // "don", "'", "t"
		{"a  b", 3},                       // "a", " ", " b"
		{"\n\nhi", 2},                     // "\n\n", "hi"
		{"line one\nline two", 5},         // "line", " one", "\n", "line", " two"
		{"héllo wörld", 2},                // letters include accents
		{"日本語", 1},                        // one run of letters
		{"   ", 1},                        // a whitespace run
		{"x\xff", 2},                      // an invalid byte is one token
		{"The quick brown fox.", 5},       // "The", " quick", " brown", " fox", "."
		{"$1,000.50", 6},                  // "$", "1", ",", "000", ".", "50"
		{"emoji 🙂🙂", 3},                   // "emoji", " 🙂", "🙂"
		{strings.Repeat("ab ", 100), 101}, // "ab", " ab"×99, then the trailing " " alone
	}
	for _, tt := range tests {
		if got := CountTokens(tt.text); got != tt.want {
			t.Errorf("CountTokens(%q) = %d, want %d", tt.text, got, tt.want)
		}
	}
}

func TestTokensConcatenateBack(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"Hello, world!", "a  b\n\n c", " 1234567 x", "héllo\t\twörld  ", "x\xffy"} {
		var b strings.Builder
		for rest := s; rest != ""; {
			var tok string
			tok, rest = nextToken(rest)
			if tok == "" {
				t.Fatalf("empty token in %q", s)
			}
			b.WriteString(tok)
		}
		if b.String() != s {
			t.Errorf("tokens of %q join to %q", s, b.String())
		}
	}
}

func TestTruncateTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text      string
		limit     int64
		want      string
		truncated bool
	}{
		{"one two three", 2, "one two", true},
		{"one two three", 3, "one two three", false},
		{"one two three", 10, "one two three", false},
		{"Hello, world!", 1, "Hello", true},
		{"", 1, "", false},
	}
	for _, tt := range tests {
		got, cut := truncateTokens(tt.text, tt.limit)
		if got != tt.want || cut != tt.truncated {
			t.Errorf("truncateTokens(%q, %d) = %q, %v; want %q, %v", tt.text, tt.limit, got, cut, tt.want, tt.truncated)
		}
	}
}

func TestCountPromptTokens(t *testing.T) {
	t.Parallel()
	body := []byte(`{"model":"x","messages":[
		{"role":"system","content":"Be brief."},
		{"role":"user","name":"bob","content":[{"type":"text","text":"Hello"},{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"text","text":" there"}]},
		{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"lookup","arguments":"{\"q\":1}"}}]}
	]}`)
	// 3 priming
	// + system: 4 + "system"(1) + "Be brief."(3)
	// + user: 4 + "user"(1) + "Hello there"(2) + 85 image + "bob"(1)
	// + assistant: 4 + "assistant"(1) + "lookup"(1) + `{"q":1}`(7: { " q " : 1 })
	want := int64(3 + (4 + 1 + 3) + (4 + 1 + 2 + 85 + 1) + (4 + 1 + 1 + 7))
	got, err := CountPromptTokens(body)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("CountPromptTokens = %d, want %d", got, want)
	}
	if _, err := CountPromptTokens([]byte(`{"messages":[{"role":"user","content":5}]}`)); err == nil {
		t.Fatal("numeric content accepted")
	}
	if _, err := CountPromptTokens([]byte(`[`)); err == nil {
		t.Fatal("bad JSON accepted")
	}
}
