package tokens_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tiktoken-go/tokenizer"

	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tokens"
)

// scripts generate text the estimate must not undercount.
var scripts = map[string]func(r *rand.Rand) string{
	"cjk":      func(r *rand.Rand) string { return string(rune(0x4E00 + r.IntN(0x9FFF-0x4E00))) },
	"hiragana": func(r *rand.Rand) string { return string(rune(0x3041 + r.IntN(86))) },
	"hangul":   func(r *rand.Rand) string { return string(rune(0xAC00 + r.IntN(11172))) },
	"emoji":    func(r *rand.Rand) string { return string(rune(0x1F300 + r.IntN(0x2FF))) },
	"emoji-zwj": func(r *rand.Rand) string {
		return []string{"👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👍🏽", "🇫🇷"}[r.IntN(5)]
	},
	"cyrillic":   func(r *rand.Rand) string { return string(rune(0x0410 + r.IntN(64))) },
	"arabic":     func(r *rand.Rand) string { return string(rune(0x0621 + r.IntN(42))) },
	"devanagari": func(r *rand.Rand) string { return string(rune(0x0905 + r.IntN(50))) },
	"latin":      func(r *rand.Rand) string { return string(rune('a' + r.IntN(26))) },
	"accents":    func(r *rand.Rand) string { return []string{"é", "ü", "ñ", "ø", "ß", "e\u0301"}[r.IntN(6)] },
	"digits":     func(r *rand.Rand) string { return string(rune('0' + r.IntN(10))) },
	"space":      func(r *rand.Rand) string { return []string{" ", "  ", "\n", "\t", "\r\n", "\u3000"}[r.IntN(6)] },
	"code": func(r *rand.Rand) string {
		return []string{"func ", "(){", "}\n", "x := ", "0x1F", "!=", "&&", "//", "\"", "'s", "`", "\\n", ";", "[]", "=>"}[r.IntN(15)]
	},
	"symbols": func(r *rand.Rand) string { return string(rune(0x2190 + r.IntN(0x2BFF-0x2190))) },
}

var scriptNames = func() []string {
	var out []string
	for k := range scripts {
		out = append(out, k)
	}
	return out
}()

// randomText mixes a few scripts in runs.
func randomText(r *rand.Rand, n int) string {
	var b strings.Builder
	for b.Len() < n {
		gen := scripts[scriptNames[r.IntN(len(scriptNames))]]
		for run := 1 + r.IntN(30); run > 0; run-- {
			b.WriteString(gen(r))
		}
	}
	return b.String()
}

func codec(t testing.TB, enc tokenizer.Encoding) tokenizer.Codec {
	c, err := tokenizer.Get(enc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func count(c tokenizer.Codec, s string) int64 {
	n, err := c.Count(s)
	if err != nil {
		panic(err)
	}
	return int64(n)
}

// billed is what OpenAI bills for messages of role and content parts,
// with the parts joined by sep: 3 per message, the role, the content,
// 3 for the reply priming, the tools' JSON.
func billed(c tokenizer.Codec, msgs [][]string, sep string, tools string) int64 {
	n := int64(3)
	for _, m := range msgs {
		n += 3 + count(c, m[0]) + count(c, strings.Join(m[1:], sep))
	}
	if tools != "" {
		n += count(c, tools)
	}
	return n
}

// body is a request of msgs (role, then text parts), with tools.
func body(t testing.TB, msgs [][]string, tools string, extra map[string]any) []byte {
	req := map[string]any{"model": "m"}
	var ms []map[string]any
	for i, m := range msgs {
		if len(m) == 2 && i%2 == 0 {
			ms = append(ms, map[string]any{"role": m[0], "content": m[1]})
			continue
		}
		var parts []map[string]string
		for _, p := range m[1:] {
			parts = append(parts, map[string]string{"type": "text", "text": p})
		}
		ms = append(ms, map[string]any{"role": m[0], "content": parts})
	}
	req["messages"] = ms
	if tools != "" {
		req["tools"] = json.RawMessage(tools)
	}
	for k, v := range extra {
		req[k] = v
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The estimate is never below the real tokenizer's count, for random
// prompts of every script mixed, split into random parts, whichever way
// the provider joins the parts; the byte bound is never below either
// encoding's count.
func TestEstimateIsAnUpperBoundOfTheRealCount(t *testing.T) {
	t.Parallel()
	o200k, cl100k := codec(t, tokenizer.O200kBase), codec(t, tokenizer.Cl100kBase)
	counter := &tokens.Counter{}
	r := rand.New(rand.NewPCG(8, 3))
	worst := map[string]float64{}
	for i := 0; i < 300; i++ {
		var msgs [][]string
		for m := 0; m < 1+r.IntN(4); m++ {
			msg := []string{[]string{"system", "user", "assistant"}[r.IntN(3)]}
			for p := 0; p < 1+r.IntN(4); p++ {
				msg = append(msg, randomText(r, 1+r.IntN(600)))
			}
			msgs = append(msgs, msg)
		}
		tools := ""
		if i%4 == 0 {
			tools = string(mustJSON(t, []any{map[string]any{"type": "function", "function": map[string]any{"name": "lookup",
				"description": randomText(r, 80), "parameters": map[string]any{"type": "object", "properties": map[string]any{
					"q": map[string]string{"type": "string", "description": randomText(r, 40)}}}}}}))
		}
		b := body(t, msgs, tools, nil)
		for _, c := range []struct {
			name  string
			fam   tokens.Family
			codec []tokenizer.Codec
		}{
			{"o200k", tokens.ForDeployment("openai", false, "gpt-4o"), []tokenizer.Codec{o200k}},
			{"cl100k", tokens.ForDeployment("openai", false, "gpt-4-turbo"), []tokenizer.Codec{cl100k}},
			{"bytes", tokens.ForDeployment("openai", false, "llama3.1:8b"), []tokenizer.Codec{o200k, cl100k}},
		} {
			est, err := counter.Prompt(b, c.fam)
			if err != nil {
				t.Fatal(err)
			}
			for _, cd := range c.codec {
				for _, sep := range []string{"", "\n", " ", "\n\n"} {
					real := billed(cd, msgs, sep, tools)
					if est.PromptTokens < real {
						t.Fatalf("%s: estimate %d < real %d (%s, sep %q) for %s", c.name, est.PromptTokens, real, cd.GetName(), sep, b)
					}
					worst[c.name] = max(worst[c.name], float64(real)/float64(est.PromptTokens))
				}
			}
		}
	}
	t.Logf("highest real/estimate ratio: %v", worst)
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The finding's prompt: 1,500 Chinese characters were estimated at ~32
// tokens; the estimate now covers what o200k counts.
func TestCJKPromptIsCounted(t *testing.T) {
	t.Parallel()
	o200k := codec(t, tokenizer.O200kBase)
	text := strings.Repeat("我们今天讨论一下事件溯源系统的预算控制问题，", 1500/21+1)[:1500*3]
	msgs := [][]string{{"user", text}}
	est, err := (&tokens.Counter{}).Prompt(body(t, msgs, "", nil), tokens.ForDeployment("openai", false, "gpt-4o-mini"))
	if err != nil {
		t.Fatal(err)
	}
	if real := billed(o200k, msgs, "", ""); est.PromptTokens < real || est.PromptTokens > real+20 || est.Encoding != tokens.O200k {
		t.Fatalf("estimate %d (%s), o200k bills %d", est.PromptTokens, est.Encoding, real)
	}
}

// n multiplies the completion, and without max_tokens the model's cap is
// reserved per choice; the prompt is reserved once.
func TestNMultipliesTheCompletion(t *testing.T) {
	t.Parallel()
	price, err := money.ParsePrice("0.15", "0.60")
	if err != nil {
		t.Fatal(err)
	}
	fam := tokens.ForDeployment("openai", false, "gpt-4o-mini")
	msgs := [][]string{{"user", "hello"}}
	for _, c := range []struct {
		extra      map[string]any
		wantTokens func(prompt int64) int64
	}{
		{map[string]any{"n": 64, "max_tokens": 100}, func(p int64) int64 { return p + 6400 }},
		{map[string]any{"n": 3, "max_completion_tokens": 50, "max_tokens": 999}, func(p int64) int64 { return p + 150 }},
		{map[string]any{"n": 4}, func(p int64) int64 { return p + 4*16384 }},
		{map[string]any{}, func(p int64) int64 { return p + 16384 }},
	} {
		est, err := (&tokens.Counter{}).Prompt(body(t, msgs, "", c.extra), fam)
		if err != nil {
			t.Fatal(err)
		}
		tok, cost, err := quota.WorstCase(price, est.PromptTokens, est.MaxTokens, est.N, 16384, 4096)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := price.Cost(est.PromptTokens, c.wantTokens(est.PromptTokens)-est.PromptTokens)
		if tok != c.wantTokens(est.PromptTokens) || cost != want {
			t.Fatalf("%v: %d tokens %d cost, want %d, %d", c.extra, tok, cost, c.wantTokens(est.PromptTokens), want)
		}
	}
	for _, bad := range []map[string]any{{"n": 0}, {"n": 129}, {"n": "four"}, {"max_tokens": "lots"}} {
		_, err := (&tokens.Counter{}).Prompt(body(t, msgs, "", bad), fam)
		var pe *tokens.ParamError
		if !errors.As(err, &pe) {
			t.Fatalf("%v: %v, want a ParamError", bad, err)
		}
		for k := range bad {
			if pe.Param != k {
				t.Fatalf("%v: param %q", bad, pe.Param)
			}
		}
	}
}

// Images cost the family's documented bound each; tools their JSON and
// the rendering's overhead.
func TestImagesAndToolsCount(t *testing.T) {
	t.Parallel()
	img := func(detail string) map[string]any {
		return map[string]any{"type": "image_url", "image_url": map[string]string{"url": "https://example.test/cat.png", "detail": detail}}
	}
	req := map[string]any{"model": "m", "messages": []map[string]any{{"role": "user", "content": []any{
		map[string]string{"type": "text", "text": "What is in these?"}, img("high"), img("auto"), img("low")}}}}
	b := mustJSON(t, req)
	for _, c := range []struct {
		model    string
		perImage int64
	}{{"gpt-4o", 85 + 170*8}, {"gpt-4o-mini", 2833 + 5667*8}, {"gpt-4.1-nano", 1536 * 246 / 100}, {"qwen2-vl", 16384}} {
		est, err := (&tokens.Counter{}).Prompt(b, tokens.ForDeployment("openai", false, c.model))
		if err != nil {
			t.Fatal(err)
		}
		if est.Images != 3 || est.PromptTokens < 3*c.perImage || est.PromptTokens > 3*c.perImage+60 {
			t.Fatalf("%s: %d images, %d tokens; want 3 × %d and the text", c.model, est.Images, est.PromptTokens, c.perImage)
		}
	}
	anthropic := tokens.ForDeployment("anthropic", false, "claude-sonnet-4-5")
	if est, _ := (&tokens.Counter{}).Prompt(b, anthropic); est.PromptTokens < 3*1600 {
		t.Fatalf("anthropic images: %d", est.PromptTokens)
	}

	o200k := codec(t, tokenizer.O200kBase)
	tools := string(mustJSON(t, []any{map[string]any{"type": "function", "function": map[string]any{"name": "get_weather",
		"description": "获取城市天气 🌦️", "parameters": map[string]any{"type": "object", "properties": map[string]any{
			"city": map[string]string{"type": "string", "description": "城市名"}}, "required": []string{"city"}}}}}))
	msgs := [][]string{{"user", "天气怎么样？"}}
	withTools, _ := (&tokens.Counter{}).Prompt(body(t, msgs, tools, nil), tokens.ForDeployment("openai", false, "gpt-4o"))
	without, _ := (&tokens.Counter{}).Prompt(body(t, msgs, "", nil), tokens.ForDeployment("openai", false, "gpt-4o"))
	if d := withTools.PromptTokens - without.PromptTokens; d < count(o200k, tools)+32+16 {
		t.Fatalf("tools add %d tokens; their JSON alone is %d", d, count(o200k, tools))
	}
	claude, _ := (&tokens.Counter{}).Prompt(body(t, msgs, tools, nil), anthropic)
	if claude.PromptTokens < int64(len(tools))+600 {
		t.Fatalf("anthropic tools: %d", claude.PromptTokens)
	}
}

// A deployment whose tokenizer is unknown (a fallback to a local model,
// Azure, Anthropic) makes the whole model byte-bounded; a prompt above
// the tokenizing limit is byte-bounded, and counted so.
func TestByteBoundFallbacks(t *testing.T) {
	t.Parallel()
	fam := tokens.Merge(tokens.ForDeployment("openai", false, "gpt-4o-mini"), tokens.ForDeployment("openai", false, "llama3.1:8b"))
	if fam.Encoding != tokens.Bytes || fam.ImageTokens != 2833+5667*8 {
		t.Fatalf("merged family %+v", fam)
	}
	if f := tokens.ForDeployment("openai", true, "gpt-4o-prod"); f.Encoding != tokens.Bytes {
		t.Fatalf("azure: %+v", f)
	}
	text := strings.Repeat("数据", 1000)
	b := body(t, [][]string{{"user", text}}, "", nil)
	c := &tokens.Counter{MaxTokenizeBytes: 1024}
	est, err := c.Prompt(b, tokens.ForDeployment("openai", false, "gpt-4o"))
	if err != nil {
		t.Fatal(err)
	}
	if est.Encoding != tokens.Bytes || est.PromptTokens < int64(len(text)) || c.ByteBounded() != 1 || c.Tokenized() != 0 {
		t.Fatalf("over the limit: %+v, bounded %d tokenized %d", est, c.ByteBounded(), c.Tokenized())
	}
	c.MaxTokenizeBytes = 0
	if est, _ := c.Prompt(b, tokens.ForDeployment("openai", false, "gpt-4o")); est.Encoding != tokens.O200k || c.Tokenized() != 1 {
		t.Fatalf("under the limit: %+v", est)
	}
}

// FuzzEstimateBound: for any text, split anywhere, the estimate is at
// least o200k's and cl100k's count of the concatenation.
func FuzzEstimateBound(f *testing.F) {
	for _, s := range []string{"hello world", "你好，世界", "👩‍💻🏳️‍🌈", "func main() {\n\tx := 1\n}", "  \n\n\t", "'s'll'd", "ab\u0301cd"} {
		f.Add(s, uint8(3))
	}
	o200k, cl100k := codec(f, tokenizer.O200kBase), codec(f, tokenizer.Cl100kBase)
	f.Fuzz(func(t *testing.T, s string, cut uint8) {
		s = strings.ToValidUTF8(s, "?")
		i := int(cut) % (len(s) + 1)
		for i > 0 && i < len(s) && !utf8Start(s[i]) {
			i--
		}
		parts := []string{"user", s[:i], s[i:]}
		if s[:i] == "" || s[i:] == "" {
			parts = []string{"user", s}
		}
		msgs := [][]string{parts}
		b := body(t, msgs, "", nil)
		for _, c := range []struct {
			model string
			cd    tokenizer.Codec
		}{{"gpt-4o", o200k}, {"gpt-4", cl100k}} {
			est, err := (&tokens.Counter{}).Prompt(b, tokens.ForDeployment("openai", false, c.model))
			if err != nil {
				t.Fatal(err)
			}
			if real := billed(c.cd, msgs, "", ""); est.PromptTokens < real {
				t.Fatalf("%s: estimate %d < %d for %q", c.model, est.PromptTokens, real, s)
			}
		}
	})
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// manyParts is the finding's body: 4 MB, one message of 150,000 parts.
func manyParts(text string) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"m","messages":[{"role":"user","content":[`)
	for i := 0; i < 150_000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"type":"text","text":"` + text + `"}`)
	}
	b.WriteString(`]}]}`)
	return []byte(b.String())
}

// BenchmarkManyParts: the cost of bounding the 4 MB, 150,000-part body,
// by the byte bound (unknown tokenizer, or text above the limit) and by
// o200k when its text is under the limit.
func BenchmarkManyParts(b *testing.B) {
	for _, c := range []struct {
		name string
		text string
		fam  tokens.Family
	}{
		{"bytes", "a", tokens.ForDeployment("echo", false, "echo")},
		{"o200k-150KB-text", "a", tokens.ForDeployment("openai", false, "gpt-4o")},
		{"o200k-over-limit", "你好", tokens.ForDeployment("openai", false, "gpt-4o")},
	} {
		body := manyParts(c.text)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := (&tokens.Counter{}).Prompt(body, c.fam); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTypical: a chat request of a system prompt and a 2 KB user
// message, counted with o200k, and by the byte bound.
func BenchmarkTypical(b *testing.B) {
	text := strings.Repeat("Summarise the following support ticket and suggest a reply. ", 34)
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"` + text + `"}]}`)
	for _, c := range []struct {
		name string
		fam  tokens.Family
	}{{"o200k", tokens.ForDeployment("openai", false, "gpt-4o")}, {"bytes", tokens.ForDeployment("echo", false, "echo")}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := (&tokens.Counter{}).Prompt(body, c.fam); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
