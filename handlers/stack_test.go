package handlers

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestDeepStacks: f's effects are seen once run returns, a panic in f is
// raised again in the caller (net/http's own abort as it is, any other with
// f's stack in its message), as a handler's panic would be, and the worker
// goes on with the next calls, concurrent ones each on a worker.
func TestDeepStacks(t *testing.T) {
	t.Parallel()
	d := newDeepStacks()
	n := 0
	d.run(func() { n = 42 })
	if n != 42 {
		t.Fatalf("n = %d after run, want 42", n)
	}
	raised := func(f func()) (p any) {
		defer func() { p = recover() }()
		d.run(f)
		return nil
	}
	if p := raised(func() { panic(http.ErrAbortHandler) }); p != http.ErrAbortHandler {
		t.Errorf("abort panic raised as %v, want http.ErrAbortHandler", p)
	}
	p := raised(func() { panic(errors.New("boom")) })
	if s, ok := p.(string); !ok || !strings.Contains(s, "boom") || !strings.Contains(s, "TestDeepStacks") {
		t.Errorf("panic raised as %#v, want a message with the value and f's stack", p)
	}
	// Calls that wait for each other: each must have a worker of its own.
	const k = 8
	var wg sync.WaitGroup
	arrived := make(chan struct{}, k)
	release := make(chan struct{})
	for range k {
		wg.Go(func() {
			d.run(func() {
				arrived <- struct{}{}
				<-release
			})
		})
	}
	for range k {
		<-arrived
	}
	close(release)
	wg.Wait()
}
