package faults

import (
	"flag"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/tollgate/tollgate/stripetest"
)

// faultsParallel is how many of the package's tests run at once unless
// -test.parallel says otherwise: they spend their time waiting (outage
// windows, leases, kill plans, settling), not computing, so the default
// (GOMAXPROCS) would leave them queued behind each other; more than 4 at
// once starve each other of the CPU they do need on a 2-core machine.
const faultsParallel = 4

// TestMain runs the package's tests with one stripe-mock for them all and
// one build of the tollgate binary, faultsParallel at a time.
func TestMain(m *testing.M) {
	flag.Parse()
	setParallel(faultsParallel)
	code := stripetest.Main(m)
	killRemoveBinary()
	os.Exit(code)
}

// setParallel raises -test.parallel to n when the command line did not
// set it.
func setParallel(n int) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set && n > runtime.GOMAXPROCS(0) {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
}
