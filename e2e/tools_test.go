package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// toolCall answers a request with tools the way OpenAI does: a tool call
// to the first tool, with JSON-string arguments.
func (u *upstream) toolCall(w http.ResponseWriter, body map[string]any) {
	tools, _ := body["tools"].([]any)
	name := "unknown"
	if len(tools) > 0 {
		if fn, ok := tools[0].(map[string]any)["function"].(map[string]any); ok {
			name, _ = fn["name"].(string)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"chatcmpl-tools","object":"chat.completion","created":%d,"model":%q,
		"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":%q,"arguments":"{\"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],
		"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
		time.Now().Unix(), body["model"], name, upstreamPrompt, upstreamCompletion, upstreamPrompt+upstreamCompletion)
}

// Tool calls pass through Tollgate both ways, inline and queued, with the
// official SDK as the client.
func TestEndToEndToolCalls(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	_, acc, _ := e.do("POST", "/v1/admin/accounts", e.admin, map[string]string{"name": "Tools", "email": "t@acme.test", "plan": "free"})
	_, key, _ := e.do("POST", "/v1/admin/accounts/"+acc["id"].(string)+"/keys", e.admin, map[string]string{"name": "t"})
	secret := key["key"].(string)
	client := openai.NewClient(option.WithBaseURL(e.base+"/v1/"), option.WithAPIKey(secret), option.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-test",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
			Name:       "get_weather",
			Parameters: openai.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]string{"type": "string"}}},
		})},
	}
	check := func(where string, msg openai.ChatCompletionMessage, finish string) {
		t.Helper()
		if len(msg.ToolCalls) != 1 || msg.ToolCalls[0].Function.Name != "get_weather" || finish != "tool_calls" {
			t.Fatalf("%s: %+v finish %q", where, msg, finish)
		}
		var args map[string]string
		if err := json.Unmarshal([]byte(msg.ToolCalls[0].Function.Arguments), &args); err != nil || args["city"] != "Paris" {
			t.Fatalf("%s: arguments %q", where, msg.ToolCalls[0].Function.Arguments)
		}
	}

	// Inline.
	resp, err := client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	check("inline", resp.Choices[0].Message, resp.Choices[0].FinishReason)
	e.up.mu.Lock()
	sent := e.up.seen[len(e.up.seen)-1]
	e.up.mu.Unlock()
	if tools, _ := sent["tools"].([]any); len(tools) != 1 {
		t.Fatalf("upstream got tools %v", sent["tools"])
	}

	// Queued: the same request with Prefer: respond-async; the job's
	// response is the same chat.completion.
	var accepted *http.Response
	_, err = client.Chat.Completions.New(context.Background(), params,
		option.WithHeader("Prefer", "respond-async"), option.WithResponseInto(&accepted))
	if err != nil {
		t.Fatal(err)
	}
	if accepted.StatusCode != http.StatusAccepted {
		t.Fatalf("queued: %d", accepted.StatusCode)
	}
	jobURL := accepted.Header.Get("Location")
	var job struct {
		Status   string                `json:"status"`
		Response openai.ChatCompletion `json:"response"`
	}
	eventually(t, "queued tool call done", func() error {
		_, j, _ := e.do("GET", jobURL+"?wait=5s", secret, nil)
		if j["status"] != "succeeded" {
			return fmt.Errorf("status %v", j["status"])
		}
		raw, _ := json.Marshal(j)
		return json.Unmarshal(raw, &job)
	})
	check("queued", job.Response.Choices[0].Message, job.Response.Choices[0].FinishReason)
}
