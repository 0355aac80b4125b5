package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/money"
)

// benchDatabase derives the bench's database from the server URL: the URL
// of a new database tollgate_bench_<random>, and the URL of the server's
// maintenance database (postgres) to create and drop it from.
func benchDatabase(serverURL string) (dbURL, maintURL, name string, err error) {
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", "", "", fmt.Errorf("bench: database URL must be a postgres:// URL, got %q", redact(serverURL))
	}
	suffix, err := randomHex(6)
	if err != nil {
		return "", "", "", err
	}
	name = "tollgate_bench_" + suffix
	db, maint := *u, *u
	db.Path, db.RawPath = "/"+name, ""
	maint.Path, maint.RawPath = "/postgres", ""
	return db.String(), maint.String(), name, nil
}

// redact hides a URL's password.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// execMaintenance runs one statement on the maintenance database.
func execMaintenance(ctx context.Context, maintURL, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, maintURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(maintURL), err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("bench: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// tollgateConfig is the default configuration plus the fake upstream, the
// bench model and a plan without limits, on the bench's database.
func tollgateConfig(upstreamURL, dbURL, adminToken string, upstreamLatency time.Duration, kafkaBrokers []string) (*config.Config, error) {
	c := config.Default()
	c.Providers = append(c.Providers, config.Provider{
		Name: Provider, Kind: config.KindOpenAI, BaseURL: upstreamURL,
		Timeout: config.Duration(time.Minute + upstreamLatency),
	})
	c.Models = append(c.Models, config.Model{
		Name:        Model,
		Description: "the bench's fake upstream",
		Deployments: []config.Deployment{{Provider: Provider, Model: upstreamModel}},
		Price:       money.Price{InputPerMillion: 150_000_000, OutputPerMillion: 600_000_000}, // 0.15 and 0.60 USD per million tokens
	})
	c.Plans = append(c.Plans, config.Plan{Name: Plan})
	suffix, err := randomHex(4)
	if err != nil {
		return nil, err
	}
	c.Env = config.Env{
		DatabaseURL:          dbURL,
		HTTPAddr:             "127.0.0.1:0",
		AdminToken:           adminToken,
		KafkaBrokers:         kafkaBrokers,
		StripeMeterEventName: config.DefaultMeterEventName,
		InstanceID:           "bench-" + suffix,
		LogLevel:             config.DefaultLogLevel,
		// Past this a synchronous request would be answered 202 with its
		// job: keep it well beyond the upstream's latency so that it never
		// cuts a measured request short.
		ResponseDeadline: 2*time.Minute + upstreamLatency,
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("bench: config: %w", err)
	}
	return c, nil
}

// provision creates the bench's account and API key through the admin API
// and returns the key.
func provision(ctx context.Context, client *http.Client, baseURL, adminToken string) (string, error) {
	defer client.CloseIdleConnections()
	var acc struct {
		ID string `json:"id"`
	}
	if err := adminPost(ctx, client, baseURL+"/v1/admin/accounts", adminToken,
		map[string]string{"name": "Tollgate bench", "email": "bench@example.com", "plan": Plan}, &acc); err != nil {
		return "", fmt.Errorf("bench: create account: %w", err)
	}
	var key struct {
		Key string `json:"key"`
	}
	if err := adminPost(ctx, client, baseURL+"/v1/admin/accounts/"+url.PathEscape(acc.ID)+"/keys", adminToken,
		map[string]string{"name": "bench"}, &key); err != nil {
		return "", fmt.Errorf("bench: issue key: %w", err)
	}
	if acc.ID == "" || !strings.HasPrefix(key.Key, "tg_") {
		return "", fmt.Errorf("bench: admin API answered account %q and a key without the tg_ prefix", acc.ID)
	}
	return key.Key, nil
}

func adminPost(ctx context.Context, client *http.Client, u, token string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("POST %s: read: %w", u, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: HTTP %d: %s", u, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("POST %s: decode: %w", u, err)
	}
	return nil
}

// withApplication returns dbURL with its connections' application_name
// set to app, so that pg_stat_activity tells whose they are.
func withApplication(dbURL, app string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", fmt.Errorf("bench: database URL: %w", err)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
