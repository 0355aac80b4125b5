// Command analyst follows Tollgate's event stream the way an analyst's job
// does: it reads every event in the store's global order — from the
// PostgreSQL event store itself (events/pgstore, the reader behind
// `tollgate events export`), or from the JSON lines such an export wrote —
// decodes each envelope into its Go type with the events package, prints
// one line per event and, at the end, what each model was used for.
//
// With -follow it keeps reading the events committed after it started, as
// a projector does, until -count events were seen, -timeout passed or it
// is interrupted.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/money"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "analyst:", err)
		os.Exit(1)
	}
}

// options are the example's flags.
type options struct {
	databaseURL string
	in          string
	filter      pgstore.Filter
	from        int64
	follow      bool
	count       int
	timeout     time.Duration
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("analyst", flag.ContinueOnError)
	dsn := os.Getenv("TOLLGATE_DATABASE_URL")
	if dsn == "" {
		dsn = "postgres://127.0.0.1:5432/tollgate?sslmode=disable" // serve's default
	}
	fs.StringVar(&o.databaseURL, "database", dsn, "the event store's PostgreSQL URL (TOLLGATE_DATABASE_URL)")
	fs.StringVar(&o.in, "in", "", "read a `tollgate events export` file instead (- for stdin)")
	types := fs.String("type", "", "only these event types, comma separated")
	fs.StringVar(&o.filter.AccountID, "account", "", "only this account's events (acc_…)")
	fs.Int64Var(&o.from, "from-position", 0, "only the events after this global position")
	fs.BoolVar(&o.follow, "follow", false, "keep reading new events (not with -in)")
	fs.IntVar(&o.count, "count", 0, "stop after this many events (0 = no limit; with -follow, fail if fewer came by -timeout)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long it may run (with -follow: how long to follow; 0 = until interrupted)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *types != "" {
		for _, t := range strings.Split(*types, ",") {
			o.filter.Types = append(o.filter.Types, strings.TrimSpace(t))
		}
	}
	if o.follow && o.in != "" {
		return o, errors.New("-follow reads the store: it does not go with -in")
	}
	return o, nil
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	r := newReport(stdout, o.count)
	if o.in != "" {
		err = readExport(o.in, stdin, o.filter, o.from, r)
	} else {
		err = readStore(ctx, o, r)
	}
	if errors.Is(err, errEnough) {
		err = nil
	}
	if o.follow && ctx.Err() != nil {
		err = nil // followed for as long as asked, or interrupted
	}
	r.summary()
	if err == nil && o.follow && o.count > 0 && r.seen < o.count {
		err = fmt.Errorf("saw %d events, wanted %d", r.seen, o.count)
	}
	return err
}

// readStore reads the store in its global order: CatchUp returns once it
// has passed every event committed before it started (waiting for any
// transaction still appending them), so an empty read is never taken for
// the end. Following is calling it again from where it stopped.
func readStore(ctx context.Context, o options, r *report) error {
	cfg, err := pgxpool.ParseConfig(o.databaseURL)
	if err != nil {
		return fmt.Errorf("database URL: %w", err)
	}
	cfg.MaxConns = 2
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	store, err := pgstore.New(pool, nil)
	if err != nil {
		return err
	}
	cur, err := store.CursorAt(ctx, o.from)
	if err != nil {
		return fmt.Errorf("position %d: %w", o.from, err)
	}
	for {
		// Each round is bounded, also when following without an end.
		round, cancel := context.WithTimeout(ctx, time.Minute)
		cur, err = store.CatchUp(round, pgstore.CatchUpConfig{From: cur, Filter: o.filter, Wait: 10 * time.Second},
			func(evs []events.Envelope, _ pgstore.Cursor) error { return r.add(evs...) })
		cancel()
		if err != nil || !o.follow {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// readExport reads the JSON lines `tollgate events export` writes: one
// envelope per line. The export already applied its own filters; the
// account, type and position filters apply again here.
func readExport(path string, stdin io.Reader, f pgstore.Filter, from int64, r *report) error {
	in := stdin
	if path != "-" {
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		defer file.Close()
		in = file
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		var e events.Envelope
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if e.Position <= from || (f.AccountID != "" && e.Metadata.AccountID != f.AccountID) || (len(f.Types) > 0 && !contains(f.Types, e.Type)) {
			continue
		}
		if err := r.add(e); err != nil {
			return err
		}
	}
	return sc.Err()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// errEnough stops a read once -count events were seen.
var errEnough = errors.New("enough events")

// report prints the events and sums up the completions.
type report struct {
	out    io.Writer
	limit  int
	seen   int
	models map[string]*modelUse
}

type modelUse struct {
	requests, failed   int
	prompt, completion int64
	cost               money.NanoUSD
}

func newReport(out io.Writer, limit int) *report {
	return &report{out: out, limit: limit, models: map[string]*modelUse{}}
}

func (r *report) model(name string) *modelUse {
	m := r.models[name]
	if m == nil {
		m = &modelUse{}
		r.models[name] = m
	}
	return m
}

// add decodes each envelope into its event type and prints it.
func (r *report) add(evs ...events.Envelope) error {
	for _, e := range evs {
		if r.limit > 0 && r.seen >= r.limit {
			return errEnough
		}
		data, err := events.Decode(e) // upcasts older schema versions first
		if err != nil {
			return err
		}
		r.seen++
		fmt.Fprintf(r.out, "%6d %s %-28s %-42s %s\n", e.Position, e.OccurredAt.Format(time.RFC3339), e.Type, e.StreamID, r.describe(data))
	}
	if r.limit > 0 && r.seen >= r.limit {
		return errEnough
	}
	return nil
}

// describe says what one event means; the cases are the types an analyst
// looks at most, every other type prints its name only.
func (r *report) describe(data events.Data) string {
	switch d := data.(type) {
	case events.AccountCreated:
		return fmt.Sprintf("account %q on plan %s", d.Name, d.Plan)
	case events.AccountPlanChanged:
		return fmt.Sprintf("plan %s -> %s", d.FromPlan, d.Plan)
	case events.APIKeyIssued:
		return fmt.Sprintf("key %s (%s…) for %s", d.KeyID, d.KeyPrefix, d.AccountID)
	case events.AccountLimitsChanged:
		return "limits " + limits(d.Limits)
	case events.APIKeyLimitsChanged:
		return "limits " + limits(d.Limits)
	case events.APIKeySuspended:
		return "suspended: " + d.Reason
	case events.CompletionRequested:
		return fmt.Sprintf("%s asked %s (%s)", d.KeyID, d.Model, d.Mode)
	case events.CompletionSucceeded:
		m := r.model(d.Model)
		m.requests++
		m.prompt += d.Usage.PromptTokens
		m.completion += d.Usage.CompletionTokens
		m.cost += money.NanoUSD(d.CostNanoUSD)
		return fmt.Sprintf("%s via %s: %d+%d tokens, $%s, %dms, stream=%t",
			d.Model, d.Provider, d.Usage.PromptTokens, d.Usage.CompletionTokens, money.NanoUSD(d.CostNanoUSD).USD(), d.LatencyMS, d.Stream)
	case events.CompletionFailed:
		r.model(d.Model).failed++
		return fmt.Sprintf("%s failed: %d %s", d.Model, d.Status, d.ErrorCode)
	case events.QuotaReserved:
		return fmt.Sprintf("reserved $%s and %d tokens at worst", money.NanoUSD(d.CostNanoUSD).USD(), d.Tokens)
	case events.QuotaSettled:
		return fmt.Sprintf("reserved $%s, settled at $%s", money.NanoUSD(d.ReservedNanoUSD).USD(), money.NanoUSD(d.CostNanoUSD).USD())
	}
	return ""
}

// limits says which overrides are set; the others are the plan's.
func limits(l events.LimitOverrides) string {
	var set []string
	if l.RequestsPerMinute != nil {
		set = append(set, fmt.Sprintf("%d requests/min", *l.RequestsPerMinute))
	}
	if l.TokensPerMinute != nil {
		set = append(set, fmt.Sprintf("%d tokens/min", *l.TokensPerMinute))
	}
	if l.DailyBudgetNanoUSD != nil {
		set = append(set, "$"+money.NanoUSD(*l.DailyBudgetNanoUSD).USD()+" a day")
	}
	if l.MonthlyBudgetNanoUSD != nil {
		set = append(set, "$"+money.NanoUSD(*l.MonthlyBudgetNanoUSD).USD()+" a month")
	}
	if len(set) == 0 {
		return "the plan's"
	}
	return strings.Join(set, ", ")
}

// summary prints each model's requests, tokens and cost.
func (r *report) summary() {
	names := make([]string, 0, len(r.models))
	for n := range r.models {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(r.out, "%d events\n", r.seen)
	for _, n := range names {
		m := r.models[n]
		fmt.Fprintf(r.out, "model %s: %d succeeded, %d failed, %d prompt + %d completion tokens, $%s\n",
			n, m.requests, m.failed, m.prompt, m.completion, m.cost.USD())
	}
}
