package bus_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llmtest"
	"github.com/tollgate/tollgate/pgtest"
)

// A message delivered many times, also to several workers at once, calls
// the provider once: the claim decides who runs it.
func TestWorkerRedeliveryCallsProviderOnce(t *testing.T) {
	t.Parallel()
	up := llmtest.NewUpstream(t, 50*time.Millisecond)
	cfg := llmtest.Config(t, up.URL, "1", "2", "")
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := commands.NewService(store, func(string) bool { return true }, time.Now)
	router, err := llm.NewRouter(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	exec, err := execution.New(execution.Config{Service: svc, LLM: router, Models: cfg.Model})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := svc.RequestCompletion(ctx, events.Metadata{AccountID: "acc_1"}, completion.RequestCompletion{
		CompletionID: "chatcmpl-redelivered", AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeAsync,
		Request: json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := store.Load(ctx, completion.CompletionStream(c.ID))
	if err != nil {
		t.Fatal(err)
	}
	workers := []*bus.Worker{
		bus.NewWorker(ctx, exec, "a", 4, nil),
		bus.NewWorker(ctx, exec, "b", 4, nil),
	}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := bus.ToMessage(stored[0])
			if err != nil {
				t.Error(err)
				return
			}
			if err := workers[i%2].Handle(msg); err != nil {
				t.Errorf("delivery %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for _, w := range workers {
		w.Wait()
	}
	if n := up.Calls(); n != 1 {
		t.Fatalf("provider called %d times, want 1", n)
	}
	done, err := svc.Completion(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.Status != completion.StatusSucceeded || done.Version != 3 || done.Succeeded.CostNanoUSD != 3*1000+2*2000 {
		t.Fatalf("completion %+v", done)
	}
}

// A synchronous request's event is not for the workers: the API instance
// that took it runs it.
func TestWorkerIgnoresSyncRequests(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := commands.NewService(store, func(string) bool { return true }, time.Now)
	exec, err := execution.New(execution.Config{Service: svc, LLM: panicking{}, Models: func(string) (config.Model, bool) { return config.Model{}, false }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := svc.RequestCompletion(ctx, events.Metadata{}, completion.RequestCompletion{
		CompletionID: "chatcmpl-sync", AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeSync,
		Request: json.RawMessage(`{}`),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := store.Load(ctx, completion.CompletionStream(c.ID))
	msg, _ := bus.ToMessage(stored[0])
	w := bus.NewWorker(ctx, exec, "a", 1, nil)
	if err := w.Handle(msg); err != nil {
		t.Fatal(err)
	}
	w.Wait()
	if got, _ := svc.Completion(ctx, c.ID); got.Status != completion.StatusQueued {
		t.Fatalf("a worker touched a synchronous request: %s", got.Status)
	}
}

type panicking struct{}

func (panicking) Complete(context.Context, config.Model, json.RawMessage) (*llm.Response, error) {
	panic("the provider must not be called")
}
