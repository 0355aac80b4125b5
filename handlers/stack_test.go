package handlers

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestOnOwnStack: f's effects are seen once onOwnStack returns, and a panic
// in f is raised again in the caller (net/http's own abort as it is, any
// other with f's stack in its message), as a handler's panic would be.
func TestOnOwnStack(t *testing.T) {
	t.Parallel()
	n := 0
	onOwnStack(func() { n = 42 })
	if n != 42 {
		t.Fatalf("n = %d after onOwnStack, want 42", n)
	}
	raised := func(f func()) (p any) {
		defer func() { p = recover() }()
		onOwnStack(f)
		return nil
	}
	if p := raised(func() { panic(http.ErrAbortHandler) }); p != http.ErrAbortHandler {
		t.Errorf("abort panic raised as %v, want http.ErrAbortHandler", p)
	}
	p := raised(func() { panic(errors.New("boom")) })
	if s, ok := p.(string); !ok || !strings.Contains(s, "boom") || !strings.Contains(s, "TestOnOwnStack") {
		t.Errorf("panic raised as %#v, want a message with the value and f's stack", p)
	}
}
