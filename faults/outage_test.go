package faults

import (
	"net/http"
	"os"
	"testing"
	"time"
)

// outageWindow is how long each dependency stays down: 3s, or
// TOLLGATE_OUTAGE_WINDOW (a duration) to measure longer outages.
var outageWindow = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("TOLLGATE_OUTAGE_WINDOW")); err == nil && d > 0 && d <= 2*time.Minute {
		return d
	}
	return 3 * time.Second
}()

// pauseWindow is how long PostgreSQL stays paused.
var pauseWindow = 2*outageWindow + 2*time.Second

// outageFigures are one outage's measured figures.
type outageFigures struct {
	name                     string
	during, sent             outageCounts
	logLines, suppressed     int
	recovery                 time.Duration
	lost, duplicated         int
	requested, ok, succeeded int
}

func (f outageFigures) report(t *testing.T) {
	if f.requested == 0 {
		t.Logf("%s: during the outage %d tried, %d answered 503, %d answered 200/202, %d other, slowest answer %s; %d warning/error log lines (%d more counted as suppressed); first 200 %s after the dependency was back; of the %d sent during it, %d answered 503, %d 200/202 (after it), the slowest in %s",
			f.name, f.during.tried, f.during.unavailable, f.during.ok, f.during.other, f.during.slowest.Round(time.Millisecond), f.logLines, f.suppressed, f.recovery.Round(time.Millisecond),
			f.sent.tried, f.sent.unavailable, f.sent.ok, f.sent.slowest.Round(time.Millisecond))
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

// outage takes dep down with stop for window under the load, brings
// it back with start, and checks what happened meanwhile: only 503s with
// Retry-After and an OpenAI body, /readyz naming dep down then up, few log
// lines, and a 200 again soon after, without restarting Tollgate.
//
// A paused PostgreSQL is laxer: a request meets one or more statement or
// connect timeouts (or waits for a connection behind others that do), so
// some are answered only once it resumes; those sent and answered during
// the pause must still be 503s, but there need not be any.
func (e *outageEnv) outage(t *testing.T, load *outageLoad, name, dep string, window time.Duration, hung bool, stop, start func()) outageFigures {
	t.Helper()
	first := time.Now()
	stop()
	down := time.Now()
	e.checkReadyz(t, http.StatusServiceUnavailable, dep, "down")
	_, deps := e.readyz()
	switch {
	case dep == "database" && (deps["bus"] != "down" || deps[""] != "unavailable"):
		t.Errorf("%s: /readyz %v, want the PostgreSQL bus down too", name, deps)
	case dep == "redis" && deps["database"] != "up":
		t.Errorf("%s: /readyz %v, want the database up", name, deps)
	}
	time.Sleep(window - time.Since(down))
	back := time.Now()
	start()
	restarted := time.Now()
	firstOK := load.waitOK(t, restarted, 60*time.Second)
	e.checkReadyz(t, http.StatusOK, dep, "up")
	// The requests sent and answered while dep was down.
	f := outageFigures{name: name, during: countAnswered(load.results(), down, back), sent: countResults(load.results(), down, back),
		recovery: firstOK.Sub(restarted)}
	logs := e.log.warnings(first, firstOK)
	f.logLines, f.suppressed = len(logs), suppressedCount(logs)
	t.Logf("%s: log lines: %s", name, outageSummary(logs))
	if (f.during.unavailable == 0 && !hung) || f.during.ok != 0 || f.during.other != 0 {
		t.Errorf("%s: %+v, want only 503s", name, f.during)
	}
	if bound := outageLogBound(firstOK.Sub(first)); f.logLines > bound {
		t.Errorf("%s: %d warning/error log lines for %d requests, want at most %d", name, f.logLines, f.during.tried, bound)
	}
	time.Sleep(time.Second)
	return f
}

// TestOutagePostgreSQLStoppedAndPausedUnderLoad stops the private
// PostgreSQL ("immediate", like a crash), starts it again, then pauses it
// (SIGSTOP, like a hung host) and resumes it, under steady load, without
// restarting Tollgate.
func TestOutagePostgreSQLStoppedAndPausedUnderLoad(t *testing.T) {
	t.Parallel()
	e := outageStart(t, false)
	acc, key := e.account()
	load := e.startLoad(key, 4)
	e.checkReadyz(t, http.StatusOK, "database", "up")
	load.waitOK(t, time.Now(), 30*time.Second)
	time.Sleep(time.Second)

	stopped := e.outage(t, load, "PostgreSQL stopped (immediate) "+outageWindow.String(), "database", outageWindow, false,
		func() { e.pg.Stop("immediate") }, e.pg.Start)
	// The queued jobs the stop caught are recorded before the pause, so
	// that each outage is measured on its own (see drainQueued).
	e.drainQueued(t, acc, load.results())
	// Longer: a request meets a statement timeout (2s here) or a connect
	// timeout (2s), or waits for a connection, before it is answered.
	paused := e.outage(t, load, "PostgreSQL paused (SIGSTOP) "+pauseWindow.String(), "database", pauseWindow, true, e.pg.Pause, e.pg.Resume)
	figs := []outageFigures{stopped, paused}
	res := load.finish()
	all := countResults(res, time.Time{}, time.Now())
	back := time.Now()
	lost, duplicated, l := e.settle(t, acc, res)
	for _, f := range figs {
		f.report(t)
	}
	answered503 := l.succeeded - (all.ok - lost)
	t.Logf("overall %d tried, %d requested in the store, %d answered 200/202, %d succeeded in the store (%d of them answered 503: an append of theirs was cut off by the statement timeout, then applied); %d abandoned (in flight when the database went), %d requeued; lost %d, duplicated %d; the store settled %s after the load ended",
		all.tried, l.requested, all.ok, l.succeeded, answered503, l.abandoned, l.requeued, lost, duplicated, time.Since(back).Round(time.Millisecond))
	if all.other != 0 {
		t.Errorf("%d answers neither 200/202 nor 503, e.g. %v", all.other, all.others)
	}
	checkUnavailable(t, res, "database_unavailable")
	if lost != 0 || duplicated != 0 {
		t.Errorf("lost %d, duplicated %d, want none", lost, duplicated)
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

	figs := []outageFigures{
		e.outage(t, load, "Redis paused (SIGSTOP) "+outageWindow.String(), "redis", outageWindow, false,
			e.redis.Pause, e.redis.Resume),
		e.outage(t, load, "Redis killed, restarted after "+outageWindow.String(), "redis", outageWindow, false, e.redis.Kill, e.redis.Restart),
	}

	flushed := time.Now()
	e.redis.FlushAll()
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
