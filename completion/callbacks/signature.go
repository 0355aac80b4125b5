// Package callbacks sends finished jobs' results to the callback URL their
// request named, signed so the receiver can tell they come from Tollgate,
// retried with exponential backoff, and records the outcome as
// completion.callback_delivered or completion.callback_failed.
//
// Delivery is at least once: a dispatcher that dies after the receiver
// answered and before the outcome was stored sends again. Receivers dedupe
// by the job id (the body's "id", also the Tollgate-Job-Id header).
package callbacks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header names of a callback request.
const (
	// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256>" where
	// the HMAC, keyed with the callback secret, is over "<t>.<body>".
	SignatureHeader = "Tollgate-Signature"
	// JobIDHeader carries the job (completion) id, the receiver's dedupe key.
	JobIDHeader = "Tollgate-Job-Id"
)

// DefaultTolerance is how old a signature Verify accepts by default: it
// bounds replays of a captured request.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify.
var (
	ErrBadSignatureHeader = errors.New("callbacks: malformed signature header")
	ErrSignatureMismatch  = errors.New("callbacks: signature does not match")
	ErrSignatureTooOld    = errors.New("callbacks: signature timestamp outside the tolerance")
)

// Sign returns the signature header's value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a signature header against body: one of its v1 values
// must be the HMAC of "<t>.<body>", and t must be within tolerance of now
// (DefaultTolerance when tolerance is 0). It is what a receiver written in
// Go runs; the README shows the same in a few lines of other languages.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance == 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrBadSignatureHeader
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil {
				return fmt.Errorf("%w: v1: %w", ErrBadSignatureHeader, err)
			}
			sigs = append(sigs, b)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrBadSignatureHeader
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrSignatureTooOld
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrSignatureMismatch
}
