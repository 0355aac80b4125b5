package execution_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llmtest"
)

// hostilePieces are provider output that is valid JSON but no ordinary
// text: NUL, lone surrogates (one split across two chunks, which together
// make a pair), escapes of plain characters, raw multi-byte UTF-8.
var hostilePieces = []string{`"a\u0000b"`, `"\ud800 lone"`, `" \udc00 low"`, `" split \ud83d"`, `"\ude00 pair"`,
	`" \u00e9 é \\ \" \/ \t"`, `"\u0000"`}

// messageContent returns the raw JSON of choices[0].message.content.
func messageContent(t *testing.T, body json.RawMessage) string {
	t.Helper()
	var r struct {
		Choices []struct {
			Message struct {
				Content json.RawMessage `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &r); err != nil || len(r.Choices) != 1 {
		t.Fatalf("response %s: %v", body, err)
	}
	return string(r.Choices[0].Message.Content)
}

// storedSuccess returns the completion.succeeded the store holds for id.
func (r *leaseRig) storedSuccess(id string) events.CompletionSucceeded {
	r.t.Helper()
	evs, err := r.store.Load(r.ctx, completion.CompletionStream(id))
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type == events.TypeCompletionSucceeded {
			d, err := events.Decode(e)
			if err != nil {
				r.t.Fatal(err)
			}
			return d.(events.CompletionSucceeded)
		}
	}
	r.t.Fatalf("no completion.succeeded for %s", id)
	return events.CompletionSucceeded{}
}

// A plain answer with such content is recorded with the provider's exact
// bytes, and billed.
func TestProviderContentKeptExactly(t *testing.T) {
	t.Parallel()
	script := llmtest.Script{Pieces: hostilePieces}
	r, _ := newLeaseRig(t, script)
	c := r.request("chatcmpl-hostile", events.ModeSync, "api:a")
	done, err := r.exec.Run(r.ctx, events.Metadata{}, c)
	if err != nil || done.Succeeded == nil {
		t.Fatalf("Run: %+v, %v", done, err)
	}
	if got := messageContent(t, done.Succeeded.Response); got != script.Content() {
		t.Errorf("answered content\n got %s\nwant %s", got, script.Content())
	}
	s := r.storedSuccess(c.ID)
	if got := messageContent(t, s.Response); got != script.Content() || s.CostNanoUSD == 0 {
		t.Errorf("stored content\n got %s\nwant %s (cost %d)", got, script.Content(), s.CostNanoUSD)
	}
}

// A stream of such content reaches the client chunk by chunk as the
// provider sent it, and the recorded answer is the chunks' content
// concatenated, byte for byte: no lone surrogate turned into U+FFFD.
func TestStreamedContentKeptExactly(t *testing.T) {
	t.Parallel()
	script := llmtest.Script{Pieces: hostilePieces}
	r, _ := newLeaseRig(t, script)
	c := r.request("chatcmpl-hostilestream", events.ModeSync, "api:a")
	var sent []string
	done, err := r.exec.RunStream(r.ctx, events.Metadata{}, c, func(chunk json.RawMessage) error {
		var ch struct {
			Choices []struct {
				Delta struct {
					Content json.RawMessage `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(chunk, &ch); err != nil {
			t.Errorf("chunk %s: %v", chunk, err)
		}
		if len(ch.Choices) == 1 && len(ch.Choices[0].Delta.Content) > 0 && string(ch.Choices[0].Delta.Content) != `""` {
			sent = append(sent, string(ch.Choices[0].Delta.Content))
		}
		return nil
	})
	if err != nil || done.Succeeded == nil || done.Succeeded.Interrupted != "" {
		t.Fatalf("RunStream: %+v, %v", done, err)
	}
	if strings.Join(sent, "|") != strings.Join(hostilePieces, "|") {
		t.Errorf("chunks sent\n got %v\nwant %v", sent, hostilePieces)
	}
	if got := messageContent(t, done.Succeeded.Response); got != script.Content() {
		t.Errorf("assembled content\n got %s\nwant %s", got, script.Content())
	}
	s := r.storedSuccess(c.ID)
	if got := messageContent(t, s.Response); got != script.Content() || s.CostNanoUSD == 0 || s.Usage.CompletionTokens != int64(len(hostilePieces)) {
		t.Errorf("stored content\n got %s\nwant %s (%+v)", got, script.Content(), s.Usage)
	}
}

// A provider that sends bytes that are not UTF-8 inside a string (not
// JSON, strictly, but a body Go's decoder takes) still gets its answer
// recorded and billed, each bad byte as U+FFFD: PostgreSQL refuses text
// that is not UTF-8, and an answer that cannot be stored is not billed.
func TestProviderInvalidUTF8IsRecorded(t *testing.T) {
	t.Parallel()
	script := llmtest.Script{Pieces: []string{"\"bad \xff byte\"", "\" and \xc3\""}}
	const want = "\"bad \uFFFD byte and \uFFFD\""
	r, _ := newLeaseRig(t, script)
	c := r.request("chatcmpl-badutf8", events.ModeSync, "api:a")
	done, err := r.exec.Run(r.ctx, events.Metadata{}, c)
	if err != nil || done.Succeeded == nil {
		t.Fatalf("Run: %+v, %v", done, err)
	}
	if got := messageContent(t, r.storedSuccess(c.ID).Response); got != want {
		t.Errorf("stored content %s, want %s", got, want)
	}
	c = r.request("chatcmpl-badutf8stream", events.ModeSync, "api:a")
	done, err = r.exec.RunStream(r.ctx, events.Metadata{}, c, func(json.RawMessage) error { return nil })
	if err != nil || done.Succeeded == nil || done.Succeeded.CostNanoUSD == 0 {
		t.Fatalf("RunStream: %+v, %v", done, err)
	}
	if got := messageContent(t, r.storedSuccess(c.ID).Response); got != want {
		t.Errorf("stored streamed content %s, want %s", got, want)
	}
}

// The built-in echo model answers a prompt holding a NUL with it, plain
// and streamed, and the answer is recorded and billed.
func TestEchoAnswersWithNUL(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse([]byte(`
providers: [{name: dev, kind: echo}]
models: [{name: m, deployments: [{provider: dev, model: echo-1}], price: {input_per_million: "1000", output_per_million: "2000"}}]
plans: [{name: free}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := newLeaseRigFor(t, cfg)
	const prompt = `{"model":"m","messages":[{"role":"user","content":"nul \u0000 here"}]}`
	for _, stream := range []bool{false, true} {
		id := fmt.Sprintf("chatcmpl-echonul%v", stream)
		c, err := r.svc.RequestCompletion(r.ctx, events.Metadata{AccountID: "acc_1"}, completion.RequestCompletion{
			CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeSync, Request: json.RawMessage(prompt),
		}, r.exec.StartCommand("api:a"))
		if err != nil {
			t.Fatal(err)
		}
		var done completion.Completion
		if stream {
			done, err = r.exec.RunStream(r.ctx, events.Metadata{}, c, func(json.RawMessage) error { return nil })
		} else {
			done, err = r.exec.Run(r.ctx, events.Metadata{}, c)
		}
		if err != nil || done.Succeeded == nil || done.Succeeded.CostNanoUSD == 0 {
			t.Fatalf("stream %v: %+v, %v", stream, done, err)
		}
		var text string
		if err := json.Unmarshal([]byte(messageContent(t, r.storedSuccess(id).Response)), &text); err != nil || text != "nul \x00 here" {
			t.Errorf("stream %v: stored answer %q (%v)", stream, text, err)
		}
	}
}
