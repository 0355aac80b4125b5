package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/records"
)

// billingCommand runs `tollgate billing reconcile|explain`.
func billingCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: tollgate billing reconcile --period YYYY-MM | tollgate billing explain --account ID --period YYYY-MM")
	}
	fs := flag.NewFlagSet("tollgate billing "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	period := fs.String("period", "", "billing period, a month: YYYY-MM (e.g. 2026-11)")
	account := fs.String("account", "", "account id (explain)")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if _, _, err := billing.ParsePeriod(*period); err != nil {
		return err
	}
	cfg, pool, err := openDatabase(ctx, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	switch args[0] {
	case "reconcile":
		r, err := records.Reconcile(ctx, pool, cfg.Billing.Unit, *period)
		if err != nil {
			return err
		}
		if *asJSON {
			if err := json.NewEncoder(stdout).Encode(r); err != nil {
				return err
			}
		} else {
			printReconciliation(stdout, r)
		}
		if !r.Agrees {
			return exitCode(1)
		}
		return nil
	case "explain":
		if *account == "" {
			return errors.New("explain needs --account")
		}
		recs, err := records.Explain(ctx, pool, *account, *period)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(recs)
		}
		printExplain(stdout, *account, *period, recs)
		return nil
	default:
		return fmt.Errorf("unknown billing command %q (want reconcile or explain)", args[0])
	}
}

func printReconciliation(w io.Writer, r billing.Reconciliation) {
	fmt.Fprintf(w, "period %s (%s to %s), unit %s\n", r.Period, r.From.Format("2006-01-02"), r.To.Format("2006-01-02"), r.Unit)
	fmt.Fprintf(w, "%-28s %16s %16s %16s  %s\n", "account", "ledger", "billable", "reported", "status")
	for _, a := range r.Accounts {
		status := "ok"
		if !a.Agrees {
			status = "DISAGREES"
		}
		fmt.Fprintf(w, "%-28s %16d %16d %16d  %s\n", a.AccountID, a.Ledger, a.Billable, a.Reported, status)
		for _, d := range a.Differences {
			fmt.Fprintf(w, "    %s record=%s completion=%s status=%s quantity=%d events=%v\n", d.Kind, d.RecordID, d.CompletionID, d.Status, d.Quantity, d.EventIDs)
		}
	}
	if r.Agrees {
		fmt.Fprintln(w, "all accounts agree")
	} else {
		fmt.Fprintln(w, "totals disagree: see the differences above")
	}
}

func printExplain(w io.Writer, account, period string, recs []records.ExplainedRecord) {
	fmt.Fprintf(w, "account %s, period %s: %d billing records\n", account, period, len(recs))
	for _, r := range recs {
		fmt.Fprintf(w, "record %s window %s..%s seq %d: %d %s, %s\n", r.RecordID, r.WindowStart.Format("2006-01-02T15:04Z"),
			r.WindowEnd.Format("15:04Z"), r.Seq, r.Quantity, r.Unit, r.Status)
		if r.ReportedEventID != "" {
			fmt.Fprintf(w, "  reported %d to Stripe customer %s as meter event %s (event %s; closed by event %s)\n",
				r.ReportedQuantity, r.StripeCustomerID, r.Identifier, r.ReportedEventID, r.ClosedEventID)
		}
		for _, it := range r.Items {
			fmt.Fprintf(w, "  <- %d from completion %s (%s, %s, event %s)\n", it.Quantity, it.CompletionID, it.Model,
				it.OccurredAt.Format("2006-01-02T15:04:05Z"), it.EventID)
		}
		if r.ItemsQuantity != r.Quantity {
			fmt.Fprintf(w, "  note: completions total %d; the difference moved to the window's next record when this one was closed\n", r.ItemsQuantity)
		}
	}
}
