package completion_test

import "github.com/tollgate/tollgate/decidetest"

// The given/when/then fixtures this package's cases use.

var plans = decidetest.Plans

var (
	created   = decidetest.Created
	issued    = decidetest.Issued
	revoked   = decidetest.Revoked
	requested = decidetest.Requested
	started   = decidetest.Started
	succeeded = decidetest.Succeeded
	failed    = decidetest.Failed
)
