package records_test

import (
	"os"
	"testing"

	"github.com/tollgate/tollgate/pgtest"
)

// TestMain runs the package's tests 4 at a time: each waits on a database
// of its own more than it computes.
func TestMain(m *testing.M) {
	pgtest.Parallel(4)
	os.Exit(m.Run())
}
