package pgtest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// CPUMeter measures CPU time spent by this process and by the PostgreSQL
// backends of a pool's database (from /proc: the server runs on this
// machine), so a benchmark reports what an operation costs on both sides.
type CPUMeter struct {
	pool     *pgxpool.Pool
	self     time.Duration
	backends map[int]time.Duration
}

// StartCPU starts measuring this process and pool's backends. A backend
// that connects later counts from its start; open the pool's connections
// first to leave their start-up out.
func StartCPU(b *testing.B, pool *pgxpool.Pool) *CPUMeter {
	b.Helper()
	m := &CPUMeter{pool: pool}
	m.self, m.backends = selfCPU(b), backendsCPU(b, pool)
	return m
}

// Report adds <self>-cpu-ns/op (this process) and pg-cpu-ns/op to the
// benchmark's result. A backend that ended during the run is not counted.
func (m *CPUMeter) Report(b *testing.B, self string) {
	b.Helper()
	cpu := selfCPU(b) - m.self
	var pg time.Duration
	for pid, t := range backendsCPU(b, m.pool) {
		pg += t - m.backends[pid]
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), self+"-cpu-ns/op")
	b.ReportMetric(float64(pg.Nanoseconds())/float64(b.N), "pg-cpu-ns/op")
}

func selfCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backendsCPU returns the CPU time of each backend connected to pool's
// database.
func backendsCPU(b *testing.B, pool *pgxpool.Pool) map[int]time.Duration {
	b.Helper()
	rows, err := pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	out := map[int]time.Duration{}
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			b.Fatal(err)
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // ended meanwhile
		}
		// Fields after the command (which may hold spaces) in parentheses:
		// utime and stime are the 14th and 15th of the line.
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = time.Duration(utime+stime) * clockTick
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}
