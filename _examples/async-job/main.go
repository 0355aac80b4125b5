// Command async-job queues a chat completion instead of waiting for it
// (Prefer: respond-async), then long-polls its job until it has an
// outcome and prints the job's timeline: the completion's events as the
// store has them.
//
// The job API is Tollgate's own (the OpenAI SDKs do not know it), so this
// example speaks plain HTTP.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "async-job:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// job is the part of GET /v1/jobs/{id} this example reads.
type job struct {
	ID       string          `json:"id"`
	Status   string          `json:"status"`
	Model    string          `json:"model"`
	Mode     string          `json:"mode"`
	Response json.RawMessage `json:"response"`
	Error    *struct {
		Message, Code string
		Status        int
	} `json:"error"`
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("async-job", flag.ContinueOnError)
	url := fs.String("url", env("TOLLGATE_URL", "http://localhost:8080"), "Tollgate's base URL (TOLLGATE_URL)")
	key := fs.String("key", os.Getenv("TOLLGATE_API_KEY"), "an API key, tg_… (TOLLGATE_API_KEY)")
	model := fs.String("model", "echo", "the model to ask")
	prompt := fs.String("prompt", "Hello later, Tollgate!", "what to say")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the job in all")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *key == "" {
		return errors.New("no API key: set TOLLGATE_API_KEY or -key (the operator example issues one)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c := client{base: strings.TrimRight(*url, "/"), key: *key, http: &http.Client{Timeout: 40 * time.Second}}

	// 1. Queue it: 202 with the job, its URL in Location. The request is
	// recorded (completion.requested) before the answer; a worker runs it.
	body, _ := json.Marshal(map[string]any{"model": *model, "messages": []map[string]string{{"role": "user", "content": *prompt}}})
	var queued job
	hdr, err := c.do(ctx, http.MethodPost, "/v1/chat/completions", body, http.StatusAccepted, &queued, "Prefer", "respond-async")
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	fmt.Fprintf(stdout, "queued  %s %s at %s (%s)\n", queued.ID, queued.Status, hdr.Get("Location"), hdr.Get("Preference-Applied"))

	// 2. Long-poll: ?wait= holds the answer until the job ends or the wait
	// passes, so a loop of them never busy-polls.
	j := queued
	for j.Status == "queued" || j.Status == "running" {
		if _, err := c.do(ctx, http.MethodGet, hdr.Get("Location")+"?wait=10s", nil, http.StatusOK, &j); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
	}
	switch j.Status {
	case "succeeded":
		var resp struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
			Usage struct {
				TotalTokens int64 `json:"total_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(j.Response, &resp); err != nil || len(resp.Choices) == 0 {
			return fmt.Errorf("job %s: unreadable response %s", j.ID, j.Response)
		}
		fmt.Fprintf(stdout, "done    %s %s %q total=%d tokens\n", j.ID, j.Status, resp.Choices[0].Message.Content, resp.Usage.TotalTokens)
	case "failed":
		if j.Error == nil {
			return fmt.Errorf("job %s failed without an error", j.ID)
		}
		return fmt.Errorf("job %s failed: %d %s: %s", j.ID, j.Error.Status, j.Error.Code, j.Error.Message)
	default:
		return fmt.Errorf("job %s ended %s", j.ID, j.Status)
	}

	// 3. Its timeline: the completion's events (prompts and answers left
	// out unless ?include=bodies).
	var timeline struct {
		Data []struct {
			Type       string    `json:"type"`
			OccurredAt time.Time `json:"occurred_at"`
			Metadata   struct {
				Actor string `json:"actor"`
			} `json:"metadata"`
		} `json:"data"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/jobs/"+j.ID+"/events", nil, http.StatusOK, &timeline); err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	for _, e := range timeline.Data {
		fmt.Fprintf(stdout, "event   %s %-28s by %s\n", e.OccurredAt.Format(time.RFC3339Nano), e.Type, e.Metadata.Actor)
	}
	return nil
}

// client calls the API with a key.
type client struct {
	base, key string
	http      *http.Client
}

// do sends body and decodes the answer into out when its status is want;
// headers are extra name, value pairs.
func (c client) do(ctx context.Context, method, path string, body []byte, want int, out any, headers ...string) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(raw))
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return resp.Header, nil
}
