package e2e

import (
	"os"
	"testing"

	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/stripetest"
)

// TestMain runs the package's tests with one stripe-mock for them all, 4
// at a time (they wait on their databases and servers more than they
// compute).
func TestMain(m *testing.M) {
	pgtest.Parallel(4)
	os.Exit(stripetest.Main(m))
}
