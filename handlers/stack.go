package handlers

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"time"
)

// deepStacks runs functions that need a deep stack on goroutines of their
// own, kept between calls: see run.
//
// A goroutine's stack grows (doubling) to the deepest its calls ever go
// and shrinks only when a garbage collection finds it mostly unused, which
// a goroutine waiting in a deep call never is. A synchronous chat request
// keeps the connection's goroutine waiting for as long as the provider
// works; the checks before (JSON decoding, token counting, encoding the
// events) take a goroutine past 8 KiB, so run on it each request in flight
// would hold a 16 KiB stack there instead of an 8 KiB one (tens of MiB per
// thousand slow requests). A worker keeps its grown stack from one call to
// the next: a new goroutine for each call would copy its stack as it grew
// (8 to 16 KiB), which cost more CPU than the goroutine itself.
type deepStacks struct {
	// tasks hands a call to an idle worker (unbuffered: only one waiting takes it).
	tasks chan *deepTask
	// idle is how long a worker waits for its next call before it ends.
	idle time.Duration
}

// deepIdle is how long a deepStacks worker waits for a call: the workers
// are as many as the calls that ever ran at once, until the load passes.
const deepIdle = 10 * time.Second

func newDeepStacks() *deepStacks { return &deepStacks{tasks: make(chan *deepTask), idle: deepIdle} }

// deepTask is one call.
type deepTask struct {
	f     func()
	done  chan struct{}
	p     any
	stack []byte
}

// run runs f on a worker (an idle one, or a new one) and waits for it. A
// panic in f is raised again here, with f's stack in its message.
func (d *deepStacks) run(f func()) {
	t := &deepTask{f: f, done: make(chan struct{})}
	select {
	case d.tasks <- t:
	default:
		go d.work(t)
	}
	<-t.done
	switch {
	case t.p == nil:
	case t.p == http.ErrAbortHandler:
		panic(t.p)
	default:
		panic(fmt.Sprintf("%v\n\n[on its own stack:]\n%s", t.p, t.stack))
	}
}

// work runs t, then the calls that come while it waits, until it has
// waited d.idle for one.
func (d *deepStacks) work(t *deepTask) {
	idle := time.NewTimer(d.idle)
	defer idle.Stop()
	for {
		t.exec()
		idle.Reset(d.idle)
		select {
		case t = <-d.tasks:
		case <-idle.C:
			return
		}
	}
}

// exec runs the call, keeping a panic for its caller.
func (t *deepTask) exec() {
	defer close(t.done)
	defer func() {
		if t.p = recover(); t.p != nil {
			t.stack = debug.Stack()
		}
	}()
	t.f()
}
