package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The runnable examples in _examples/ (which ./... skips, being under a
// folder whose name starts with "_"), built and run in the order the
// README gives, as separate processes, against one real Tollgate: the
// operator sets up an account and key, the OpenAI SDK client uses it, an
// analyst follows the store while an async job runs, and then reads it all
// again, from the store and from `tollgate events export`.
func TestExamples(t *testing.T) {
	t.Parallel()
	built := buildExamples(t, "operator", "openai-client", "analyst", "async-job")
	e := start(t, false) // while they build
	bin := built()
	vars := []string{
		"TOLLGATE_URL=" + e.base,
		"TOLLGATE_ADMIN_TOKEN=" + e.admin,
		"TOLLGATE_DATABASE_URL=" + e.srv.Pool.Config().ConnString(),
	}

	// 1. operator: account, key, plan and limits; stdout is shell exports.
	out, stderr := runExample(t, bin, "operator", vars)
	exports := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			t.Fatalf("operator: stdout line %q is not an export", line)
		}
		exports[k] = v
	}
	acc, key := exports["TOLLGATE_ACCOUNT_ID"], exports["TOLLGATE_API_KEY"]
	if !strings.HasPrefix(acc, "acc_") || !strings.HasPrefix(key, "tg_") || !strings.HasPrefix(exports["TOLLGATE_KEY_ID"], "key_") {
		t.Fatalf("operator exports %v", exports)
	}
	if !strings.Contains(stderr, "now on plan pro, 100 requests/min, $5.00 a day") || !strings.Contains(stderr, "quota: day:") {
		t.Fatalf("operator stderr:\n%s", stderr)
	}
	if code, got, _ := e.do("GET", "/v1/admin/accounts/"+acc, e.admin, nil); code != 200 || got["plan"] != "pro" {
		t.Fatalf("account after operator: %d %v", code, got)
	}
	vars = append(vars, "TOLLGATE_API_KEY="+key)

	// 2. openai-client: a completion, a streamed one, an error.
	out, _ = runExample(t, bin, "openai-client", vars)
	chat := match(t, out, `(?m)^chat +(chatcmpl-\S+) "Hello, Tollgate!" prompt=\d+ completion=\d+ total=\d+ tokens$`)
	streamed := match(t, out, `(?m)^stream +(chatcmpl-\S+) "Hello, Tollgate!" prompt=\d+ completion=\d+ total=[1-9]\d* tokens in \d+ chunks$`)
	match(t, out, `(?m)^(error +404 model_not_found)$`)
	match(t, out, `(?m)^models .*\b(echo)\b`)

	// 3. analyst following the store while async-job queues a completion:
	// it must see all three outcomes, the last committed after it started.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var follow bytes.Buffer
	follower := exampleCommand(ctx, bin, "analyst", vars, "-follow", "-account", acc, "-type", "completion.succeeded", "-count", "3", "-timeout", "60s")
	follower.Stdout, follower.Stderr = &follow, &follow
	if err := follower.Start(); err != nil {
		t.Fatal(err)
	}
	out, _ = runExample(t, bin, "async-job", vars)
	async := match(t, out, `(?m)^queued +(chatcmpl-\S+) queued at /v1/jobs/chatcmpl-\S+ \(respond-async\)$`)
	match(t, out, `(?m)^(done +`+regexp.QuoteMeta(async)+` succeeded "Hello later, Tollgate!") total=\d+ tokens$`)
	match(t, out, `(?m)^event .* (completion\.succeeded) +by `)
	if err := follower.Wait(); err != nil {
		t.Fatalf("analyst -follow: %v\n%s", err, follow.String())
	}
	for _, id := range []string{chat, streamed, async} {
		match(t, follow.String(), `(?m)^ *\d+ \S+ (completion\.succeeded) +completion-`+regexp.QuoteMeta(id)+` +echo via echo: `)
	}
	match(t, follow.String(), `(?m)^(model echo: 3 succeeded, 0 failed), \d+ prompt \+ \d+ completion tokens, \$\d+\.\d+$`)

	// 4. analyst catching up on the account's whole history.
	analystReports(ctx, t, bin, vars, acc)
}

// analystReports runs the analyst over the account's whole history, from
// the store and from `tollgate events export`, and checks that both say the
// same.
func analystReports(ctx context.Context, t *testing.T, bin string, vars []string, acc string) {
	t.Helper()
	out, _ := runExample(t, bin, "analyst", vars, "-account", acc)
	for _, want := range []string{`account\.created +account-` + acc + ` +account "Acme" on plan free`,
		`apikey\.issued`, `account\.plan_changed +account-` + acc + ` +plan free -> pro`, `account\.limits_changed +account-` + acc + ` +limits 100 requests/min, \$5\.0+ a day`,
		`apikey\.limits_changed +apikey-key_\S+ +limits 20000 tokens/min`, `completion\.requested`, `quota\.settled`} {
		match(t, out, `(?m)^ *\d+ \S+ (`+want+`)`)
	}
	summary := match(t, out, `(?m)^(\d+ events\nmodel echo: 3 succeeded, 0 failed, .*)$`)
	export := exampleCommand(ctx, filepath.Join(bin, "tollgate"), "", vars, "events", "export", "--account", acc)
	jsonl, err := export.Output()
	if err != nil {
		t.Fatalf("tollgate events export: %v", err)
	}
	fromExport := exampleCommand(ctx, bin, "analyst", vars, "-in", "-")
	fromExport.Stdin = bytes.NewReader(jsonl)
	got, err := fromExport.CombinedOutput()
	if err != nil {
		t.Fatalf("analyst -in -: %v\n%s", err, got)
	}
	if s := match(t, string(got), `(?m)^(\d+ events\nmodel echo: .*)$`); s != summary {
		t.Fatalf("analyst on the export says\n%s\non the store\n%s", s, summary)
	}
}

// buildExamples builds the named examples and the tollgate binary into a
// temporary folder and vets the examples (CI's go vet ./... skips them),
// with the go command that runs the test. It returns at once; the function
// it returns waits for the build and returns the folder.
func buildExamples(t *testing.T, names ...string) func() string {
	t.Helper()
	dir := t.TempDir()
	pkgs := []string{"./cmd/tollgate"}
	for _, n := range names {
		pkgs = append(pkgs, "./_examples/"+n)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for _, args := range [][]string{append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...), append([]string{"vet"}, pkgs[1:]...)} {
			cmd := exec.CommandContext(ctx, goCommand(), args...)
			cmd.Dir = ".." // the module's root
			if out, err := cmd.CombinedOutput(); err != nil {
				done <- fmt.Errorf("go %v: %w\n%s", args, err, out)
				return
			}
		}
		done <- nil
	}()
	return func() string {
		t.Helper()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return dir
	}
}

// goCommand is the go command of the toolchain running the test.
func goCommand() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		return p
	}
	return "go"
}

// exampleCommand is the example name from bin (or the program bin when
// name is empty) with args and the variables set, killed when ctx ends.
func exampleCommand(ctx context.Context, bin, name string, vars []string, args ...string) *exec.Cmd {
	path := bin
	if name != "" {
		path = filepath.Join(bin, name)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), vars...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// runExample runs an example to its end within a minute and returns its
// stdout and stderr; a non-zero exit fails the test.
func runExample(t *testing.T, bin, name string, vars []string, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exampleCommand(ctx, bin, name, vars, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s\nstderr:\n%s", name, args, err, stdout.String(), stderr.String())
	}
	logLines(t, name, stdout.String()+stderr.String())
	return stdout.String(), stderr.String()
}

func logLines(t *testing.T, name, s string) {
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		t.Logf("%s: %s", name, sc.Text())
	}
}

// match returns pattern's first group in s, failing the test without one.
func match(t *testing.T, s, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %s in:\n%s", pattern, s)
	}
	return m[1]
}
