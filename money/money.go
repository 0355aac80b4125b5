// Package money holds exact monetary amounts and token prices.
//
// Amounts are integers in nano-USD (billionths of a dollar): small enough that
// no listed per-token price rounds, large enough (int64) for any ledger total.
// There are no floats anywhere in this package on purpose: a float cannot
// represent 0.1 exactly, and billing must add up to the cent.
package money

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
)

// NanoUSD is an amount in billionths of a US dollar.
type NanoUSD int64

// Decimals is the number of decimal digits a NanoUSD carries.
const Decimals = 9

// nanoPerUSD is the number of NanoUSD in one US dollar.
const nanoPerUSD = 1_000_000_000

// tokensPerMillion is the divisor that turns a per-million price into a per-token one.
const tokensPerMillion = 1_000_000

// ErrInvalidAmount is wrapped by every error ParseUSD returns.
var ErrInvalidAmount = errors.New("invalid USD amount")

// ErrOverflow is wrapped when a computation does not fit in a NanoUSD.
var ErrOverflow = errors.New("amount overflows int64 nano-USD")

// ErrInexactPrice is wrapped when a per-million price is not a whole number of
// nano-USD per token, which would make per-request costs round.
var ErrInexactPrice = errors.New("price is not a whole number of nano-USD per token")

// ErrNegativeTokens is wrapped when a token count given to Cost is negative.
var ErrNegativeTokens = errors.New("negative token count")

// ParseError describes why a decimal USD string was rejected.
type ParseError struct {
	Input  string // the string as given
	Reason string // what is wrong with it
	Err    error  // ErrInvalidAmount or ErrOverflow
}

// Error implements error.
func (e *ParseError) Error() string {
	return fmt.Sprintf("parse USD %q: %s", e.Input, e.Reason)
}

// Unwrap returns the sentinel error, so callers can use errors.Is.
func (e *ParseError) Unwrap() error { return e.Err }

// ParseUSD parses a non-negative decimal USD string such as "0.15", "2.50",
// "15" or "0.000000001" into an exact NanoUSD. It rejects signs, exponents,
// more than 9 decimals, and values that do not fit in an int64.
func ParseUSD(s string) (NanoUSD, error) {
	fail := func(reason string) (NanoUSD, error) {
		return 0, &ParseError{Input: s, Reason: reason, Err: ErrInvalidAmount}
	}
	if s == "" {
		return fail("empty string")
	}
	if s[0] == '-' {
		return fail("negative amounts are not allowed")
	}
	if s[0] == '+' {
		return fail("a sign is not allowed")
	}
	if strings.ContainsAny(s, "eE") {
		return fail("exponent notation is not allowed; write the plain decimal")
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" {
		return fail("missing digits before the decimal point")
	}
	if hasDot && frac == "" {
		return fail("missing digits after the decimal point")
	}
	if !allDigits(whole) || !allDigits(frac) {
		return fail("only digits and one decimal point are allowed")
	}
	if len(frac) > Decimals {
		return fail(fmt.Sprintf("more than %d decimals (the smallest unit is 0.000000001 USD)", Decimals))
	}
	// Accumulate in uint64 with explicit overflow checks: the whole part may
	// have arbitrarily many (leading-zero) digits.
	var n uint64
	for _, c := range whole + frac + strings.Repeat("0", Decimals-len(frac)) {
		hi, lo := bits.Mul64(n, 10)
		if hi != 0 {
			return 0, &ParseError{Input: s, Reason: "too large", Err: ErrOverflow}
		}
		sum, carry := bits.Add64(lo, uint64(c-'0'), 0)
		if carry != 0 || sum > math.MaxInt64 {
			return 0, &ParseError{Input: s, Reason: "too large", Err: ErrOverflow}
		}
		n = sum
	}
	return NanoUSD(n), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// USD formats n as a decimal USD string with exactly 9 decimals,
// e.g. 1500 → "0.000001500" and -5 → "-0.000000005".
func (n NanoUSD) USD() string {
	// Work on the magnitude as uint64 so math.MinInt64 has no overflow.
	neg := n < 0
	mag := uint64(n)
	if neg {
		mag = -mag
	}
	sign := ""
	if neg {
		sign = "-"
	}
	return fmt.Sprintf("%s%d.%09d", sign, mag/nanoPerUSD, mag%nanoPerUSD)
}

// String implements fmt.Stringer with a "$" prefix for logs.
func (n NanoUSD) String() string { return "$" + n.USD() }

// Price is a model's price in USD per million tokens, stored in nano-USD.
// Both fields are multiples of 1,000,000 (see ParsePrice), so the price of a
// single token is a whole number of nano-USD and no cost ever rounds.
type Price struct {
	InputPerMillion  NanoUSD // prompt tokens
	OutputPerMillion NanoUSD // completion tokens
}

// ParsePrice parses decimal USD-per-million-token prices. It rejects a price
// with more than 3 decimals, because that is not a whole number of nano-USD
// per token and would round.
func ParsePrice(inputPerMillion, outputPerMillion string) (Price, error) {
	in, err := parsePerMillion("input", inputPerMillion)
	if err != nil {
		return Price{}, err
	}
	out, err := parsePerMillion("output", outputPerMillion)
	if err != nil {
		return Price{}, err
	}
	return Price{InputPerMillion: in, OutputPerMillion: out}, nil
}

func parsePerMillion(which, s string) (NanoUSD, error) {
	n, err := ParseUSD(s)
	if err != nil {
		return 0, fmt.Errorf("%s price per million tokens: %w", which, err)
	}
	if n%tokensPerMillion != 0 {
		return 0, fmt.Errorf("%s price per million tokens %q: %w (at most 3 decimals, e.g. 0.125)", which, s, ErrInexactPrice)
	}
	return n, nil
}

// PerToken returns the input and output prices of a single token.
func (p Price) PerToken() (input, output NanoUSD) {
	return p.InputPerMillion / tokensPerMillion, p.OutputPerMillion / tokensPerMillion
}

// Cost returns the exact cost of a request with the given token counts.
// It rejects negative counts and reports ErrOverflow instead of wrapping.
func (p Price) Cost(promptTokens, completionTokens int64) (NanoUSD, error) {
	if promptTokens < 0 || completionTokens < 0 {
		return 0, fmt.Errorf("cost of %d prompt and %d completion tokens: %w", promptTokens, completionTokens, ErrNegativeTokens)
	}
	if p.InputPerMillion < 0 || p.OutputPerMillion < 0 {
		return 0, fmt.Errorf("cost with negative price %s/%s per million: %w", p.InputPerMillion.USD(), p.OutputPerMillion.USD(), ErrInvalidAmount)
	}
	// Multiply the per-million price by tokens and divide once at the end:
	// exact for prices from ParsePrice, and still correct (floor) for a Price
	// built by hand with a finer value.
	in, ok := mulDiv(uint64(p.InputPerMillion), uint64(promptTokens), tokensPerMillion)
	if !ok {
		return 0, fmt.Errorf("cost of %d prompt tokens: %w", promptTokens, ErrOverflow)
	}
	out, ok := mulDiv(uint64(p.OutputPerMillion), uint64(completionTokens), tokensPerMillion)
	if !ok {
		return 0, fmt.Errorf("cost of %d completion tokens: %w", completionTokens, ErrOverflow)
	}
	total, carry := bits.Add64(in, out, 0)
	if carry != 0 || total > math.MaxInt64 {
		return 0, fmt.Errorf("cost of %d prompt and %d completion tokens: %w", promptTokens, completionTokens, ErrOverflow)
	}
	return NanoUSD(total), nil
}

// mulDiv returns a*b/d using a 128-bit intermediate, and false if the
// quotient does not fit in an int64.
func mulDiv(a, b, d uint64) (uint64, bool) {
	hi, lo := bits.Mul64(a, b)
	if hi >= d {
		return 0, false // quotient would not fit in 64 bits (and bits.Div64 would panic)
	}
	q, _ := bits.Div64(hi, lo, d)
	if q > math.MaxInt64 {
		return 0, false
	}
	return q, true
}

// Add returns a+b, or ErrOverflow.
func Add(a, b NanoUSD) (NanoUSD, error) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, fmt.Errorf("add %s and %s: %w", a.USD(), b.USD(), ErrOverflow)
	}
	return s, nil
}
