package events

// quotaTypes are the event types of quotas: plan and limit changes, budget reservations and settlements, key suspension.
var quotaTypes = map[string]typeInfo{}
