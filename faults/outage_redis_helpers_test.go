package faults

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// outageRedis is a private redis-server the test may pause, kill, restart
// (on the same port) and flush.
type outageRedis struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
}

func outageStartRedis(t *testing.T) *outageRedis {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &outageRedis{t: t, port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	t.Cleanup(func() { r.kill() })
	r.start()
	return r
}

func (r *outageRedis) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *outageRedis) start() {
	r.t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		r.t.Fatalf("redis-server is needed on PATH (apt-get install redis-server): %v", err)
	}
	r.cmd = exec.Command(bin, "--port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer rdb.Close()
	for i := 0; ; i++ {
		if err := rdb.Ping(context.Background()).Err(); err == nil {
			return
		} else if i > 200 {
			r.t.Fatalf("private redis-server did not answer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *outageRedis) signal(sig syscall.Signal) {
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatal(err)
	}
}

// kill kills the server (SIGKILL) and waits for it to exit.
func (r *outageRedis) kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT)
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

func (r *outageRedis) flushAll() {
	r.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		r.t.Fatal(err)
	}
}

// The signals that pause and resume a process.
const (
	sigStop = syscall.SIGSTOP
	sigCont = syscall.SIGCONT
)
