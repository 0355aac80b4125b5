package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/llmtest"
)

// The fake provider's usage: every answer costs killPrompt + killCompletionTokens
// tokens, streamed or not.
const (
	killPrompt           = 12
	killCompletionTokens = 5
)

// killStreamWords are what the fake provider streams, one chunk each.
var killStreamWords = []string{"Kill", " minus", " nine", " under", " load"}

// killBinary is the tollgate binary the package's tests run, built once
// per package run (killBuildBinary) and removed by TestMain.
var killBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// killBuildBinary builds the real tollgate binary, once for all the tests
// of the package run.
func killBuildBinary(t *testing.T) string {
	t.Helper()
	killBinary.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		dir, err := os.MkdirTemp("", "tollgate-faults-")
		if err != nil {
			killBinary.err = err
			return
		}
		killBinary.dir, killBinary.path = dir, filepath.Join(dir, "tollgate")
		cmd := exec.Command("go", "build", "-o", killBinary.path, "./cmd/tollgate")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			killBinary.err = fmt.Errorf("go build ./cmd/tollgate: %w\n%s", err, out)
		}
	})
	if killBinary.err != nil {
		t.Fatal(killBinary.err)
	}
	return killBinary.path
}

// killRemoveBinary removes the binary killBuildBinary built, if any.
func killRemoveBinary() {
	if killBinary.dir != "" {
		_ = os.RemoveAll(killBinary.dir)
	}
}

// killUpstream is an OpenAI-compatible provider speaking the real wire
// format (a chat.completion, or SSE chunks then a usage chunk and [DONE]),
// slow enough that kills catch requests in flight.
func killUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&body) != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"message":"bad request","type":"invalid_request_error","code":null}}`)
			return
		}
		// A prompt asking for a slow answer outlives the lease (jobs.lease
		// 3s): only lease renewals keep its claim.
		slow := strings.Contains(fmt.Sprint(body["messages"]), killSlowWord)
		if body["stream"] == true {
			killServeStream(w, r, body, slow)
			return
		}
		delay := time.Duration(50+rand.IntN(250)) * time.Millisecond
		if slow {
			delay = killSlowFor
		}
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-upstream","object":"chat.completion","created":%d,"model":%q,
			"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from upstream","refusal":null},"logprobs":null,"finish_reason":"stop"}],
			"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d},"system_fingerprint":"fp_kill"}`,
			time.Now().Unix(), body["model"], killPrompt, killCompletionTokens, killPrompt+killCompletionTokens)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// killSlowWord in a prompt makes the fake provider take killSlowFor.
const (
	killSlowWord = "slowly"
	killSlowFor  = 4 * time.Second
)

func killServeStream(w http.ResponseWriter, r *http.Request, body map[string]any, slow bool) {
	gap := 40 * time.Millisecond
	if slow {
		gap = killSlowFor / time.Duration(len(killStreamWords))
	}
	llmtest.Stream{Words: killStreamWords, Gap: func() time.Duration { return gap },
		PromptTokens: killPrompt, CompletionTokens: killCompletionTokens}.Write(w, r, body)
}

// killConfigYAML routes model m to the fake provider, with short leases,
// reaper interval and billing windows so that abandoned claims and due
// records resolve within seconds. Expired claims of queued jobs are
// retried, so a killed worker's jobs still end.
const killConfigYAML = `
providers:
  - name: up
    kind: openai
    base_url: %s/v1
    timeout: 10s
models:
  - name: m
    deployments: [{provider: up, model: up-model}]
    price: {input_per_million: "2.50", output_per_million: "10.00"}
plans:
  - name: free
  - name: pro
    stripe_price: price_kill_pro
    requests_per_minute: 1000000
    tokens_per_minute: 1000000000
billing:
  window: 2s
  report_delay: 1s
  report_interval: 200ms
  dunning_interval: 1s
  checkout_success_url: https://app.example/ok
  checkout_cancel_url: https://app.example/cancel
  portal_return_url: https://app.example/settings
routing:
  max_attempts: 1
jobs:
  lease: 3s
  reaper_interval: 200ms
  on_expired_lease: retry
  max_retries: 3
`

// killFreeAddr returns a loopback address nothing listens on right now.
func killFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// killProc is one role of Tollgate running as its own OS process; it can
// be SIGKILLed and started again (on the same address for the API).
type killProc struct {
	t        *testing.T
	bin      string
	role     string
	env      []string
	addr     string
	fixed    bool // keep addr across restarts (the API's clients need it)
	logPath  string
	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	restarts int
}

func (p *killProc) start() {
	p.t.Helper()
	if !p.fixed || p.addr == "" {
		p.addr = killFreeAddr(p.t)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(logf, "---- start %d of %s at %s\n", p.restarts+1, p.role, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.role)
	cmd.Env = append(append([]string{}, p.env...), "TOLLGATE_HTTP_ADDR="+p.addr,
		fmt.Sprintf("TOLLGATE_INSTANCE_ID=%s-%d", p.role, p.restarts+1))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		p.t.Fatalf("start tollgate %s: %v", p.role, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.restarts++
	p.mu.Unlock()
	p.waitHealthy(exited)
}

// waitHealthy waits for the role's /healthz (every role serves it).
func (p *killProc) waitHealthy(exited chan struct{}) {
	p.t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			p.t.Fatalf("tollgate %s exited while starting:\n%s", p.role, killTail(p.logPath, 40))
		default:
		}
		resp, err := client.Get("http://" + p.addr + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("tollgate %s not healthy at %s within 30s:\n%s", p.role, p.addr, killTail(p.logPath, 40))
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *killProc) kill() {
	p.t.Helper()
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill -9 tollgate %s: %v\n%s", p.role, err, killTail(p.logPath, 40))
	}
	<-exited
}

// alive fails the test when the process has exited on its own.
func (p *killProc) alive() error {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	select {
	case <-exited:
		return fmt.Errorf("tollgate %s exited on its own:\n%s", p.role, killTail(p.logPath, 40))
	default:
		return nil
	}
}

// stop ends the process with SIGTERM (SIGKILL after 10s).
func (p *killProc) stop() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// killTail returns the last n lines of a log file.
func killTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// killGrepLog returns the last n lines of a log file that contain one of subs.
func killGrepLog(path string, n int, subs ...string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, s := range subs {
			if strings.Contains(line, s) {
				out = append(out, line)
				break
			}
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// killCountLog counts the log lines of every role's log containing s.
func killCountLog(path, s string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// killHTTP sends a JSON request and decodes a JSON answer.
func killHTTP(ctx context.Context, method, url, token string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("decode %s: %w", raw, err)
		}
	}
	return resp.StatusCode, out, nil
}

// killGate sits between the billing reporter and Stripe (the recorder)
// and holds each meter event for hold twice: before it goes to Stripe
// (signalled on sending) and after Stripe accepted it (on accepted), so
// the test can SIGKILL the reporter where it hurts: with a record closed
// and not sent, or sent and accepted with no usage_reported in the log.
type killGate struct {
	sending, accepted chan struct{}
}

func killStripeGate(t *testing.T, target string, hold time.Duration) (string, *killGate) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	g := &killGate{sending: make(chan struct{}, 1), accepted: make(chan struct{}, 1)}
	signal := func(c chan struct{}) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	isMeterEvent := func(r *http.Request) bool { return r.URL.Path == "/v1/billing/meter_events" }
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if isMeterEvent(resp.Request) && resp.StatusCode == http.StatusOK {
			signal(g.accepted)
			time.Sleep(hold)
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isMeterEvent(r) {
			signal(g.sending)
			time.Sleep(hold)
			if r.Context().Err() != nil {
				return // the reporter died while its meter event was held
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, g
}

// wait waits for the next signal on c (earlier ones are dropped).
func (g *killGate) wait(c chan struct{}, limit time.Duration) bool {
	for {
		select {
		case <-c:
			continue
		default:
		}
		break
	}
	select {
	case <-c:
		return true
	case <-time.After(limit):
		return false
	}
}
