// Package account holds the account and API key aggregates: their state
// folded from the account-… and apikey-… streams (the account's plan,
// limit overrides, Stripe customer and billing state), and the pure
// decide functions for creating accounts, issuing and revoking keys,
// changing plans and limits, suspending keys and the runaway guard.
//
// Decide functions are pure: no clock, no randomness, no I/O, no driver.
// commands.Service loads, decides and appends; keyindex is the API key
// read model.
package account
