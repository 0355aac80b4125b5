package llm

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

func fixedEcho() *Echo {
	e := NewEcho("echo")
	e.now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	return e
}

func TestEchoAnswersLastUserMessage(t *testing.T) {
	t.Parallel()
	body := json.RawMessage(`{"model":"echo","messages":[
		{"role":"system","content":"Be brief."},
		{"role":"user","content":"first"},
		{"role":"assistant","content":"ok"},
		{"role":"user","content":"Hello, world!"}]}`)
	resp, err := fixedEcho().ChatCompletion(context.Background(), "echo-upstream", body)
	if err != nil {
		t.Fatal(err)
	}
	// Decode with the official SDK's type: the body must be a real chat.completion.
	var cc openai.ChatCompletion
	if err := json.Unmarshal(resp.Body, &cc); err != nil {
		t.Fatal(err)
	}
	if cc.Object != "chat.completion" || cc.Model != "echo-upstream" || cc.Created != 1_700_000_000 {
		t.Errorf("header fields = %q %q %d", cc.Object, cc.Model, cc.Created)
	}
	if len(cc.Choices) != 1 || cc.Choices[0].Message.Content != "Hello, world!" ||
		cc.Choices[0].Message.Role != "assistant" || cc.Choices[0].FinishReason != "stop" {
		t.Errorf("choices = %+v", cc.Choices)
	}
	// prompt: 3 + system(4+1+3) + user(4+1+1) + assistant(4+1+1) + user(4+1+4)
	wantPrompt := int64(3 + 8 + 6 + 6 + 9)
	if cc.Usage.PromptTokens != wantPrompt || cc.Usage.CompletionTokens != 4 || cc.Usage.TotalTokens != wantPrompt+4 {
		t.Errorf("usage = %+v, want prompt %d completion 4", cc.Usage, wantPrompt)
	}
	if resp.Usage != (Usage{PromptTokens: wantPrompt, CompletionTokens: 4}) {
		t.Errorf("Response.Usage = %+v", resp.Usage)
	}
	if resp.Provider != "echo" || resp.UpstreamModel != "echo-upstream" {
		t.Errorf("provider/model = %q/%q", resp.Provider, resp.UpstreamModel)
	}
	if len(cc.ID) != len("chatcmpl-echo-")+24 || cc.ID[:14] != "chatcmpl-echo-" {
		t.Errorf("id = %q", cc.ID)
	}
}

func TestEchoDeterministic(t *testing.T) {
	t.Parallel()
	body := json.RawMessage(`{"model":"echo","messages":[{"role":"user","content":"same"}]}`)
	a, err := fixedEcho().ChatCompletion(context.Background(), "echo", body)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fixedEcho().ChatCompletion(context.Background(), "echo", body)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Body) != string(b.Body) {
		t.Fatalf("same request, different bodies:\n%s\n%s", a.Body, b.Body)
	}
	other, err := fixedEcho().ChatCompletion(context.Background(), "echo",
		json.RawMessage(`{"model":"echo","messages":[{"role":"user","content":"different"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var ida, idb struct{ ID string }
	_ = json.Unmarshal(a.Body, &ida)
	_ = json.Unmarshal(other.Body, &idb)
	if ida.ID == idb.ID {
		t.Fatalf("different requests share id %q", ida.ID)
	}
}

func TestEchoArrayContentAndMaxTokens(t *testing.T) {
	t.Parallel()
	body := json.RawMessage(`{"model":"echo","max_tokens":50,"max_completion_tokens":3,"messages":[{"role":"user","content":[
		{"type":"text","text":"one two"},{"type":"image_url","image_url":{"url":"data:x"}},{"type":"text","text":" three four"}]}]}`)
	resp, err := fixedEcho().ChatCompletion(context.Background(), "echo", body)
	if err != nil {
		t.Fatal(err)
	}
	var cc openai.ChatCompletion
	if err := json.Unmarshal(resp.Body, &cc); err != nil {
		t.Fatal(err)
	}
	if got := cc.Choices[0].Message.Content; got != "one two three" {
		t.Errorf("content = %q, want the first 3 tokens", got)
	}
	if cc.Choices[0].FinishReason != "length" {
		t.Errorf("finish_reason = %q", cc.Choices[0].FinishReason)
	}
	// prompt: 3 + 4 + "user"(1) + "one two three four"(4) + 85 image
	if resp.Usage != (Usage{PromptTokens: 97, CompletionTokens: 3}) {
		t.Errorf("usage = %+v", resp.Usage)
	}
}

func TestEchoNoUserMessage(t *testing.T) {
	t.Parallel()
	resp, err := fixedEcho().ChatCompletion(context.Background(), "echo",
		json.RawMessage(`{"messages":[{"role":"system","content":"only system"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var cc openai.ChatCompletion
	_ = json.Unmarshal(resp.Body, &cc)
	if cc.Choices[0].Message.Content != "" || resp.Usage.CompletionTokens != 0 {
		t.Errorf("answer = %q, usage %+v", cc.Choices[0].Message.Content, resp.Usage)
	}
}

func TestEchoInvalidRequests(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"not json":        `{`,
		"no messages":     `{"messages":[]}`,
		"zero max_tokens": `{"max_tokens":0,"messages":[{"role":"user","content":"x"}]}`,
		"bad content":     `{"messages":[{"role":"user","content":{"a":1}}]}`,
	} {
		_, err := fixedEcho().ChatCompletion(context.Background(), "echo", json.RawMessage(body))
		var le *Error
		if !errors.As(err, &le) || le.Status != http.StatusBadRequest || le.Type != openaiwire.TypeInvalidRequest || le.Retryable {
			t.Errorf("%s: error = %#v", name, err)
		}
	}
}

func TestEchoCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := fixedEcho().ChatCompletion(ctx, "echo", json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v", err)
	}
}
