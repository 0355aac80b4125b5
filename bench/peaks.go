package bench

import (
	"bufio"
	"bytes"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Peaks are a process's peaks over a slow phase, sampled every sampleEvery.
type Peaks struct {
	// Goroutines is the most goroutines at once.
	Goroutines int `json:"goroutines"`
	// HeapBytes is the most memory in heap objects (live and not yet
	// swept), StackBytes in goroutine stacks.
	HeapBytes  uint64 `json:"heap_bytes"`
	StackBytes uint64 `json:"stack_bytes"`
	// RSSBytes is the largest resident set size sampled.
	RSSBytes uint64 `json:"rss_bytes"`
	// HWMBytes is the kernel's peak resident set size of the whole life
	// of the process (VmHWM, not sampled, though the kernel updates it
	// lazily: it can trail a sample by a few pages); 0 where not read.
	HWMBytes uint64 `json:"hwm_bytes,omitempty"`
	// CPU is the process's CPU time (user and system) over the phase; 0
	// where not read.
	CPU time.Duration `json:"cpu_ns,omitempty"`
}

// sampleEvery is how often a process's peaks are sampled.
const sampleEvery = 20 * time.Millisecond

// meter samples this process's peaks (and a database pool's, when not
// nil) every sampleEvery, calling onSample (when not nil) after each
// sample, until finish.
type meter struct {
	s        []metrics.Sample
	pool     *pgxpool.Pool
	onSample func()
	peaks    Peaks
	ps       DBPool
	before   pgxpool.Stat
	cpu      time.Duration
	stop     chan struct{}
	done     chan struct{}
}

func startMeter(pool *pgxpool.Pool, onSample func()) *meter {
	m := &meter{
		s: []metrics.Sample{
			{Name: "/sched/goroutines:goroutines"},
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/heap/stacks:bytes"},
		},
		pool: pool, onSample: onSample, cpu: cpuTimeSelf(),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if pool != nil {
		st := pool.Stat()
		m.before, m.ps.MaxConns = *st, st.MaxConns()
	}
	go m.run()
	return m
}

func (m *meter) run() {
	defer close(m.done)
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		m.sample()
		if m.onSample != nil {
			m.onSample()
		}
		select {
		case <-m.stop:
			m.sample()
			return
		case <-tick.C:
		}
	}
}

func (m *meter) sample() {
	metrics.Read(m.s)
	p := &m.peaks
	if v := m.s[0].Value; v.Kind() == metrics.KindUint64 {
		p.Goroutines = max(p.Goroutines, int(v.Uint64()))
	}
	if v := m.s[1].Value; v.Kind() == metrics.KindUint64 {
		p.HeapBytes = max(p.HeapBytes, v.Uint64())
	}
	if v := m.s[2].Value; v.Kind() == metrics.KindUint64 {
		p.StackBytes = max(p.StackBytes, v.Uint64())
	}
	p.RSSBytes = max(p.RSSBytes, residentBytes())
	if m.pool != nil {
		st := m.pool.Stat()
		m.ps.PeakAcquired = max(m.ps.PeakAcquired, st.AcquiredConns())
		m.ps.PeakTotal = max(m.ps.PeakTotal, st.TotalConns())
	}
}

// finish stops the sampling and returns the peaks, and what the pool did
// meanwhile (zero without a pool).
func (m *meter) finish() (Peaks, DBPool) {
	close(m.stop)
	<-m.done
	m.peaks.HWMBytes = peakResidentBytes()
	m.peaks.CPU = cpuTimeSelf() - m.cpu
	if m.pool != nil {
		after := m.pool.Stat()
		m.ps.Acquires = after.AcquireCount() - m.before.AcquireCount()
		m.ps.Waited = after.EmptyAcquireCount() - m.before.EmptyAcquireCount()
		m.ps.AcquireWait = after.AcquireDuration() - m.before.AcquireDuration()
	}
	return m.peaks, m.ps
}

// residentBytes is the process's resident set size from /proc (Linux);
// 0 where that cannot be read.
func residentBytes() uint64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// peakResidentBytes is the process's VmHWM from /proc (Linux): the most
// it was ever resident; 0 where that cannot be read.
func peakResidentBytes() uint64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}

// cpuTimeSelf is the CPU time (user and system) this process has used.
func cpuTimeSelf() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
