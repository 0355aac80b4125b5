// Package stripetest runs Stripe's official API mock, stripe-mock, for
// tests, and records what reaches it.
//
// stripe-mock is a real HTTP server that validates requests against Stripe's
// OpenAPI spec and answers with fixtures. It keeps no state: it does not
// remember meter event identifiers, so tests that need Stripe's stateful
// answers (a duplicate identifier, a rate limit) inject them with
// Recorder.Intercept.
package stripetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"go/build"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the stripe-mock release the tests are written against.
const Version = "v0.203.0"

// HowToInstall is the remedy printed when stripe-mock is missing.
const HowToInstall = "stripe-mock is needed on PATH or in $(go env GOPATH)/bin; install it: go install github.com/stripe/stripe-mock@" + Version

// TestSecretKey is a secret key stripe-mock accepts.
const TestSecretKey = "sk_test_tollgate"

// startTimeout bounds how long stripe-mock may take to start listening.
const startTimeout = 30 * time.Second

// listenPrefix is what stripe-mock prints once its HTTP listener is bound.
const listenPrefix = "Listening for HTTP at address: "

// Binary returns the path of the stripe-mock executable, from PATH or from
// the GOPATH's bin directories.
func Binary() (string, error) {
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	for _, dir := range filepath.SplitList(build.Default.GOPATH) {
		p := filepath.Join(dir, "bin", "stripe-mock")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("stripe-mock not found")
}

// Start runs a stripe-mock of its own for the test and returns its base
// URL ("http://127.0.0.1:<port>"). It listens on loopback only, on ports
// the kernel picks (-http-addr 127.0.0.1:0; HTTPS, which stripe-mock would
// otherwise open on the fixed port 12112, is moved to another free port
// with -https-addr 127.0.0.1:0). The process is killed in t.Cleanup. When
// the binary is missing the test fails with how to install it. Tests of a
// package share one stripe-mock with Shared instead.
func Start(t testing.TB) (baseURL string) {
	t.Helper()
	baseURL, stop, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return baseURL
}

// shared is the stripe-mock of a package's test run (see Shared).
var shared struct {
	once sync.Once
	url  string
	stop func()
	err  error
}

// Shared returns the base URL of the package's stripe-mock, starting it
// at the first call: stripe-mock keeps no state, so every test of a
// package can talk to one (each through its own Recorder). The package's
// TestMain runs its tests with Main, which stops it at the end. When the
// binary is missing the test fails with how to install it.
func Shared(t testing.TB) (baseURL string) {
	t.Helper()
	shared.once.Do(func() { shared.url, shared.stop, shared.err = start() })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.url
}

// Main runs a package's tests (m.Run) and then stops the stripe-mock
// Shared started, if any; it returns the exit code. Use it in TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(stripetest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if shared.stop != nil {
		shared.stop()
	}
	return code
}

// start runs a stripe-mock and returns its base URL and how to stop it.
func start() (baseURL string, stop func(), err error) {
	bin, err := Binary()
	if err != nil {
		return "", nil, fmt.Errorf("%w\n%s", err, HowToInstall)
	}
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, fmt.Errorf("stripe-mock: stdout: %w", err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start %s: %w\n%s", bin, err, HowToInstall)
	}
	exited := make(chan struct{})
	stop = func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	addrc := make(chan string, 1)
	var output lockedBuffer
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			output.WriteString(line + "\n")
			if addr, ok := strings.CutPrefix(line, listenPrefix); ok && !sent {
				addrc <- strings.TrimSpace(addr)
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()

	var addr string
	select {
	case addr = <-addrc:
	case <-exited:
		return "", nil, fmt.Errorf("stripe-mock exited before listening:\n%s%s", output.String(), stderr.String())
	case <-time.After(startTimeout):
		stop()
		return "", nil, fmt.Errorf("stripe-mock did not listen within %s:\n%s%s", startTimeout, output.String(), stderr.String())
	}
	baseURL = "http://" + addr
	if err := waitReady(baseURL); err != nil {
		stop()
		return "", nil, fmt.Errorf("stripe-mock at %s: %w\n%s%s", baseURL, err, output.String(), stderr.String())
	}
	return baseURL, stop, nil
}

// waitReady polls stripe-mock until it answers an authenticated request.
func waitReady(baseURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/v1/customers", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+TestSecretKey)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v1/customers: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lockedBuffer is a strings.Builder safe for one writer and many readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
