package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/execution"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// Worker executes queued completions from the bus.
type Worker struct {
	exec     *execution.Executor
	executor string
	logger   *slog.Logger
	slots    chan struct{}
	running  sync.WaitGroup
	// ctx outlives single messages: a job runs on after its message was
	// acknowledged, until it is done or the worker stops.
	ctx context.Context
}

// NewWorker returns a worker named "worker:<instance>" that runs at most
// concurrency jobs at once. Jobs run under ctx. A nil logger discards.
func NewWorker(ctx context.Context, exec *execution.Executor, instance string, concurrency int, logger *slog.Logger) *Worker {
	if concurrency < 1 {
		concurrency = 1
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{exec: exec, executor: "worker:" + instance, logger: logger, slots: make(chan struct{}, concurrency), ctx: ctx}
}

// Handle claims a queued completion and starts it. The message is
// acknowledged once the claim is stored: from then on the claim, not the
// message, guarantees the work (a dead worker's claim expires and a reaper
// ends it), and a slow provider never holds up the partition. A
// redelivered message loses the claim and is dropped, so the provider is
// called once. A completion.requeued message (a dead executor's job back
// in the queue) is claimed the same way: only a queued completion can be
// claimed, so of its deliveries one runs the retry.
func (w *Worker) Handle(msg *message.Message) error {
	e, err := FromMessage(msg)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if e.Type != events.TypeCompletionRequested && e.Type != events.TypeCompletionRequeued {
		return nil
	}
	d, err := events.Decode(e)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	id, ok := completion.QueuedJob(d)
	if !ok {
		return nil // executed inline by the API instance that took it
	}
	// Wait for a free slot before claiming, so a busy worker leaves the
	// job to others instead of holding a claim it cannot start.
	select {
	case w.slots <- struct{}{}:
	case <-msg.Context().Done():
		return msg.Context().Err()
	}
	md := e.Metadata
	md.CausationID = e.EventID.String()
	c, err := w.exec.Claim(msg.Context(), md, id, w.executor)
	if errors.Is(err, domainerr.ErrAlreadyClaimed) {
		<-w.slots
		w.logger.Debug("completion already claimed", "completion_id", id)
		return nil
	}
	if err != nil {
		<-w.slots
		return fmt.Errorf("worker: claim %s: %w", id, err)
	}
	w.running.Add(1)
	go func() {
		defer w.running.Done()
		defer func() { <-w.slots }()
		if _, err := w.exec.Run(w.ctx, md, c); err != nil {
			w.logger.Error("run completion", "completion_id", c.ID, "correlation_id", md.CorrelationID, "error", err)
		}
	}()
	return nil
}

// Wait blocks until every started job has finished.
func (w *Worker) Wait() { w.running.Wait() }
