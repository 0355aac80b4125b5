// Command openai-client is a customer's program: it talks to Tollgate with
// the official OpenAI Go SDK (github.com/openai/openai-go/v3), changing
// nothing but the base URL and the API key. It lists the models, asks for
// a chat completion, streams another with its usage, and shows what an
// error looks like through the SDK.
//
// Each completion's line on stdout starts with its kind and its id, which
// is the id of the completion's stream in Tollgate's event store
// (completion-<id>), so the analyst example can find it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "openai-client:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("openai-client", flag.ContinueOnError)
	url := fs.String("url", env("TOLLGATE_URL", "http://localhost:8080"), "Tollgate's base URL (TOLLGATE_URL)")
	key := fs.String("key", os.Getenv("TOLLGATE_API_KEY"), "an API key the operator issued, tg_… (TOLLGATE_API_KEY)")
	model := fs.String("model", "echo", "the model to ask (echo is serve's development model)")
	prompt := fs.String("prompt", "Hello, Tollgate!", "what to say")
	timeout := fs.Duration("timeout", time.Minute, "how long the whole run may take")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *key == "" {
		return errors.New("no API key: set TOLLGATE_API_KEY or -key (the operator example issues one)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	client := openai.NewClient(
		option.WithBaseURL(strings.TrimRight(*url, "/")+"/v1/"),
		option.WithAPIKey(*key),
		// Every request is bounded; the SDK retries 429s and 5xx with
		// backoff, honouring Tollgate's Retry-After.
		option.WithHTTPClient(&http.Client{Timeout: 30 * time.Second}),
		option.WithRequestTimeout(20*time.Second),
		option.WithMaxRetries(2),
	)

	// The models the key's plan may use.
	models, err := client.Models.List(ctx)
	if err != nil {
		return fmt.Errorf("list models: %w", err)
	}
	var names []string
	for _, m := range models.Data {
		names = append(names, m.ID)
	}
	fmt.Fprintf(stdout, "models  %s\n", strings.Join(names, " "))

	// A chat completion. Tollgate records it (completion.requested …
	// completion.succeeded) before it answers.
	params := openai.ChatCompletionNewParams{
		Model:    *model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(*prompt)},
	}
	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		return fmt.Errorf("chat completion: %w", err)
	}
	if len(resp.Choices) == 0 {
		return fmt.Errorf("chat completion %s: no choices", resp.ID)
	}
	fmt.Fprintf(stdout, "chat    %s %q %s\n", resp.ID, resp.Choices[0].Message.Content, usage(resp.Usage))

	// The same, streamed.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	if err := stream(ctx, client, params, stdout); err != nil {
		return fmt.Errorf("streamed chat completion: %w", err)
	}

	// Errors come back as OpenAI's error body, so the SDK's *openai.Error
	// carries Tollgate's status and code (see the README's Errors table).
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "no-such-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(*prompt)},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		return fmt.Errorf("unknown model: want an *openai.Error, got %v", err)
	}
	fmt.Fprintf(stdout, "error   %d %s\n", apiErr.StatusCode, apiErr.Code)
	return nil
}

// stream asks for a streamed completion: chunks as the provider produces
// them, put together by the SDK's accumulator, and the usage in a last
// chunk when params.StreamOptions.IncludeUsage asks for it.
func stream(ctx context.Context, client openai.Client, params openai.ChatCompletionNewParams, stdout io.Writer) error {
	s := client.Chat.Completions.NewStreaming(ctx, params)
	defer s.Close()
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for s.Next() {
		acc.AddChunk(s.Current())
		chunks++
	}
	if err := s.Err(); err != nil {
		return err
	}
	if len(acc.Choices) == 0 {
		return fmt.Errorf("%s: no choices", acc.ID)
	}
	fmt.Fprintf(stdout, "stream  %s %q %s in %d chunks\n", acc.ID, acc.Choices[0].Message.Content, usage(acc.Usage), chunks)
	return nil
}

func usage(u openai.CompletionUsage) string {
	return fmt.Sprintf("prompt=%d completion=%d total=%d tokens", u.PromptTokens, u.CompletionTokens, u.TotalTokens)
}
