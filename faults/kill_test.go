package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/pgtest"
	"github.com/tollgate/tollgate/stripetest"
)

// The kill scenario's shape: load for killLoadFor from killWorkers
// goroutines while the role's process is SIGKILLed as killPlan says.
const (
	killWorkers = 6
	// killSlowWorkers send requests that outlive the lease.
	killSlowWorkers = 3
	killLoadFor     = 7 * time.Second
	killWindow      = 2 * time.Second // billing.window in killConfigYAML
	killSettle      = 45 * time.Second
	killAdminKey    = "admin-token-for-kill-tests-0123456789"
)

// Where a billing reporter's kill is aimed (killStep.at).
const (
	killAtTime     = ""         // after the step's delay
	killAtSending  = "sending"  // a meter event on its way to Stripe
	killAtAccepted = "accepted" // Stripe accepted it, the reporter has not heard
)

// killStep is one SIGKILL: after (from the previous restart, or from the
// start of the load), then a pause before the process is started again.
type killStep struct {
	after, pause time.Duration
	at           string // for the billing reporter
}

// killPlan: a short outage; a long one (a backlog builds up: queued jobs,
// unrelayed and unprojected events, due records); and a kill during the
// catch-up right after that restart.
var killPlan = []killStep{
	{after: time.Second, pause: 300 * time.Millisecond, at: killAtSending},
	{after: 1200 * time.Millisecond, pause: 2 * time.Second, at: killAtAccepted},
	{after: 150 * time.Millisecond, pause: 300 * time.Millisecond, at: killAtAccepted},
}

// killRoles are the roles, in the order they are killed.
var killRoles = []string{"api", "worker", "relay", "project", "bill"}

// killEnv is a running Tollgate: one OS process per role.
type killEnv struct {
	bin    string
	env    []string
	procs  map[string]*killProc
	pool   *pgxpool.Pool
	stripe *stripetest.Recorder
	gate   *killGate
	base   string
	kafka  []string // brokers, when the bus is Kafka
}

func startKillEnv(t *testing.T, kafka bool) *killEnv {
	t.Helper()
	e := &killEnv{bin: killBuildBinary(t), procs: map[string]*killProc{}}
	dsn := pgtest.NewDatabase(t)
	var stripeURL string
	stripeURL, e.stripe = stripetest.NewRecorder(t, stripetest.Shared(t))
	stripeURL, e.gate = killStripeGate(t, stripeURL, 300*time.Millisecond)
	up := killUpstream(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, killConfigYAML, up.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	// The processes get this environment and nothing of the test's own
	// Tollgate or Stripe settings (no Redis; Kafka only when asked).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TOLLGATE_") && !strings.HasPrefix(kv, "STRIPE_") {
			e.env = append(e.env, kv)
		}
	}
	e.env = append(e.env, "TOLLGATE_CONFIG="+cfgPath, "TOLLGATE_DATABASE_URL="+dsn, "TOLLGATE_ADMIN_TOKEN="+killAdminKey,
		"STRIPE_SECRET_KEY="+stripetest.TestSecretKey, "STRIPE_API_BASE="+stripeURL, "TOLLGATE_RESPONSE_DEADLINE=15s")
	if kafka {
		// The broker lives in the test process: it outlives every kill.
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, bus.Topic, bus.JobsTopic, bus.DeadLetterTopic))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		e.kafka = c.ListenAddrs()
		e.env = append(e.env, "TOLLGATE_KAFKA_BROKERS="+strings.Join(e.kafka, ","))
	}
	mig := exec.Command(e.bin, "migrate")
	mig.Env = e.env
	if out, err := mig.CombinedOutput(); err != nil {
		t.Fatalf("tollgate migrate: %v\n%s", err, out)
	}
	for _, role := range killRoles {
		p := &killProc{t: t, bin: e.bin, role: role, env: e.env, fixed: role == "api", logPath: filepath.Join(dir, role+".log")}
		e.procs[role] = p
		p.start()
		t.Cleanup(p.stop)
	}
	e.base = "http://" + e.procs["api"].addr
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.pool = pool
	return e
}

// account creates an account linked to Stripe customer cus and a key.
func (e *killEnv) account(t *testing.T, cus string) (accountID, key string) {
	t.Helper()
	ctx := context.Background()
	code, acc, err := killHTTP(ctx, http.MethodPost, e.base+"/v1/admin/accounts", killAdminKey,
		map[string]string{"name": "kill " + cus, "email": cus + "@kill.test", "plan": "pro", "stripe_customer_id": cus})
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create account: %d %v %v", code, acc, err)
	}
	accountID, _ = acc["id"].(string)
	code, k, err := killHTTP(ctx, http.MethodPost, e.base+"/v1/admin/accounts/"+accountID+"/keys", killAdminKey, map[string]string{"name": "load"})
	if err != nil || code != http.StatusCreated {
		t.Fatalf("issue key: %d %v %v", code, k, err)
	}
	key, _ = k["key"].(string)
	return accountID, key
}

// rebuild runs `tollgate project rebuild` and fails unless it exits 0
// (rebuilt read models equal to the live ones).
func (e *killEnv) rebuild(t *testing.T) {
	t.Helper()
	cmd := exec.Command(e.bin, "project", "rebuild", "-schema", "rebuild_kill")
	cmd.Env = e.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("tollgate project rebuild: %v\n%s", err, out)
	}
}

// TestKill SIGKILLs the process of each role (API, worker, relay,
// projector, billing reporter) three times under a load of sync, streamed
// and queued requests (some outliving the lease), then every process at
// once (a host crash), restarting them each time; then it waits until
// everything settled and checks: every answer a client got whole has
// exactly one completion.succeeded and one ledger row; no completion has
// two outcomes or none; ledger = billing records = billing.usage_reported
// = what Stripe received, per window; the jobs API and read model agree
// with the log; `tollgate project rebuild` equals the live read models.
// The scenarios run in two Tollgates side by side (killGroups), each
// scenario of a group after the previous one in its Tollgate. The bus is
// PostgreSQL; TestKillKafka runs the bus roles on Kafka.
func TestKill(t *testing.T) {
	t.Parallel()
	killRun(t, false, killGroups)
}

// killGroups are the kill scenarios of TestKill, one Tollgate per group:
// every role and the host crash.
var killGroups = [][]string{{"api", "worker", "relay"}, {"project", "bill", "all"}}

// TestKillKafka is TestKill's relay scenario with the Kafka bus (an
// in-process kfake broker, which outlives the kills): the relay's
// idempotent producer killed mid-publish and restarted. The worker and
// host-crash scenarios are not run on Kafka: kfake keeps a consumer group
// member killed -9 in the group past its session timeout, so its
// partitions are never consumed again (Kafka itself drops it after
// session.timeout.ms); see the README.
func TestKillKafka(t *testing.T) {
	t.Parallel()
	killRun(t, true, [][]string{{"relay"}})
}

// killRun runs each group of scenarios in a Tollgate of its own, the
// groups in parallel.
func killRun(t *testing.T, kafka bool, groups [][]string) {
	for _, scenarios := range groups {
		run := func(t *testing.T) {
			e := startKillEnv(t, kafka)
			var figures []killFigures
			for _, name := range scenarios {
				t.Run(name, func(t *testing.T) {
					figures = append(figures, e.killScenario(t, name))
				})
			}
			var b strings.Builder
			for _, f := range figures {
				b.WriteString("\n" + f.String())
			}
			t.Logf("kill -9 under load (Kafka bus: %v), per role:%s", kafka, b.String())
		}
		if len(groups) == 1 {
			run(t)
			continue
		}
		t.Run(strings.Join(scenarios, "+"), func(t *testing.T) {
			t.Parallel()
			run(t)
		})
	}
}

// killScenario runs the load while killPlan kills the processes of
// scenario ("all": every role at once), then judges.
func (e *killEnv) killScenario(t *testing.T, scenario string) killFigures {
	cus := "cus_kill_" + scenario
	account, key := e.account(t, cus)
	load := newKillLoad(e.base, key)
	start := time.Now()
	done := make(chan struct{})
	go func() { load.run(killWorkers, killSlowWorkers, start.Add(killLoadFor)); close(done) }()
	procs := []*killProc{e.procs[scenario]}
	if scenario == "all" {
		procs = nil
		for _, role := range killRoles {
			procs = append(procs, e.procs[role])
		}
	}
	kills := 0
	var down time.Duration
	for _, step := range killPlan {
		time.Sleep(step.after)
		if scenario == "bill" && step.at != killAtTime {
			c := e.gate.sending
			if step.at == killAtAccepted {
				c = e.gate.accepted
			}
			if !e.gate.wait(c, killLoadFor) {
				t.Errorf("no meter event %s within %s", step.at, killLoadFor)
			}
		}
		killed := time.Now()
		for _, p := range procs {
			p.kill()
		}
		kills++
		time.Sleep(step.pause)
		for _, p := range procs {
			p.start()
		}
		down += time.Since(killed)
	}
	<-done
	for _, q := range e.procs {
		if err := q.alive(); err != nil {
			t.Error(err)
		}
	}
	s, err := killWaitQuiet(context.Background(), e.pool, account, killWindow, killSettle)
	if err != nil {
		t.Errorf("%s: %v", scenario, err)
		if s == nil {
			t.FailNow()
		}
	}
	if d := killKafkaDiagnose(e.kafka, s); d != "" {
		t.Logf("Kafka:\n%s", d)
	}
	if d := killDiagnose(context.Background(), e.pool, s); d != "" {
		t.Logf("completions the read models missed:\n%s", d)
	}
	f, problems := killJudge(scenario, load.results(), s)
	f.Kills, f.Down = kills, down/time.Duration(kills)
	sends, distinct, sp := s.stripeProblems(e.stripe, cus)
	problems = append(problems, sp...)
	problems = append(problems, e.jobProblems(key, load.results(), s)...)
	e.rebuild(t)
	t.Logf("%s\n  Stripe: %d meter events sent, %d distinct identifiers; ERROR log lines: %s", f, sends, distinct, e.errorLines())
	if f.OK == 0 {
		problems = append(problems, "no request succeeded: the load did not run")
	}
	if len(problems) > 0 {
		var logs strings.Builder
		for _, role := range killRoles {
			for _, l := range killGrepLog(e.procs[role].logPath, 8, `"level":"ERROR"`, `"level":"WARN"`, "---- start") {
				fmt.Fprintf(&logs, "%s: %s\n", role, l)
			}
		}
		t.Errorf("kill -9 of %s broke %d guarantees:\n%s\nlogs (errors, warnings, starts):\n%s", scenario, len(problems), killSummary(problems, 20), logs.String())
	}
	return f
}

// jobProblems asks the API for every 202's job and compares its status
// with the event log's outcome.
func (e *killEnv) jobProblems(key string, res []killResult, s *killState) []string {
	var out []string
	for _, r := range res {
		if r.status != http.StatusAccepted || !r.complete {
			continue
		}
		code, job, err := killHTTP(context.Background(), http.MethodGet, e.base+"/v1/jobs/"+r.id, key, nil)
		if err != nil || code != http.StatusOK {
			out = append(out, fmt.Sprintf("GET /v1/jobs/%s: %d %v %v", r.id, code, job, err))
			continue
		}
		if c := s.completions[r.id]; c == nil || job["status"] != c.outcome() {
			out = append(out, fmt.Sprintf("GET /v1/jobs/%s: status %v, the log says %+v", r.id, job["status"], c))
		}
	}
	return out
}

// errorLines counts the ERROR lines in each role's log so far.
func (e *killEnv) errorLines() string {
	var parts []string
	for _, role := range killRoles {
		parts = append(parts, fmt.Sprintf("%s %d", role, killCountLog(e.procs[role].logPath, `"level":"ERROR"`)))
	}
	return strings.Join(parts, ", ")
}
