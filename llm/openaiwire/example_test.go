package openaiwire_test

import (
	"encoding/json"
	"fmt"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

// A client's request as the edge reads it, and the error body it gets
// for a model Tollgate does not serve.
func Example() {
	body := json.RawMessage(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},
		"messages":[{"role":"user","content":[{"type":"text","text":"Hello"},{"type":"text","text":", world"}]}]}`)

	var env openaiwire.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		panic(err)
	}
	role, _ := openaiwire.MessageRole(env.Messages[0])
	var req openaiwire.Request
	if err := json.Unmarshal(body, &req); err != nil {
		panic(err)
	}
	text, _, _ := openaiwire.ContentText(req.Messages[0].Content)
	fmt.Println(env.Model, env.Stream, role, text, openaiwire.WantsUsage(body))

	e, _ := json.Marshal(openaiwire.NewErrorBody("The model `gpt-5` does not exist or you do not have access to it.",
		openaiwire.TypeInvalidRequest, "model", "model_not_found"))
	fmt.Println(string(e))
	// Output:
	// gpt-4o-mini true user Hello, world true
	// {"error":{"message":"The model `gpt-5` does not exist or you do not have access to it.","type":"invalid_request_error","param":"model","code":"model_not_found"}}
}
