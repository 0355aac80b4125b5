package events_test

import "github.com/tollgate/tollgate/events"

var billingExamples = []events.Data{}
