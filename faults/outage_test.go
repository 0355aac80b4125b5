package faults

import (
	"net/http"
	"testing"
	"time"
)

// outageWindow is how long each dependency stays down.
const outageWindow = 3 * time.Second

// outageFigures are one outage's measured figures.
type outageFigures struct {
	name                     string
	during                   outageCounts
	logLines                 int
	recovery                 time.Duration
	lost, duplicated         int
	requested, ok, succeeded int
}

func (f outageFigures) report(t *testing.T) {
	if f.requested == 0 {
		t.Logf("%s: during the outage %d tried, %d answered 503, %d answered 200/202, %d other; %d warning/error log lines; first 200 %s after the dependency was back",
			f.name, f.during.tried, f.during.unavailable, f.during.ok, f.during.other, f.logLines, f.recovery.Round(time.Millisecond))
		return
	}
	t.Logf("%s: during the outage %d tried, %d answered 503, %d answered 200/202, %d other; %d warning/error log lines; first 200 %s after the dependency was back; overall %d requested, %d answered 200/202, %d succeeded in the store; lost %d, duplicated %d",
		f.name, f.during.tried, f.during.unavailable, f.during.ok, f.during.other, f.logLines, f.recovery.Round(time.Millisecond),
		f.requested, f.ok, f.succeeded, f.lost, f.duplicated)
}

// checkReadyz waits (bounded) until /readyz answers want with dependency
// dep in state state.
func (e *outageEnv) checkReadyz(t *testing.T, want int, dep, state string) {
	t.Helper()
	var got map[string]string
	var status int
	for range 100 {
		status, got = e.readyz()
		if status == want && got[dep] == state {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("/readyz: %d %v, want %d with %s %s", status, got, want, dep, state)
}

// outageLogBound is the most warning/error lines an outage of d may
// write: each distinct message once per interval, for the few roles that
// meet it (API requests, relay, projector, leaders, worker, reaper, bus).
func outageLogBound(d time.Duration) int {
	return 12 * (int(d/outageLogInterval) + 2)
}

// TestOutagePostgreSQLStoppedUnderLoad stops the private PostgreSQL
// ("immediate", like a crash) under steady load, then starts it again
// without restarting Tollgate.
func TestOutagePostgreSQLStoppedUnderLoad(t *testing.T) {
	t.Parallel()
	e := outageStart(t, false)
	acc, key := e.account()
	load := e.startLoad(key, 4)
	e.checkReadyz(t, http.StatusOK, "database", "up")
	load.waitOK(t, time.Now(), 30*time.Second)
	time.Sleep(time.Second)

	down := time.Now()
	e.pg.Stop("immediate")
	stopped := time.Now()
	e.checkReadyz(t, http.StatusServiceUnavailable, "database", "down")
	_, deps := e.readyz()
	if deps["bus"] != "down" || deps[""] != "unavailable" {
		t.Errorf("/readyz with PostgreSQL down: %v, want the PostgreSQL bus down too", deps)
	}
	time.Sleep(outageWindow - time.Since(stopped))
	back := time.Now()
	e.pg.Start()
	restarted := time.Now()
	firstOK := load.waitOK(t, restarted, 60*time.Second)
	e.checkReadyz(t, http.StatusOK, "database", "up")
	time.Sleep(time.Second)
	res := load.finish()

	f := outageFigures{name: "PostgreSQL stopped (immediate) " + outageWindow.String(), during: countAnswered(res, stopped, back),
		recovery: firstOK.Sub(restarted)}
	f.logLines = len(e.log.warnings(down, firstOK))
	all := countResults(res, time.Time{}, time.Now())
	f.ok = all.ok
	var l outageLedger
	f.lost, f.duplicated, l = e.settle(t, acc, res)
	f.requested, f.succeeded = l.requested, l.succeeded
	f.report(t)
	t.Logf("log lines: %s", outageSummary(e.log.warnings(down, firstOK)))

	if f.during.unavailable == 0 || f.during.ok != 0 || f.during.other != 0 {
		t.Errorf("during the outage: %+v, want only 503s", f.during)
	}
	if all.other != 0 {
		t.Errorf("%d answers neither 200 nor 503, e.g. %v", all.other, all.others)
	}
	checkUnavailable(t, res, "database_unavailable")
	if bound := outageLogBound(firstOK.Sub(down)); f.logLines > bound {
		t.Errorf("%d warning/error log lines for %d requests in the outage, want at most %d", f.logLines, f.during.tried, bound)
	}
	if f.lost != 0 || f.duplicated != 0 {
		t.Errorf("lost %d, duplicated %d, want none", f.lost, f.duplicated)
	}
}

// TestOutageRedisPausedKilledFlushed pauses the limiter's private Redis
// (SIGSTOP), kills and restarts it, and flushes it, under steady load.
func TestOutageRedisPausedKilledFlushed(t *testing.T) {
	t.Parallel()
	e := outageStart(t, true)
	acc, key := e.account()
	load := e.startLoad(key, 4)
	e.checkReadyz(t, http.StatusOK, "redis", "up")
	load.waitOK(t, time.Now(), 30*time.Second)
	time.Sleep(time.Second)

	var figs []outageFigures
	outage := func(name string, stop, start func()) {
		down := time.Now()
		stop()
		e.checkReadyz(t, http.StatusServiceUnavailable, "redis", "down")
		if _, deps := e.readyz(); deps["database"] != "up" {
			t.Errorf("%s: /readyz %v, want the database up", name, deps)
		}
		time.Sleep(outageWindow - time.Since(down))
		back := time.Now()
		start()
		restarted := time.Now()
		firstOK := load.waitOK(t, restarted, 60*time.Second)
		e.checkReadyz(t, http.StatusOK, "redis", "up")
		// The requests sent and answered while Redis was down.
		f := outageFigures{name: name, during: countAnswered(load.results(), down, back), recovery: firstOK.Sub(restarted)}
		f.logLines = len(e.log.warnings(down, firstOK))
		if f.during.unavailable == 0 || f.during.ok != 0 || f.during.other != 0 {
			t.Errorf("%s: %+v, want only 503s", name, f.during)
		}
		if bound := outageLogBound(firstOK.Sub(down)); f.logLines > bound {
			t.Errorf("%s: %d warning/error log lines, want at most %d: %s", name, f.logLines, bound, outageSummary(e.log.warnings(down, firstOK)))
		}
		figs = append(figs, f)
		time.Sleep(time.Second)
	}
	outage("Redis paused (SIGSTOP) "+outageWindow.String(), func() { e.redis.signal(sigStop) }, func() { e.redis.signal(sigCont) })
	outage("Redis killed, restarted after "+outageWindow.String(), e.redis.kill, e.redis.start)

	flushed := time.Now()
	e.redis.flushAll()
	time.Sleep(2 * time.Second)
	afterFlush := countResults(load.results(), flushed, time.Now())
	res := load.finish()
	if afterFlush.ok == 0 || afterFlush.unavailable != 0 || afterFlush.other != 0 {
		t.Errorf("after FLUSHALL: %+v, want only 200s (the limiter reseeds from the read model)", afterFlush)
	}
	all := countResults(res, time.Time{}, time.Now())
	if all.other != 0 {
		t.Errorf("%d answers neither 200 nor 503, e.g. %v", all.other, all.others)
	}
	checkUnavailable(t, res, "quota_unavailable")
	lost, duplicated, l := e.settle(t, acc, res)
	for _, f := range figs {
		f.report(t)
	}
	t.Logf("FLUSHALL: %d tried in the 2s after, %d answered 200; overall %d requested, %d answered 200/202, %d succeeded in the store; lost %d, duplicated %d",
		afterFlush.tried, afterFlush.ok, l.requested, all.ok, l.succeeded, lost, duplicated)
	if lost != 0 || duplicated != 0 {
		t.Errorf("lost %d, duplicated %d, want none", lost, duplicated)
	}
}
