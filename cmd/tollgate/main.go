// Command tollgate is Tollgate's one binary: every role, the migrations and
// the analysts' tools.
//
//	tollgate serve              all roles in one process
//	tollgate api|worker|project|relay|bill
//	                            one role
//	tollgate migrate            apply the SQL migrations
//	tollgate project rebuild    rebuild the read models beside the live ones and compare
//	tollgate events export      the event stream as JSON lines
//	tollgate bench              load test against a built-in fake upstream
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tollgate/tollgate/server"
)

const usage = `tollgate — an event-sourced gateway between your customers and LLM providers

usage: tollgate <command> [flags]

roles:
  serve      all roles in one process (API, worker, projector, relay, billing)
  api        the HTTP API (OpenAI-compatible client API, admin API)
  worker     executes queued (async) completions from the bus
  project    builds the read models from the bus
  relay      publishes committed events to the bus (the outbox relay)
  bill       reports metered usage to Stripe

tools:
  migrate                 apply the SQL migrations and exit
  project rebuild         rebuild the read models from position 0 beside the live ones and compare
  events export           write the event stream as JSON lines (see: tollgate events export -h)
  billing reconcile --period YYYY-MM            ledger vs billable vs reported per account; exit 1 when they disagree
  billing explain --account ID --period YYYY-MM  each reported quantity back to its completion events
  bench                   load test with a built-in fake upstream (see: tollgate bench -h)

configuration: TOLLGATE_CONFIG (YAML file), TOLLGATE_DATABASE_URL, TOLLGATE_HTTP_ADDR,
TOLLGATE_ADMIN_TOKEN, TOLLGATE_KAFKA_BROKERS, STRIPE_SECRET_KEY, STRIPE_API_BASE,
STRIPE_METER_EVENT_NAME, TOLLGATE_LOG_LEVEL — see README.md.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(1)
	}
}

// exitCode ends the program with a status and no message.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runRoles(ctx, server.AllRoles(), stderr)
	case "api":
		return runRoles(ctx, server.Roles{API: true}, stderr)
	case "worker":
		return runRoles(ctx, server.Roles{Worker: true}, stderr)
	case "project":
		if len(rest) > 0 && rest[0] == "rebuild" {
			return rebuild(ctx, rest[1:], stdout, stderr)
		}
		return runRoles(ctx, server.Roles{Projector: true}, stderr)
	case "relay":
		return runRoles(ctx, server.Roles{Relay: true}, stderr)
	case "bill":
		return runRoles(ctx, server.Roles{Billing: true}, stderr)
	case "migrate":
		return migrate(ctx, stdout, stderr)
	case "events":
		if len(rest) == 0 || rest[0] != "export" {
			return errors.New("usage: tollgate events export [flags]")
		}
		return exportEvents(ctx, rest[1:], stdout, stderr)
	case "bench":
		return bench(ctx, rest, stdout, stderr)
	case "billing":
		return billingCommand(ctx, rest, stdout, stderr)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
