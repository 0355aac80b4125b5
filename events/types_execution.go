package events

// executionTypes are the event types of execution: attempts, abandonment and other facts of running completions (providers, fallbacks, streaming, jobs).
var executionTypes = map[string]typeInfo{}
