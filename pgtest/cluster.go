package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ClusterOptions configures a private PostgreSQL cluster.
type ClusterOptions struct {
	// NextXID, when not zero, is set with pg_resetwal -x before the first
	// start, so the cluster's transaction ids begin far along, as on a
	// store that has lived a while (for example 999_990_000, a little
	// below a power of ten).
	NextXID uint32
	// Epoch, when not zero, is set with pg_resetwal -e: the high 32 bits
	// of every xid8.
	Epoch uint32
	// Settings are extra postgresql.conf lines ("max_connections = 50").
	Settings []string
}

// Cluster is a PostgreSQL server of one test's own, which the test may
// stop, kill, pause and restart without disturbing the shared server.
// It listens on 127.0.0.1 on a free port, trusts local connections, runs
// as the postgres user and is removed when the test ends.
type Cluster struct {
	t       testing.TB
	dir     string
	port    int
	bindir  string
	logFile string
}

// StartCluster initialises a private cluster and starts it. The test
// fails (never skips) when the PostgreSQL binaries or the postgres user
// are missing, saying what to install.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	bindir, err := binDir()
	if err != nil {
		t.Fatalf("private PostgreSQL cluster: %v (install the server: apt-get install -y postgresql)", err)
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("private PostgreSQL cluster: no postgres user to run it as: %v", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	root, err := os.MkdirTemp("", "tollgate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(root, uid, gid); err != nil {
		t.Fatalf("private PostgreSQL cluster: chown %s: %v", root, err)
	}
	c := &Cluster{t: t, dir: filepath.Join(root, "data"), port: freePort(t), bindir: bindir, logFile: filepath.Join(root, "server.log")}
	t.Cleanup(func() {
		c.run("pg_ctl", "-D", c.dir, "-m", "immediate", "-w", "stop")
		_ = os.RemoveAll(root)
	})
	if out, err := c.run("initdb", "-D", c.dir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	conf := append([]string{
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("port = %d", c.port),
		fmt.Sprintf("unix_socket_directories = '%s'", root),
		"fsync = off", "synchronous_commit = off", "full_page_writes = off",
		"autovacuum = off", "max_connections = 100", "shared_buffers = 32MB",
	}, opts.Settings...)
	f, err := os.OpenFile(filepath.Join(c.dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("\n" + strings.Join(conf, "\n") + "\n")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if opts.NextXID != 0 || opts.Epoch != 0 {
		c.resetWAL(opts)
	}
	c.Start()
	return c
}

// resetWAL moves the cluster's next transaction id (and epoch) forward.
// pg_xact must hold the page of the new id, so a zero-filled segment is
// created for it, as pg_resetwal's documentation says.
func (c *Cluster) resetWAL(opts ClusterOptions) {
	c.t.Helper()
	args := []string{"-f", "-D", c.dir}
	if opts.NextXID != 0 {
		args = append(args, "-x", strconv.FormatUint(uint64(opts.NextXID), 10))
		seg := filepath.Join(c.dir, "pg_xact", fmt.Sprintf("%04X", opts.NextXID/(1<<20)))
		if err := os.WriteFile(seg, make([]byte, 256*1024), 0o600); err != nil {
			c.t.Fatal(err)
		}
		c.chownPostgres(seg)
	}
	if opts.Epoch != 0 {
		args = append(args, "-e", strconv.FormatUint(uint64(opts.Epoch), 10))
	}
	if out, err := c.run("pg_resetwal", args...); err != nil {
		c.t.Fatalf("pg_resetwal: %v\n%s", err, out)
	}
}

func (c *Cluster) chownPostgres(path string) {
	pg, err := user.Lookup("postgres")
	if err != nil {
		c.t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		c.t.Fatal(err)
	}
}

// Port is the TCP port the cluster listens on.
func (c *Cluster) Port() int { return c.port }

// URL returns the URL of database name on the cluster ("postgres" is the
// one initdb made).
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, name)
}

// CreateDatabase creates a database on the cluster and returns its URL.
func (c *Cluster) CreateDatabase(name string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		c.t.Fatalf("connect to private cluster: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		c.t.Fatalf("create database %s: %v", name, err)
	}
	return c.URL(name)
}

// Start starts the (stopped) cluster and waits until it accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	if out, err := c.run("pg_ctl", "-D", c.dir, "-l", c.logFile, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(c.logFile)
		c.t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// Stop stops the cluster: mode is "fast" (clean) or "immediate" (like a crash).
func (c *Cluster) Stop(mode string) {
	c.t.Helper()
	if out, err := c.run("pg_ctl", "-D", c.dir, "-m", mode, "-w", "-t", "60", "stop"); err != nil {
		c.t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// Pause stops the server's processes with SIGSTOP, as a hung host would:
// connections stay open and nothing answers. Resume undoes it.
func (c *Cluster) Pause() { c.signalAll(syscall.SIGSTOP) }

// Resume continues a paused server.
func (c *Cluster) Resume() { c.signalAll(syscall.SIGCONT) }

// signalAll signals the postmaster and every backend: a stopped
// postmaster alone would still let open connections answer.
func (c *Cluster) signalAll(sig syscall.Signal) {
	c.t.Helper()
	raw, err := os.ReadFile(filepath.Join(c.dir, "postmaster.pid"))
	if err != nil {
		c.t.Fatalf("postmaster.pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	if err != nil {
		c.t.Fatalf("postmaster.pid: %v", err)
	}
	pids := []int{pid}
	out, _ := exec.Command("pgrep", "-P", strconv.Itoa(pid)).Output()
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
}

// run runs one of the server's binaries as the postgres user.
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"-u", "postgres", "--", filepath.Join(c.bindir, name)}, args...)
	cmd := exec.CommandContext(ctx, "runuser", full...)
	cmd.Dir = os.TempDir()
	if os.Geteuid() != 0 {
		// Already a non-root user: run the binary directly.
		cmd = exec.CommandContext(ctx, filepath.Join(c.bindir, name), args...)
	}
	return cmd.CombinedOutput()
}

func binDir() (string, error) {
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", fmt.Errorf("initdb not found (pg_config --bindir: %v)", err)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
