package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/procfs"
)

// CPU is the processor time a target spent over one phase, read from
// /proc (user + system time of every thread; the kernel counts it in
// ticks of 10 ms, so a figure is ±10 ms per process).
type CPU struct {
	// Gateway is the gateway's own process: for Tollgate, every role (API,
	// worker, relay, projector, billing) runs in it.
	Gateway time.Duration `json:"gateway_ns"`
	// Postgres is the PostgreSQL backends serving the gateway: the
	// connections of the bench's database whose application_name is the
	// gateway's, sampled in pg_stat_activity at the phase's start and end.
	// A backend that appeared in between counts in full, one that ended in
	// between counts only up to the start.
	Postgres time.Duration `json:"postgres_ns"`
	// PostgresShared is the server's background processes (walwriter,
	// checkpointer, background writer, autovacuum, …) over the same time.
	// They serve every database on the server, other users' too, so they
	// are reported beside the total, never in it.
	PostgresShared time.Duration `json:"postgres_shared_ns"`
	// Machine is the busy time of all the machine's CPUs over the phase;
	// Others what of it no process of the bench used (not the client and
	// upstream, the gateways or PostgreSQL): other load on a shared machine.
	Machine time.Duration `json:"machine_ns"`
	Others  time.Duration `json:"others_ns"`
	// Wall is the time measured: the phase and, for Tollgate, CatchUp.
	Wall time.Duration `json:"wall_ns"`
	// CatchUp is how long after the phase's last answer Tollgate's relay
	// and projector took to reach the head of the event log: their work
	// for the phase's requests is in Gateway and Postgres.
	CatchUp time.Duration `json:"catch_up_ns"`
}

// Total is the gateway's process and its PostgreSQL backends together.
func (c CPU) Total() time.Duration { return c.Gateway + c.Postgres }

// Per divides d by n requests (or events), 0 when n is 0.
func Per(d time.Duration, n int64) time.Duration {
	if n <= 0 {
		return 0
	}
	return d / time.Duration(n)
}

// Application names the bench's connections carry, so that each
// PostgreSQL backend is counted to the process it serves.
const (
	appBench     = "tollgate-bench"
	appReference = "tollgate-bench-reference"
	appTollgate  = "tollgate-bench-tollgate"
	appRebuild   = "tollgate-bench-rebuild"
)

// cpuMeter samples the CPU of processes and of the PostgreSQL server.
type cpuMeter struct {
	fs procfs.FS
	// pool is the bench's own connection to its database (application_name appBench).
	pool *pgxpool.Pool
}

func newCPUMeter(pool *pgxpool.Pool) (*cpuMeter, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, fmt.Errorf("bench: /proc: %w", err)
	}
	return &cpuMeter{fs: fs, pool: pool}, nil
}

// snapshot is one sample: every process's CPU the bench accounts for.
type snapshot struct {
	at time.Time
	// cpu is each sampled process's CPU by pid.
	cpu map[int]time.Duration
	// procs are the processes sampled by pid: the bench's own and the gateways.
	procs []int
	// apps is the bench database's backends by application_name.
	apps map[string][]int
	// shared is the server's background processes.
	shared []int
	// machine is the busy time of all CPUs since boot.
	machine time.Duration
	// remote: a PostgreSQL pid was no postgres process here (the server
	// runs on another machine or in another pid namespace).
	remote bool
}

// sample reads the CPU of the bench's process, of pids (the gateways),
// of the bench database's backends and of the server's background processes.
func (m *cpuMeter) sample(ctx context.Context, pids ...int) (snapshot, error) {
	s := snapshot{at: time.Now(), cpu: map[int]time.Duration{}, apps: map[string][]int{}}
	// Not the bench's own connection: it serves the measurement.
	rows, err := m.pool.Query(ctx, `SELECT pid, coalesce(application_name, ''), coalesce(client, false) FROM (
		SELECT pid, application_name, backend_type IN ('client backend', 'parallel worker') AS client, datname
		FROM pg_stat_activity WHERE pid <> pg_backend_pid()) a
		WHERE (client AND datname = current_database()) OR NOT coalesce(client, false)`)
	if err != nil {
		return s, fmt.Errorf("bench: sample PostgreSQL's processes: %w", err)
	}
	for rows.Next() {
		var pid int
		var app string
		var client bool
		if err := rows.Scan(&pid, &app, &client); err != nil {
			return s, fmt.Errorf("bench: sample PostgreSQL's processes: %w", err)
		}
		if client {
			s.apps[app] = append(s.apps[app], pid)
		} else {
			s.shared = append(s.shared, pid)
		}
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("bench: sample PostgreSQL's processes: %w", err)
	}
	s.procs = append([]int{os.Getpid()}, pids...)
	for _, pid := range s.procs {
		st, err := m.proc(pid)
		if err != nil {
			return s, fmt.Errorf("bench: CPU of process %d: %w", pid, err)
		}
		s.cpu[pid] = cpuTime(st)
	}
	m.samplePostgres(&s)
	stat, err := m.fs.Stat()
	if err != nil {
		return s, fmt.Errorf("bench: /proc/stat: %w", err)
	}
	c := stat.CPUTotal
	s.machine = seconds(c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal)
	return s, nil
}

// samplePostgres reads the CPU of the PostgreSQL processes s lists; one
// that ended since is left out.
func (m *cpuMeter) samplePostgres(s *snapshot) {
	read := func(pid int) {
		st, err := m.proc(pid)
		if err != nil {
			return // ended since pg_stat_activity listed it
		}
		if st.Comm != "postgres" {
			s.remote = true
			return
		}
		s.cpu[pid] = cpuTime(st)
	}
	for _, pids := range s.apps {
		for _, pid := range pids {
			read(pid)
		}
	}
	for _, pid := range s.shared {
		read(pid)
	}
}

func (m *cpuMeter) proc(pid int) (procfs.ProcStat, error) {
	p, err := m.fs.Proc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return p.Stat()
}

// cpuTime is a process's user and system time (procfs converts the
// kernel's clock ticks with USER_HZ, which Linux fixes at 100 for /proc).
func cpuTime(st procfs.ProcStat) time.Duration { return seconds(st.CPUTime()) }

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// delta is the CPU between a and b of the gateway process pid (0: none)
// and of the backends of application app ("" for none).
func delta(a, b snapshot, pid int, app string) CPU {
	c := CPU{Wall: b.at.Sub(a.at), Machine: b.machine - a.machine}
	if pid != 0 {
		c.Gateway = b.cpu[pid] - a.cpu[pid]
	}
	if app != "" {
		c.Postgres = grown(a, b, a.apps[app], b.apps[app])
	}
	c.PostgresShared = grown(a, b, a.shared, b.shared)
	ours := c.PostgresShared
	for _, p := range b.procs {
		if start, ok := a.cpu[p]; ok {
			ours += b.cpu[p] - start // the bench's process and the gateways
		}
	}
	for name := range b.apps {
		ours += grown(a, b, a.apps[name], b.apps[name])
	}
	c.Others = max(c.Machine-ours, 0)
	return c
}

// grown is the CPU the processes listed in after (read in b) used since
// a: since their sample in a when before listed them too, in full when
// they started in between.
func grown(a, b snapshot, before, after []int) time.Duration {
	listed := make(map[int]bool, len(before))
	for _, p := range before {
		listed[p] = true
	}
	var d time.Duration
	for _, p := range after {
		end, ok := b.cpu[p]
		if !ok {
			continue
		}
		if start, ok := a.cpu[p]; ok && listed[p] {
			end -= start
		}
		d += max(end, 0)
	}
	return d
}
