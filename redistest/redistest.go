// Package redistest gives tests a Redis: a key prefix of the test's own
// on the shared server (Shared), or a private redis-server process for
// tests that pause, kill, restart or flush Redis (Start), so that the
// shared server at 127.0.0.1:6379 is never paused, killed or flushed. A
// Redis that cannot be reached, or a missing redis-server, fails the test
// with how to start or install it; it never skips.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SharedAddr is the shared test server's address: 127.0.0.1:6379, or
// TOLLGATE_TEST_REDIS_ADDR.
func SharedAddr() string {
	if a := os.Getenv("TOLLGATE_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// HowToStartShared is appended when the shared server does not answer.
const HowToStartShared = `Redis is needed at 127.0.0.1:6379 (or TOLLGATE_TEST_REDIS_ADDR); start it with:
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no`

// Shared returns a client of the shared server with poolSize connections
// and a key prefix of the test's own ("tollgate-test-<random>:"); the
// prefix's keys are deleted and the client closed when the test ends.
func Shared(t testing.TB, poolSize int) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: SharedAddr(), PoolSize: poolSize, DialTimeout: 2 * time.Second})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		_ = rdb.Close()
		t.Fatalf("redis: %v\n%s", err, HowToStartShared)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	prefix := "tollgate-test-" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		_ = DeletePrefix(context.Background(), rdb, prefix)
		_ = rdb.Close()
	})
	return rdb, prefix
}

// DeletePrefix deletes the keys under prefix, as a flush of that test's
// own Redis would.
func DeletePrefix(ctx context.Context, rdb *redis.Client, prefix string) error {
	keys, err := rdb.Keys(ctx, prefix+"*").Result()
	if err != nil {
		return fmt.Errorf("keys %s*: %w", prefix, err)
	}
	if len(keys) == 0 {
		return nil
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		return fmt.Errorf("del %s*: %w", prefix, err)
	}
	return nil
}

// Server is a redis-server of one test's own on a free loopback port,
// keeping nothing on disk. It is killed when the test ends.
type Server struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

// Start starts a private redis-server and waits until it answers.
func Start(t testing.TB) *Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	t.Cleanup(s.Kill)
	s.Restart()
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Restart starts the server again on its port after Kill (empty: it keeps
// nothing on disk), and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatalf("redis-server is needed on PATH (apt-get install -y redis-server): %v", err)
	}
	s.cmd = exec.Command(bin, "--port", fmt.Sprint(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer rdb.Close()
	for i := 0; ; i++ {
		err := rdb.Ping(context.Background()).Err()
		if err == nil {
			return
		}
		if i > 250 {
			s.t.Fatalf("private redis-server did not answer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pause stops the server with SIGSTOP, as a hung host would: connections
// stay open and nothing answers.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// Kill kills the server (SIGKILL, paused or not) and waits for it to exit.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// FlushAll empties the server, as an operator's FLUSHALL would.
func (s *Server) FlushAll() {
	s.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		s.t.Fatal(err)
	}
}
