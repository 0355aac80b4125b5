package compose

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"
)

const composeFile = "../docker-compose.yml"

// roles maps each Tollgate role service to the tollgate subcommand it runs.
func roles() map[string]string {
	return map[string]string{
		"api":       "api",
		"worker":    "worker",
		"projector": "project",
		"relay":     "relay",
		"billing":   "bill",
	}
}

// loadProject loads docker-compose.yml as docker compose would, with only
// env as the interpolation environment (never the test process's), so the
// result does not depend on what happens to be set where the test runs.
func loadProject(t *testing.T, env ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{composeFile},
		cli.WithWorkingDirectory(".."),
		cli.WithEnv(env),
	)
	if err != nil {
		t.Fatalf("project options: %v", err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	return s
}

func env(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

// hostPort parses a URL and returns its host and port.
func hostPort(t *testing.T, what, raw string) (string, string, *url.URL) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%s %q: %v", what, raw, err)
	}
	return u.Hostname(), u.Port(), u
}

func TestServicesExist(t *testing.T) {
	t.Parallel()
	p := loadProject(t)
	want := []string{"postgres", "kafka", "redis", "prometheus", "stripe-mock", "migrate"}
	for r := range roles() {
		want = append(want, r)
	}
	for _, name := range want {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("no service %q", name)
		}
	}
	images := map[string]string{
		"postgres":    "postgres:16",
		"kafka":       "apache/kafka:3.8.0",
		"redis":       "redis:7",
		"stripe-mock": "stripe/stripe-mock:v0.203.0",
	}
	for name, img := range images {
		if got := service(t, p, name).Image; got != img {
			t.Errorf("%s image = %q, want %q", name, got, img)
		}
	}
	if img := service(t, p, "prometheus").Image; !strings.HasPrefix(img, "prom/prometheus") {
		t.Errorf("prometheus image = %q", img)
	}
}

func TestTollgateServicesWiring(t *testing.T) {
	t.Parallel()
	p := loadProject(t)
	all := roles()
	all["migrate"] = "migrate"
	for name, sub := range all {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)
			if !slices.Equal([]string(s.Command), []string{sub}) {
				t.Errorf("command = %q, want [%s]", s.Command, sub)
			}
			if len(s.Entrypoint) != 0 {
				t.Errorf("entrypoint %q overrides the image's /tollgate", s.Entrypoint)
			}
			if s.Build == nil {
				t.Fatal("not built from the Dockerfile")
			}
			if s.Build.Dockerfile != "Dockerfile" || filepath.Clean(s.Build.Context) != filepath.Clean(p.WorkingDir) {
				t.Errorf("build = %s in %s, want Dockerfile in %s", s.Build.Dockerfile, s.Build.Context, p.WorkingDir)
			}

			host, port, u := hostPort(t, "TOLLGATE_DATABASE_URL", env(s, "TOLLGATE_DATABASE_URL"))
			if u.Scheme != "postgres" || host != "postgres" || port != "5432" || u.Path != "/tollgate" {
				t.Errorf("TOLLGATE_DATABASE_URL = %q, want the postgres service's tollgate database", u)
			}
			if u.User.Username() != env(service(t, p, "postgres"), "POSTGRES_USER") {
				t.Errorf("database user %q is not the postgres service's POSTGRES_USER", u.User.Username())
			}
			if pw, _ := u.User.Password(); pw != env(service(t, p, "postgres"), "POSTGRES_PASSWORD") {
				t.Errorf("database password does not match the postgres service's")
			}
			if u.Query().Get("sslmode") != "disable" {
				t.Errorf("database URL sslmode = %q, want disable", u.Query().Get("sslmode"))
			}

			brokers := strings.Split(env(s, "TOLLGATE_KAFKA_BROKERS"), ",")
			if len(brokers) == 0 || brokers[0] == "" {
				t.Fatal("TOLLGATE_KAFKA_BROKERS is empty")
			}
			for _, b := range brokers {
				if h, port, err := net.SplitHostPort(b); err != nil || h != "kafka" || port != "9092" {
					t.Errorf("broker %q is not kafka:9092", b)
				}
			}

			if host, port, u := hostPort(t, "TOLLGATE_REDIS_URL", env(s, "TOLLGATE_REDIS_URL")); u.Scheme != "redis" || host != "redis" || port != "6379" {
				t.Errorf("TOLLGATE_REDIS_URL = %q, want the redis service", u)
			}
			if host, port, u := hostPort(t, "STRIPE_API_BASE", env(s, "STRIPE_API_BASE")); u.Scheme != "http" || host != "stripe-mock" || port != "12111" {
				t.Errorf("STRIPE_API_BASE = %q, want http://stripe-mock:12111", u)
			}
			if got := env(s, "STRIPE_SECRET_KEY"); got != "sk_test_123" {
				t.Errorf("STRIPE_SECRET_KEY = %q, want sk_test_123", got)
			}
			if got := env(s, "TOLLGATE_ADMIN_TOKEN"); got != "change-me-dev-admin-token" {
				t.Errorf("TOLLGATE_ADMIN_TOKEN = %q, want the default change-me-dev-admin-token", got)
			}

			cfg := env(s, "TOLLGATE_CONFIG")
			if cfg != "/etc/tollgate/config.yaml" {
				t.Errorf("TOLLGATE_CONFIG = %q", cfg)
			}
			var mounted bool
			for _, v := range s.Volumes {
				if v.Target != cfg {
					continue
				}
				mounted = true
				if v.Type != types.VolumeTypeBind || !v.ReadOnly {
					t.Errorf("config mount %+v: want a read-only bind mount", v)
				}
				if want := filepath.Join(p.WorkingDir, "config", "example.yaml"); v.Source != want {
					t.Errorf("config mount source = %q, want %q", v.Source, want)
				}
			}
			if !mounted {
				t.Errorf("nothing mounted at TOLLGATE_CONFIG %s", cfg)
			}
		})
	}
}

func TestRolesServeHTTPOn8080(t *testing.T) {
	t.Parallel()
	p := loadProject(t)
	for name := range roles() {
		if got := env(service(t, p, name), "TOLLGATE_HTTP_ADDR"); got != ":8080" {
			t.Errorf("%s TOLLGATE_HTTP_ADDR = %q, want :8080", name, got)
		}
	}
	api := service(t, p, "api")
	published := false
	for _, port := range api.Ports {
		if port.Target == 8080 && port.Published == "8080" {
			published = true
		}
	}
	if !published {
		t.Errorf("api does not publish 8080:8080: %+v", api.Ports)
	}
}

func TestDependencies(t *testing.T) {
	t.Parallel()
	p := loadProject(t)
	for name := range roles() {
		dep := service(t, p, name).DependsOn
		want := map[string]string{
			"postgres": types.ServiceConditionHealthy,
			"migrate":  types.ServiceConditionCompletedSuccessfully,
			"kafka":    types.ServiceConditionHealthy,
		}
		for on, cond := range want {
			d, ok := dep[on]
			if !ok {
				t.Errorf("%s does not depend on %s", name, on)
				continue
			}
			if d.Condition != cond {
				t.Errorf("%s depends on %s with %q, want %q", name, on, d.Condition, cond)
			}
		}
		if r := service(t, p, name).Restart; r == "" || r == types.RestartPolicyNo {
			t.Errorf("%s restart = %q: a long-running role should restart", name, r)
		}
	}

	migrate := service(t, p, "migrate")
	if migrate.Restart != types.RestartPolicyNo {
		t.Errorf("migrate restart = %q, want no", migrate.Restart)
	}
	if d, ok := migrate.DependsOn["postgres"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Errorf("migrate depends_on = %+v, want postgres healthy", migrate.DependsOn)
	}
	if _, ok := migrate.DependsOn["migrate"]; ok {
		t.Error("migrate depends on itself")
	}

	// A service_healthy condition needs a health check to wait for.
	for name, s := range p.Services {
		for on, d := range s.DependsOn {
			if d.Condition != types.ServiceConditionHealthy {
				continue
			}
			hc := service(t, p, on).HealthCheck
			if hc == nil || len(hc.Test) == 0 || hc.Disable {
				t.Errorf("%s waits for %s to be healthy, but %s has no health check", name, on, on)
			}
		}
	}
	if hc := service(t, p, "postgres").HealthCheck; hc == nil || !slices.Contains([]string(hc.Test), "pg_isready") {
		t.Errorf("postgres health check does not run pg_isready: %+v", hc)
	}
	hasVolume := false
	for _, v := range service(t, p, "postgres").Volumes {
		if v.Target == "/var/lib/postgresql/data" && v.Type == types.VolumeTypeVolume {
			hasVolume = true
		}
	}
	if !hasVolume {
		t.Error("postgres data is not on a named volume")
	}
}

func TestKafkaIsSingleNodeKRaft(t *testing.T) {
	t.Parallel()
	p := loadProject(t)
	for name := range p.Services {
		if strings.Contains(name, "zookeeper") {
			t.Errorf("service %q: KRaft needs no ZooKeeper", name)
		}
	}
	k := service(t, p, "kafka")
	for key := range k.Environment {
		if strings.Contains(key, "ZOOKEEPER") {
			t.Errorf("kafka env %s: KRaft needs no ZooKeeper", key)
		}
	}
	if got := env(k, "KAFKA_PROCESS_ROLES"); got != "broker,controller" {
		t.Errorf("KAFKA_PROCESS_ROLES = %q, want broker,controller", got)
	}
	node := env(k, "KAFKA_NODE_ID")
	if _, err := strconv.Atoi(node); err != nil {
		t.Fatalf("KAFKA_NODE_ID = %q: %v", node, err)
	}
	ctrl := env(k, "KAFKA_CONTROLLER_LISTENER_NAMES")
	if ctrl == "" {
		t.Fatal("KAFKA_CONTROLLER_LISTENER_NAMES is empty")
	}
	// The one voter is this node, on its controller listener.
	listeners := listenerPorts(t, env(k, "KAFKA_LISTENERS"))
	voter := node + "@kafka:" + listeners[ctrl]
	if got := env(k, "KAFKA_CONTROLLER_QUORUM_VOTERS"); got != voter {
		t.Errorf("KAFKA_CONTROLLER_QUORUM_VOTERS = %q, want %q", got, voter)
	}
	if !slices.Contains(strings.Split(env(k, "KAFKA_ADVERTISED_LISTENERS"), ","), "PLAINTEXT://kafka:9092") {
		t.Errorf("KAFKA_ADVERTISED_LISTENERS = %q does not advertise kafka:9092 to the roles", env(k, "KAFKA_ADVERTISED_LISTENERS"))
	}
	if listeners["PLAINTEXT"] != "9092" {
		t.Errorf("no PLAINTEXT listener on 9092: %v", listeners)
	}
	protocols := env(k, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
	for name := range listeners {
		if !strings.Contains(protocols, name+":") {
			t.Errorf("listener %s has no security protocol in %q", name, protocols)
		}
	}
	for _, key := range []string{
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
	} {
		if got := env(k, key); got != "1" {
			t.Errorf("%s = %q, want 1 on a single node", key, got)
		}
	}
}

// listenerPorts maps "NAME://host:port,..." to name → port.
func listenerPorts(t *testing.T, s string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(s, ",") {
		name, addr, ok := strings.Cut(l, "://")
		if !ok {
			t.Fatalf("listener %q", l)
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("listener %q: %v", l, err)
		}
		out[name] = port
	}
	return out
}

func TestPrometheusScrapesEveryRole(t *testing.T) {
	t.Parallel()
	p := loadProject(t)
	prom := service(t, p, "prometheus")
	var source string
	for _, v := range prom.Volumes {
		if v.Target == "/etc/prometheus/prometheus.yml" {
			source = v.Source
		}
	}
	if want := filepath.Join(p.WorkingDir, "deploy", "prometheus.yml"); source != want {
		t.Fatalf("prometheus config mounted from %q, want %q", source, want)
	}
	raw, err := os.ReadFile(source)
	if err != nil {
		t.Fatalf("prometheus config: %v", err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("parse %s: %v", source, err)
	}
	targets := map[string]string{} // target → its job's metrics path
	for _, sc := range cfg.ScrapeConfigs {
		path := sc.MetricsPath
		if path == "" {
			path = "/metrics"
		}
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				targets[tg] = path
			}
		}
	}
	for name := range roles() {
		_, port, err := net.SplitHostPort(env(service(t, p, name), "TOLLGATE_HTTP_ADDR"))
		if err != nil {
			t.Fatalf("%s TOLLGATE_HTTP_ADDR: %v", name, err)
		}
		tg := net.JoinHostPort(name, port)
		path, ok := targets[tg]
		if !ok {
			t.Errorf("prometheus does not scrape %s", tg)
		} else if path != "/metrics" {
			t.Errorf("%s scraped at %s, want /metrics", tg, path)
		}
	}
	// Every target is something that exists: a compose service or Prometheus itself.
	for tg := range targets {
		host, _, err := net.SplitHostPort(tg)
		if err != nil {
			t.Errorf("target %q: %v", tg, err)
			continue
		}
		if _, ok := p.Services[host]; !ok && host != "localhost" {
			t.Errorf("target %q names no compose service", tg)
		}
	}
}

// TestEveryVariableHasDefault makes `docker compose up` work with nothing
// set: each ${VAR} occurrence carries its own default.
func TestEveryVariableHasDefault(t *testing.T) {
	t.Parallel()
	opts, err := cli.NewProjectOptions([]string{composeFile},
		cli.WithWorkingDirectory(".."),
		cli.WithInterpolation(false),
	)
	if err != nil {
		t.Fatal(err)
	}
	model, err := opts.LoadModel(context.Background())
	if err != nil {
		t.Fatalf("load model: %v", err)
	}
	seen := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case string:
			// One string at a time: ExtractVariables merges occurrences of
			// a name, which would hide a bare ${VAR} beside a defaulted one.
			for name, vr := range template.ExtractVariables(map[string]any{"v": v}, nil) {
				seen++
				if vr.DefaultValue == "" || vr.Required {
					t.Errorf("%s: ${%s} has no default", path, name)
				}
			}
		case map[string]any:
			for k, e := range v {
				walk(path+"."+k, e)
			}
		case []any:
			for i, e := range v {
				walk(path+"["+strconv.Itoa(i)+"]", e)
			}
		}
	}
	walk("", model)
	if seen == 0 {
		t.Error("found no variables: the walk is broken (TOLLGATE_ADMIN_TOKEN is one)")
	}
}

func TestEnvironmentOverridesDefaults(t *testing.T) {
	t.Parallel()
	p := loadProject(t, "TOLLGATE_ADMIN_TOKEN=s3cret", "TOLLGATE_API_PORT=18080", "OPENAI_API_KEY=sk-openai")
	api := service(t, p, "api")
	if got := env(api, "TOLLGATE_ADMIN_TOKEN"); got != "s3cret" {
		t.Errorf("TOLLGATE_ADMIN_TOKEN = %q, want s3cret", got)
	}
	if got := env(api, "OPENAI_API_KEY"); got != "sk-openai" {
		t.Errorf("OPENAI_API_KEY = %q, want it passed through", got)
	}
	if len(api.Ports) != 1 || api.Ports[0].Published != "18080" || api.Ports[0].Target != 8080 {
		t.Errorf("api ports = %+v, want 18080:8080", api.Ports)
	}
	// Without it, the key is absent rather than empty.
	if v, ok := service(t, loadProject(t), "api").Environment["OPENAI_API_KEY"]; ok && v != nil {
		t.Errorf("OPENAI_API_KEY = %q with nothing set, want unset", *v)
	}
}

func TestDockerfileBuildsStaticBinary(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	for _, want := range []string{
		"FROM golang:1.26 AS build",
		"CGO_ENABLED=0 go build",
		"./cmd/tollgate",
		"FROM gcr.io/distroless/static",
		"COPY --from=build /out/tollgate /tollgate",
		`ENTRYPOINT ["/tollgate"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
