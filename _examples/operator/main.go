// Command operator sets up a customer the way an operator does, through
// Tollgate's admin API: it creates an account, issues it an API key, moves
// the account to another plan with limits of its own, narrows the key's
// limits, and reads back what the account has left.
//
// Progress goes to stderr; stdout gets the new account's and key's ids and
// the key's secret as shell assignments, so that
//
//	eval "$(go run ./_examples/operator)"
//
// leaves TOLLGATE_ACCOUNT_ID, TOLLGATE_KEY_ID and TOLLGATE_API_KEY set for
// the other examples.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "operator:", err)
		os.Exit(1)
	}
}

// options are the example's flags; each defaults to an environment variable.
type options struct {
	url, adminToken    string
	name, email, plan  string
	upgradeTo          string
	requestsPerMinute  int64
	dailyBudgetUSD     string
	keyTokensPerMinute int64
	timeout            time.Duration
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", env("TOLLGATE_URL", "http://localhost:8080"), "Tollgate's base URL (TOLLGATE_URL)")
	fs.StringVar(&o.adminToken, "admin-token", os.Getenv("TOLLGATE_ADMIN_TOKEN"), "the admin token `tollgate serve` prints or was given (TOLLGATE_ADMIN_TOKEN)")
	fs.StringVar(&o.name, "name", "Acme", "the account's name")
	fs.StringVar(&o.email, "email", "ops@acme.test", "the account's email")
	fs.StringVar(&o.plan, "plan", "free", "the plan the account starts on")
	fs.StringVar(&o.upgradeTo, "upgrade-to", "pro", "the plan to move the account to afterwards (empty: stay)")
	fs.Int64Var(&o.requestsPerMinute, "rpm", 100, "the account's own requests-per-minute limit")
	fs.StringVar(&o.dailyBudgetUSD, "daily-budget", "5.00", "the account's own daily budget in USD")
	fs.Int64Var(&o.keyTokensPerMinute, "key-tpm", 20000, "the key's tokens-per-minute limit, narrower than the account's")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long the whole setup may take")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.adminToken == "" {
		return o, errors.New("no admin token: set TOLLGATE_ADMIN_TOKEN or -admin-token (tollgate serve prints one at start when none is set)")
	}
	o.url = strings.TrimRight(o.url, "/")
	return o, nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	admin := adminClient{base: o.url, token: o.adminToken, http: &http.Client{Timeout: 10 * time.Second}}

	// 1. An account. Its id is Tollgate's (acc_…); the plan must be one of
	// the config's plans.
	var acc struct {
		ID, Name, Plan string
	}
	if err := admin.do(ctx, http.MethodPost, "/v1/admin/accounts",
		map[string]string{"name": o.name, "email": o.email, "plan": o.plan}, &acc); err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	fmt.Fprintf(stderr, "created account %s (%s) on plan %s\n", acc.ID, acc.Name, acc.Plan)

	// 2. An API key for it. The secret is in this answer only: Tollgate
	// keeps its SHA-256.
	var key struct {
		ID, Key, Prefix string
	}
	if err := admin.do(ctx, http.MethodPost, "/v1/admin/accounts/"+acc.ID+"/keys", map[string]string{"name": "example"}, &key); err != nil {
		return fmt.Errorf("issue key: %w", err)
	}
	fmt.Fprintf(stderr, "issued key %s (%s…)\n", key.ID, key.Prefix)

	// 3. Another plan, and limits of the account's own on top of it
	// (a missing or null limit takes the plan's value).
	patch := map[string]any{"limits": map[string]any{"requests_per_minute": o.requestsPerMinute, "daily_budget_usd": o.dailyBudgetUSD}}
	if o.upgradeTo != "" {
		patch["plan"] = o.upgradeTo
	}
	if err := admin.do(ctx, http.MethodPatch, "/v1/admin/accounts/"+acc.ID, patch, &acc); err != nil {
		return fmt.Errorf("change plan and limits: %w", err)
	}
	fmt.Fprintf(stderr, "account %s now on plan %s, %d requests/min, $%s a day\n", acc.ID, acc.Plan, o.requestsPerMinute, o.dailyBudgetUSD)

	// 4. A narrower limit for the one key.
	if err := admin.do(ctx, http.MethodPatch, "/v1/admin/keys/"+key.ID,
		map[string]any{"limits": map[string]any{"tokens_per_minute": o.keyTokensPerMinute}}, nil); err != nil {
		return fmt.Errorf("limit key: %w", err)
	}
	fmt.Fprintf(stderr, "key %s limited to %d tokens/min\n", key.ID, o.keyTokensPerMinute)

	// 5. What the account has left under those limits (the live limiter's
	// view; a key's own view is GET /v1/quota with the key).
	var quota struct {
		Plan    string `json:"plan"`
		Account struct {
			RequestsPerMinute struct {
				Limit int64 `json:"limit"`
				Used  int64 `json:"used"`
			} `json:"requests_per_minute"`
			Budgets []struct {
				Period       string  `json:"period"`
				LimitUSD     *string `json:"limit_usd"`
				RemainingUSD *string `json:"remaining_usd"`
			} `json:"budgets"`
		} `json:"account"`
	}
	if err := admin.do(ctx, http.MethodGet, "/v1/admin/accounts/"+acc.ID+"/quota", nil, &quota); err != nil {
		return fmt.Errorf("read quota: %w", err)
	}
	fmt.Fprintf(stderr, "quota: plan %s, %d of %d requests/min used\n", quota.Plan, quota.Account.RequestsPerMinute.Used, quota.Account.RequestsPerMinute.Limit)
	for _, b := range quota.Account.Budgets {
		if b.LimitUSD != nil && b.RemainingUSD != nil {
			fmt.Fprintf(stderr, "quota: %s budget $%s, $%s left\n", b.Period, *b.LimitUSD, *b.RemainingUSD)
		}
	}

	fmt.Fprintf(stdout, "export TOLLGATE_ACCOUNT_ID=%s\nexport TOLLGATE_KEY_ID=%s\nexport TOLLGATE_API_KEY=%s\n", acc.ID, key.ID, key.Key)
	return nil
}

// adminClient calls the admin API with the admin token.
type adminClient struct {
	base, token string
	http        *http.Client
}

// do sends body as JSON and decodes a 2xx answer into out (when not nil);
// any other status is an error carrying Tollgate's OpenAI-style error body.
func (c adminClient) do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Message, Code string }
		}
		_ = json.Unmarshal(raw, &e)
		return fmt.Errorf("%s %s: %s %s: %s", method, path, resp.Status, e.Error.Code, e.Error.Message)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}
