package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// ChildEnv is the environment variable that carries a child's spec (JSON):
// the process Config.ChildCommand starts finds it there and passes it to
// RunChild.
const ChildEnv = "TOLLGATE_BENCH_CHILD"

// The roles a child runs.
const (
	roleTollgate     = "tollgate"      // Tollgate with every role
	roleSlowTollgate = "tollgate-slow" // the same for the slow mode, measuring itself (slowchild.go)
	roleReference    = "reference"     // the naive reference proxy
	roleRebuild      = "rebuild"       // `tollgate project rebuild`, on "go"
)

// childSpec is what a child runs, and on what.
type childSpec struct {
	Role            string        `json:"role"`
	DatabaseURL     string        `json:"database_url"`
	UpstreamURL     string        `json:"upstream_url"`
	UpstreamLatency time.Duration `json:"upstream_latency_ns"`
	// Concurrency sizes the child's connection pool to the upstream.
	Concurrency  int      `json:"concurrency"`
	AdminToken   string   `json:"admin_token,omitempty"`
	KafkaBrokers []string `json:"kafka_brokers,omitempty"`
	LogLevel     string   `json:"log_level"`
	CPUProfile   string   `json:"cpu_profile,omitempty"`
	BlockProfile string   `json:"block_profile,omitempty"`
	// MaxDBConns is the slow mode's pool size (0: the server's default);
	// HeapProfile where its child writes a heap profile on slowHeap.
	MaxDBConns  int32  `json:"max_db_conns,omitempty"`
	HeapProfile string `json:"heap_profile,omitempty"`
	// GoMemLimit, when set, is the child's GOMEMLIMIT (Go's soft memory
	// limit, read by the runtime as the process starts, e.g. "550MiB").
	GoMemLimit string `json:"go_mem_limit,omitempty"`
}

// childMessage is a line a child writes on its stdout.
type childMessage struct {
	// Addr is where a gateway child serves HTTP, sent once it is ready.
	Addr string `json:"addr,omitempty"`
	// Ready is sent by the rebuild child once it waits for "go".
	Ready bool `json:"ready,omitempty"`
	// Rebuilt is the rebuild's figures, sent as soon as it is done;
	// Diffs then follows: the rebuild's differences with the live read models.
	Rebuilt *rebuilt `json:"rebuilt,omitempty"`
	Diffs   []string `json:"diffs,omitempty"`
	// Compared is sent with Diffs (which may be empty).
	Compared bool `json:"compared,omitempty"`
	// Started and Slow answer the slow mode's slowStart and slowStop.
	Started bool       `json:"started,omitempty"`
	Slow    *slowStats `json:"slow,omitempty"`
}

// rebuilt is what a rebuild reports.
type rebuilt struct {
	Events  int64         `json:"events"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// child is a running child process. Its stdin is its lifeline: closing
// it (or the bench's end, however it ends) stops the child.
type child struct {
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan []byte
	exited  chan struct{}
	err     error // cmd.Wait's, once exited is closed
	log     *tail
	once    sync.Once
	stopErr error
}

// startChild starts command with spec in its environment. Its log goes to
// stderr (when not nil) and its last lines are kept for errors.
func startChild(command []string, spec childSpec, stderr io.Writer) (*child, error) {
	if len(command) == 0 {
		return nil, errors.New("bench: Config.ChildCommand is empty")
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("bench: child spec: %w", err)
	}
	c := &child{name: spec.Role, lines: make(chan []byte, 4), exited: make(chan struct{}), log: &tail{}}
	c.cmd = exec.Command(command[0], command[1:]...)
	c.cmd.Env = append(os.Environ(), ChildEnv+"="+string(raw))
	if spec.GoMemLimit != "" {
		c.cmd.Env = append(c.cmd.Env, "GOMEMLIMIT="+spec.GoMemLimit)
	}
	c.cmd.Stderr = c.log
	if stderr != nil {
		c.cmd.Stderr = io.MultiWriter(c.log, stderr)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("bench: %s child: %w", c.name, err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: %s child: %w", c.name, err)
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s child: %w", c.name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			c.lines <- bytes.Clone(sc.Bytes())
		}
		close(c.lines)
		c.err = c.cmd.Wait() // after every read of stdout, as os/exec asks
		close(c.exited)
	}()
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// next waits up to timeout for the child's next message.
func (c *child) next(ctx context.Context, timeout time.Duration) (childMessage, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	var m childMessage
	select {
	case line, ok := <-c.lines:
		if !ok {
			<-c.exited
			return m, fmt.Errorf("bench: %s child ended (%v)%s", c.name, c.err, c.log.String())
		}
		if err := json.Unmarshal(line, &m); err != nil {
			return m, fmt.Errorf("bench: %s child wrote %q: %w", c.name, line, err)
		}
		return m, nil
	case <-t.C:
		return m, fmt.Errorf("bench: %s child said nothing for %s%s", c.name, timeout, c.log.String())
	case <-ctx.Done():
		return m, fmt.Errorf("bench: waiting for the %s child: %w", c.name, ctx.Err())
	}
}

// send writes a line to the child's stdin.
func (c *child) send(line string) error {
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		return fmt.Errorf("bench: %s child: %w", c.name, err)
	}
	return nil
}

// stop closes the child's stdin, which ends it gracefully, and kills it
// when it has not exited after grace. It reports how the child ended.
func (c *child) stop(grace time.Duration) error {
	c.once.Do(func() {
		go func() {
			for range c.lines { // nobody reads its messages from now on
			}
		}()
		_ = c.stdin.Close()
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-c.exited:
		case <-t.C:
			_ = c.cmd.Process.Kill()
			<-c.exited
			c.stopErr = fmt.Errorf("bench: %s child did not stop within %s: killed%s", c.name, grace, c.log.String())
			return
		}
		if c.err != nil {
			c.stopErr = fmt.Errorf("bench: %s child: %w%s", c.name, c.err, c.log.String())
		}
	})
	return c.stopErr
}

// tail keeps the last tailSize bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 4 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// String is the kept log as the end of an error message ("" when empty).
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(bytes.TrimSpace(t.buf)) == 0 {
		return ""
	}
	return "; its log ends:\n" + string(bytes.TrimRight(t.buf, "\n"))
}
