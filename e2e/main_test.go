package e2e

import (
	"os"
	"testing"

	"github.com/tollgate/tollgate/stripetest"
)

// TestMain runs the package's tests with one stripe-mock for them all.
func TestMain(m *testing.M) { os.Exit(stripetest.Main(m)) }
