// Package completion holds the completion aggregate: a request's life
// (requested → started → succeeded | failed | abandoned, requeues, lease
// renewals, callbacks) folded from its completion-… stream, the pure
// decide functions for each step, the budget reservation that goes with
// the request and its settlement with the outcome, and the callback-URL
// rule.
//
// Decide functions are pure: no clock, no randomness, no I/O, no driver.
// commands.Service loads, decides and appends; execution runs requests
// against the providers; jobs is the read model of their status;
// callbacks delivers the outcomes of async jobs.
package completion
