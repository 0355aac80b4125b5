package quota_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tollgate/tollgate/quota"
)

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

// A call that timed out may have run in the store; one refused did not.
func TestAmbiguous(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]bool{
		fmt.Errorf("%w: admit: %w", quota.ErrLimiter, timeoutErr{}):                     true,
		fmt.Errorf("%w: admit: %w", quota.ErrLimiter, context.DeadlineExceeded):         true,
		fmt.Errorf("%w: admit: %w", quota.ErrLimiter, errors.New("connection refused")): false,
	} {
		if got := quota.Ambiguous(err); got != want {
			t.Errorf("Ambiguous(%v) = %v", err, got)
		}
	}
}
