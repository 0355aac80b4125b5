package commands_test

import "github.com/tollgate/tollgate/decidetest"

// The given/when/then fixtures this package's cases use.

var plans = decidetest.Plans

const keyHash = decidetest.KeyHash

var (
	requested = decidetest.Requested
	succeeded = decidetest.Succeeded
)
