package pgtest

import (
	"flag"
	"runtime"
	"strconv"
)

// Parallel lets n of a package's parallel tests run at once unless the
// command line set -test.parallel; call it from TestMain before m.Run.
// It is for tests that spend their time waiting (on their databases,
// leases, outage windows, timers) rather than computing: the default,
// GOMAXPROCS, would leave them queued behind each other on a small
// machine. It never lowers the default.
func Parallel(n int) {
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set && n > runtime.GOMAXPROCS(0) {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
}
