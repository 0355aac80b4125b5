package completion

import "github.com/tollgate/tollgate/events"

// QueuedJob is the rule of what the worker pool executes: it reports
// whether d puts a completion in the queue, and which one. A request in
// mode async is a job; so is a completion sent back to the queue after
// its executor's claim expired (only async completions are requeued). A
// sync request is executed inline by the API instance that took it.
func QueuedJob(d events.Data) (completionID string, ok bool) {
	switch d := d.(type) {
	case events.CompletionRequested:
		return d.CompletionID, d.Mode == events.ModeAsync
	case events.CompletionRequeued:
		return d.CompletionID, true
	}
	return "", false
}
