// Package bench measures Tollgate under load against a built-in fake
// upstream: throughput, and the latency Tollgate adds over calling the
// upstream directly, both measured side by side in one run.
//
// Run starts a fake OpenAI-compatible provider and a complete Tollgate
// (every role) in process on a database of its own, creates an account and
// an API key through the admin API, then sends the same synchronous chat
// completion straight to the provider and through Tollgate: first one at a
// time, alternating the two so that both see the same machine conditions,
// then Config.Concurrency at once to each in turn.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/money"
)

// Defaults of Config.
const (
	DefaultRequests    = 2000
	DefaultConcurrency = 32
	DefaultWarmup      = 200
)

// Names the bench gives to what it configures in Tollgate.
const (
	// Model is the client-facing model the bench calls.
	Model = "bench-model"
	// Provider is the name of the fake upstream in Tollgate's configuration.
	Provider = "bench-upstream"
	// Plan is the plan of the bench's account: no rate limits, no budgets.
	Plan = "bench"
)

// Config configures a run.
type Config struct {
	// DatabaseURL is a PostgreSQL server URL (postgres://…). The bench
	// creates its own database tollgate_bench_<random> on that server and
	// drops it at the end unless Keep; the URL's database name is not used.
	DatabaseURL string
	// Keep keeps the bench's database for inspection.
	Keep bool
	// Requests is the number of requests per phase and target, DefaultRequests when zero.
	Requests int
	// Concurrency is the number of requests in flight in the load phase, DefaultConcurrency when zero.
	Concurrency int
	// Warmup is the number of unmeasured requests sent to each target first,
	// DefaultWarmup when zero; negative means none.
	Warmup int
	// UpstreamLatency is the fake provider's think time per request (0 = answer at once).
	UpstreamLatency time.Duration
	// KafkaBrokers, when set, runs Tollgate with the Kafka bus instead of
	// PostgreSQL. Use a dedicated Kafka: the bench publishes to Tollgate's topic.
	KafkaBrokers []string
	// Logger receives progress and failures; discarded when nil.
	Logger *slog.Logger
}

// Stats summarizes one phase against one target. Percentiles are over the
// successful requests.
type Stats struct {
	// Requests counts the requests sent, Errors those that did not answer HTTP 200.
	Requests, Errors int
	// Elapsed is the phase's wall time under load; in the light-load phase,
	// where the targets alternate, the sum of this target's latencies.
	Elapsed time.Duration
	// Throughput is Requests per second of Elapsed.
	Throughput float64
	// P50, P90, P99 and Max are latency percentiles (nearest rank).
	P50, P90, P99, Max time.Duration
}

// Report is the result of a run.
type Report struct {
	// Direct and Tollgate are measured at concurrency 1 (light load),
	// interleaved request by request.
	Direct, Tollgate Stats
	// DirectLoad and TollgateLoad are measured at Config.Concurrency.
	DirectLoad, TollgateLoad Stats
	// AddedP50 and AddedP99 are the latency Tollgate adds at light load:
	// Tollgate's percentile minus the direct one.
	AddedP50, AddedP99 time.Duration

	// Config is the run's configuration, defaults applied (Logger dropped).
	Config Config
	// Bus is "postgresql" or "kafka".
	Bus string
}

// requestBody is the chat completion every request sends.
const requestBody = `{"model":"` + Model + `","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello to the benchmark in one short sentence, please."}],"max_tokens":64}`

// withDefaults returns cfg with defaults applied.
func (cfg Config) withDefaults() Config {
	if cfg.Requests <= 0 {
		cfg.Requests = DefaultRequests
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	switch {
	case cfg.Warmup == 0:
		cfg.Warmup = DefaultWarmup
	case cfg.Warmup < 0:
		cfg.Warmup = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Run runs the bench. Failed requests are counted in the report, not
// returned as an error; an error means the bench itself could not run.
func Run(ctx context.Context, cfg Config) (_ Report, err error) {
	cfg = cfg.withDefaults()
	logger := cfg.Logger
	if cfg.DatabaseURL == "" {
		return Report{}, errors.New("bench: DatabaseURL is required")
	}
	if cfg.UpstreamLatency < 0 {
		return Report{}, fmt.Errorf("bench: UpstreamLatency must not be negative, got %s", cfg.UpstreamLatency)
	}
	rep := Report{Config: cfg, Bus: "postgresql"}
	rep.Config.Logger = nil
	if len(cfg.KafkaBrokers) > 0 {
		rep.Bus = "kafka"
	}

	st, err := startStack(ctx, stackConfig{DatabaseURL: cfg.DatabaseURL, Keep: cfg.Keep, UpstreamLatency: cfg.UpstreamLatency,
		KafkaBrokers: cfg.KafkaBrokers, ProviderTransport: newTransport(cfg.Concurrency), Logger: logger})
	if err != nil {
		return Report{}, err
	}
	defer func() { err = errors.Join(err, st.close(ctx)) }()
	requestTimeout := time.Minute + cfg.UpstreamLatency

	body := []byte(requestBody)
	direct := &target{name: "direct", client: newClient(cfg.Concurrency, requestTimeout),
		url: st.up.baseURL + "/chat/completions", auth: "Bearer sk-bench", body: body, logger: logger}
	via := &target{name: "tollgate", client: newClient(cfg.Concurrency, requestTimeout),
		url: st.tollgateURL + "/v1/chat/completions", auth: "Bearer " + st.key, body: body, logger: logger}
	defer direct.client.CloseIdleConnections()
	defer via.client.CloseIdleConnections()

	if cfg.Warmup > 0 {
		logger.Info("bench warmup", "requests", cfg.Warmup, "concurrency", cfg.Concurrency)
		for _, t := range []*target{direct, via} {
			if _, err := load(ctx, cfg.Warmup, cfg.Concurrency, t); err != nil {
				return Report{}, fmt.Errorf("bench: warmup: %w", err)
			}
		}
	}
	// Count only the measured phases' failures in the log's budget.
	direct.logged.Store(0)
	via.logged.Store(0)

	logger.Info("bench light load", "requests", cfg.Requests, "concurrency", 1)
	if rep.Direct, rep.Tollgate, err = interleaved(ctx, cfg.Requests, direct, via); err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}
	rep.AddedP50 = rep.Tollgate.P50 - rep.Direct.P50
	rep.AddedP99 = rep.Tollgate.P99 - rep.Direct.P99

	logger.Info("bench load", "requests", cfg.Requests, "concurrency", cfg.Concurrency)
	if rep.DirectLoad, err = load(ctx, cfg.Requests, cfg.Concurrency, direct); err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}
	if rep.TollgateLoad, err = load(ctx, cfg.Requests, cfg.Concurrency, via); err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}
	return rep, nil
}

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
func tollgateConfig(cfg stackConfig, upstreamURL, dbURL, adminToken string) (*config.Config, error) {
	c := config.Default()
	c.Providers = append(c.Providers, config.Provider{
		Name: Provider, Kind: config.KindOpenAI, BaseURL: upstreamURL,
		Timeout: config.Duration(time.Minute + cfg.UpstreamLatency),
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
		KafkaBrokers:         cfg.KafkaBrokers,
		StripeMeterEventName: config.DefaultMeterEventName,
		InstanceID:           "bench-" + suffix,
		LogLevel:             config.DefaultLogLevel,
		// Past this a synchronous request would be answered 202 with its
		// job: keep it well beyond the upstream's latency so that it never
		// cuts a measured request short.
		ResponseDeadline: 2*time.Minute + cfg.UpstreamLatency,
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

// Write writes the report as a table, with the facts of the machine it ran on.
func (r Report) Write(w io.Writer) error {
	c := r.Config
	var b bytes.Buffer
	fmt.Fprintf(&b, "tollgate bench: %d requests per phase, %d warmup, load concurrency %d, upstream latency %s, bus %s\n",
		c.Requests, c.Warmup, c.Concurrency, c.UpstreamLatency, r.Bus)
	fmt.Fprintf(&b, "machine: %s/%s, %d CPUs, GOMAXPROCS %d, %s\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\ttarget\tconc\trequests\terrors\treq/s\tp50\tp90\tp99\tmax\t")
	row := func(phase, target string, conc int, s Stats) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t\n", phase, target, conc, s.Requests, s.Errors,
			s.Throughput, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max))
	}
	row("light", "direct", 1, r.Direct)
	row("light", "tollgate", 1, r.Tollgate)
	row("load", "direct", c.Concurrency, r.DirectLoad)
	row("load", "tollgate", c.Concurrency, r.TollgateLoad)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("bench report: %w", err)
	}
	fmt.Fprintf(&b, "\nlatency Tollgate adds at light load: p50 %s, p99 %s\n", ms(r.AddedP50), ms(r.AddedP99))
	if errs := r.Direct.Errors + r.Tollgate.Errors + r.DirectLoad.Errors + r.TollgateLoad.Errors; errs > 0 {
		fmt.Fprintf(&b, "WARNING: %d requests failed (see the log)\n", errs)
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("bench report: %w", err)
	}
	return nil
}

// ms formats d in milliseconds with a precision that suits sub-millisecond latencies.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}
