package faults

import (
	"os"
	"testing"

	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/stripetest"
)

// TestMain runs the package's tests with one stripe-mock for them all and
// one build of the tollgate binary, 4 at a time: they wait (outage
// windows, leases, kill plans, settling) more than they compute, and more
// at once would starve each other of the CPU they do need on a 2-core
// machine.
func TestMain(m *testing.M) {
	pgtest.Parallel(4)
	code := stripetest.Main(m)
	killRemoveBinary()
	os.Exit(code)
}
