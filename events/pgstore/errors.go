package pgstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// Transient reports whether err, from a statement on PostgreSQL, says the
// server could not be reached or did not answer, rather than answering:
// a connection refused, lost or timed out, a statement cut off by its
// deadline (whose effect is unknown: a hung server applies what it had
// received when it resumes) or left by its caller while its group commit
// was in flight, a server shutting down or starting up, or out
// of connections. Trying again later may succeed, and a write may have
// been applied, so a writer whose events have derived ids reads back or
// appends again (execution.Config.Transient).
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	var ne net.Error
	var ue *outcomeUnknownError
	switch {
	case errors.As(err, &ce), errors.Is(err, pgconn.ErrConnClosed), pgconn.Timeout(err), errors.As(err, &ue):
		return true
	case errors.As(err, &pe):
		// 08: connection exception; 57P01-03: admin shutdown, crash
		// shutdown, cannot connect now; 53300: too many connections.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" || pe.Code == "53300"
	}
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// Ambiguous reports whether a write that failed with err may still have
// been applied: a transient failure after the statement was sent (a
// statement timeout, a connection lost mid-statement, a caller that
// stopped waiting for an append its group commit had sent). A connection that
// could not be made, a failure pgconn knows struck before anything was
// sent, and an answer from the server (an error: the statement's
// transaction was rolled back) mean nothing was applied, and a writer
// need not read back.
func Ambiguous(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	return Transient(err) && !errors.As(err, &ce) && !errors.As(err, &pe) && !pgconn.SafeToRetry(err)
}
