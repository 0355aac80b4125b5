package handlers

import (
	"fmt"
	"net/http"
	"runtime/debug"
)

// onOwnStack runs f on a goroutine of its own and waits for it.
//
// A goroutine's stack grows (doubling) to the deepest its calls ever go
// and shrinks only when a garbage collection finds it mostly unused, which
// a goroutine waiting in a deep call never is. A synchronous chat request
// keeps the connection's goroutine waiting for as long as the provider
// works; the checks before (JSON decoding, token counting, encoding the
// events) take a goroutine past 8 KiB, so without this each request in
// flight would hold a 16 KiB stack there instead of an 8 KiB one (tens of
// MiB per thousand slow requests). f's stack is given back when f returns.
// A panic in f is raised again here, with f's stack in its message.
func onOwnStack(f func()) {
	var p any
	var stack []byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p = recover(); p != nil {
				stack = debug.Stack()
			}
		}()
		f()
	}()
	<-done
	switch {
	case p == nil:
	case p == http.ErrAbortHandler:
		panic(p)
	default:
		panic(fmt.Sprintf("%v\n\n[on its own stack:]\n%s", p, stack))
	}
}
