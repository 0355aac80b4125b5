// Package redis is the shared quota.Limiter: one Lua script per
// admission on Redis, so every replica enforces one limit.
package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
)

// Limiter is the shared limiter: every replica admits through one Lua
// script per request, so one limit holds across all of them. An account's
// keys share a hash tag ({account}), so the script's keys live in one slot.
type Limiter struct {
	rdb    goredis.UniversalClient
	prefix string
	seed   quota.Seeder
}

// New returns a limiter on rdb whose keys start with prefix; seed (may be
// nil) restores an account from the read model when Redis has no trace of
// it (a flush, a new Redis), so no window or budget resets.
func New(rdb goredis.UniversalClient, prefix string, seed quota.Seeder) *Limiter {
	return &Limiter{rdb: rdb, prefix: prefix, seed: seed}
}

// reasons maps the admit script's reason index to a quota.Reason.
var reasons = [...]quota.Reason{quota.ReasonNone, quota.KeyRequestsPerMinute, quota.KeyTokensPerMinute, quota.AccountRequestsPerMinute,
	quota.AccountTokensPerMinute, quota.KeyDailyBudget, quota.KeyMonthlyBudget, quota.AccountDailyBudget, quota.AccountMonthlyBudget}

// quota.Budget and window keys expire on their own once their period is over.
const (
	windowTTL = 2 * quota.Window
	dayTTL    = 3 * 24 * time.Hour
	monthTTL  = 40 * 24 * time.Hour
	spendTTL  = 61 * time.Minute
)

// keys are one admission's Redis keys.
type keys struct {
	base                                   string
	seeded, wKey, wAcc                     string
	bKeyDay, bKeyMonth, bAccDay, bAccMonth string
	res, resx, spend, done                 string
}

func (r *Limiter) keys(accountID, keyID, day, month string) keys {
	base := r.prefix + "{" + accountID + "}:"
	return keys{
		base: base, seeded: base + "seeded", wKey: base + "w:k:" + keyID, wAcc: base + "w:a",
		bKeyDay: base + "b:k:" + keyID + ":d:" + day, bKeyMonth: base + "b:k:" + keyID + ":m:" + month,
		bAccDay: base + "b:a:d:" + day, bAccMonth: base + "b:a:m:" + month,
		res: base + "res", resx: base + "resx", spend: base + "sp:" + keyID, done: base + "done",
	}
}

// luaCommon holds the helpers both scripts use.
const luaCommon = `
local function int(x) return string.format('%d', x) end
`

// admitScript mirrors Decide: release expired reservations, read both
// windows and the four budgets, check in Decide's order, and if admitted
// count the request and reserve its cost. It returns
// {code, reason, retry_ms, key_req, key_tok, key_newest, acc_req, acc_tok, acc_newest}
// followed by the id and info of each reservation it released on expiry,
// with code 1 admitted, 0 rejected, -1 unseeded, 2 settled already (an
// admission that reached Redis after its release, e.g. sent before a
// pause and run after it). With ARGV[19] = 1 it decides without counting
// or reserving anything (a dry run).
var admitScript = goredis.NewScript(luaCommon + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
if ARGV[19] ~= '1' and redis.call('ZSCORE', KEYS[10], ARGV[2]) then return {2} end
local nowMs = tonumber(ARGV[1])
local nowSec = math.floor(nowMs / 1000)
local tokens = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local bp = ARGV[15]
local expired = redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', nowMs)
local gone = {}
for _, id in ipairs(expired) do
  local info = redis.call('HGET', KEYS[8], id)
  if info then
    table.insert(gone, id)
    table.insert(gone, info)
    local c, k, d, m = string.match(info, '^(%d+)|([^|]*)|([^|]*)|([^|]*)$')
    local neg = int(-tonumber(c))
    redis.call('HINCRBY', bp .. 'a:d:' .. d, 'r', neg)
    redis.call('HINCRBY', bp .. 'a:m:' .. m, 'r', neg)
    redis.call('HINCRBY', bp .. 'k:' .. k .. ':d:' .. d, 'r', neg)
    redis.call('HINCRBY', bp .. 'k:' .. k .. ':m:' .. m, 'r', neg)
    redis.call('HDEL', KEYS[8], id)
  end
  redis.call('ZREM', KEYS[9], id)
end
local function scan(key)
  local all = redis.call('HGETALL', key)
  local w = {r = 0, t = 0, newest = 0, reqs = {}, toks = {}, secs = {}}
  local seen, dead = {}, {}
  for i = 1, #all, 2 do
    local f = all[i]
    local sec = tonumber(string.sub(f, 2))
    local v = tonumber(all[i + 1])
    if sec <= nowSec - 60 then
      table.insert(dead, f)
    else
      if not seen[sec] then seen[sec] = true; table.insert(w.secs, sec) end
      if string.sub(f, 1, 1) == 'r' then w.reqs[sec] = v; w.r = w.r + v else w.toks[sec] = v; w.t = w.t + v end
      if sec > w.newest then w.newest = sec end
    end
  end
  if #dead > 0 then redis.call('HDEL', key, unpack(dead)) end
  table.sort(w.secs)
  return w
end
local function retry(w, excess, tok)
  local freed = 0
  for _, sec in ipairs(w.secs) do
    local v
    if tok then v = w.toks[sec] else v = w.reqs[sec] end
    freed = freed + (v or 0)
    if freed >= excess then return (sec + 60) * 1000 - nowMs end
  end
  return 60000
end
local wk = scan(KEYS[2])
local wa = scan(KEYS[3])
local reason, after = 0, 0
local function reject(r, a) if reason == 0 then reason = r; after = a end end
local scopes = {{w = wk, rpm = tonumber(ARGV[5]), tpm = tonumber(ARGV[6]), ri = 1, ti = 2},
                {w = wa, rpm = tonumber(ARGV[7]), tpm = tonumber(ARGV[8]), ri = 3, ti = 4}}
for _, s in ipairs(scopes) do
  if s.rpm > 0 and s.w.r + 1 > s.rpm then reject(s.ri, retry(s.w, s.w.r + 1 - s.rpm, false)) end
  if s.tpm > 0 and s.w.t + tokens > s.tpm then
    local a = 60000
    if tokens <= s.tpm then a = retry(s.w, s.w.t + tokens - s.tpm, true) end
    reject(s.ti, a)
  end
end
local budgets = {{KEYS[4], tonumber(ARGV[9]), 5}, {KEYS[5], tonumber(ARGV[10]), 6},
                 {KEYS[6], tonumber(ARGV[11]), 7}, {KEYS[7], tonumber(ARGV[12]), 8}}
for _, b in ipairs(budgets) do
  if b[2] >= 0 then
    local v = redis.call('HMGET', b[1], 's', 'r')
    if (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0) + cost > b[2] then reject(b[3], 0) end
  end
end
local out = {0, reason, after, wk.r, wk.t, wk.newest, wa.r, wa.t, wa.newest}
for _, v in ipairs(gone) do table.insert(out, v) end
if reason ~= 0 or ARGV[19] == '1' then
  if reason == 0 then out[1] = 1 end
  return out
end
out[1] = 1
for i = 2, 3 do
  redis.call('HINCRBY', KEYS[i], 'r' .. nowSec, 1)
  redis.call('HINCRBY', KEYS[i], 't' .. nowSec, int(tokens))
  redis.call('EXPIRE', KEYS[i], ARGV[18])
end
for i = 4, 7 do
  redis.call('HINCRBY', KEYS[i], 'r', int(cost))
  if i % 2 == 0 then redis.call('EXPIRE', KEYS[i], ARGV[16]) else redis.call('EXPIRE', KEYS[i], ARGV[17]) end
end
redis.call('HSET', KEYS[8], ARGV[2], ARGV[14])
redis.call('ZADD', KEYS[9], ARGV[13], ARGV[2])
return out
`)

// settleScript ends a reservation: the real cost is spent, the
// reservation released if it is still held (not expired), the window's
// tokens corrected, and the key's spend for the runaway guard summed.
// It is idempotent by completion id: the id is kept in a sorted set
// (KEYS[11], scored by when it may be forgotten) and a settlement seen
// before changes nothing, so a retry of a settlement whose reply was
// lost, or one sent before a pause and run after it, counts once.
// It returns {code, key_spend} with code -1 when unseeded, 2 when settled
// already.
var settleScript = goredis.NewScript(luaCommon + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', ARGV[12])
if redis.call('ZSCORE', KEYS[11], ARGV[1]) then return {2, 0} end
redis.call('ZADD', KEYS[11], ARGV[11], ARGV[1])
redis.call('EXPIRE', KEYS[11], ARGV[13])
local held = redis.call('HDEL', KEYS[8], ARGV[1])
redis.call('ZREM', KEYS[9], ARGV[1])
local cost = tonumber(ARGV[3])
local reserved = 0
if held == 1 then reserved = tonumber(ARGV[2]) end
for i = 4, 7 do
  redis.call('HINCRBY', KEYS[i], 's', int(cost))
  if reserved ~= 0 then redis.call('HINCRBY', KEYS[i], 'r', int(-reserved)) end
  if i % 2 == 0 then redis.call('EXPIRE', KEYS[i], ARGV[8]) else redis.call('EXPIRE', KEYS[i], ARGV[9]) end
end
local f = 't' .. ARGV[4]
for i = 2, 3 do
  local v = redis.call('HGET', KEYS[i], f)
  if v then
    local n = tonumber(v) + tonumber(ARGV[5])
    if n < 0 then n = 0 end
    redis.call('HSET', KEYS[i], f, int(n))
  end
end
local spend = 0
local minutes = tonumber(ARGV[7])
if minutes > 0 then
  local nowMin = tonumber(ARGV[6])
  redis.call('HINCRBY', KEYS[10], ARGV[6], int(cost))
  redis.call('EXPIRE', KEYS[10], ARGV[10])
  local all = redis.call('HGETALL', KEYS[10])
  local dead = {}
  for i = 1, #all, 2 do
    if tonumber(all[i]) <= nowMin - minutes then table.insert(dead, all[i]) else spend = spend + tonumber(all[i + 1]) end
  end
  if #dead > 0 then redis.call('HDEL', KEYS[10], unpack(dead)) end
end
return {1, spend}
`)

// seedScript installs a snapshot unless the account was seeded meanwhile
// (another replica): KEYS[1] is the marker, ARGV[1] the snapshot as JSON
// {"incr":[[key, field, value, ttl_s]], "res":[[id, info, expires_ms]]},
// ARGV[2] and ARGV[3] the reservations' hash and sorted set.
var seedScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local s = cjson.decode(ARGV[1])
for _, e in ipairs(s.incr) do
  redis.call('HINCRBY', e[1], e[2], string.format('%d', e[3]))
  redis.call('EXPIRE', e[1], e[4])
end
for _, r in ipairs(s.res) do
  redis.call('HSET', ARGV[2], r[1], r[2])
  redis.call('ZADD', ARGV[3], r[3], r[1])
end
redis.call('SET', KEYS[1], '1')
return 1
`)

func secs(d time.Duration) int64 { return int64(d / time.Second) }

// Admit implements quota.Limiter: one round trip (EVALSHA), two after a flush
// (the seed), three the first time a script is loaded.
func (r *Limiter) Admit(ctx context.Context, a quota.Admission) (quota.Decision, error) {
	return r.admit(ctx, a, false)
}

// Check implements quota.Limiter: Admit's script as a dry run.
func (r *Limiter) Check(ctx context.Context, a quota.Admission) (quota.Decision, error) {
	return r.admit(ctx, a, true)
}

func (r *Limiter) admit(ctx context.Context, a quota.Admission, dry bool) (quota.Decision, error) {
	day, month, _, _ := quota.Periods(a.Now)
	k := r.keys(a.AccountID, a.KeyID, day, month)
	info := strconv.FormatInt(int64(a.Cost), 10) + "|" + a.KeyID + "|" + day + "|" + month
	dryArg := "0"
	if dry {
		dryArg = "1"
	}
	args := []any{a.Now.UnixMilli(), a.ID, a.Tokens, int64(a.Cost),
		a.Key.RequestsPerMinute, a.Key.TokensPerMinute, a.Account.RequestsPerMinute, a.Account.TokensPerMinute,
		int64(a.Key.DailyBudget), int64(a.Key.MonthlyBudget), int64(a.Account.DailyBudget), int64(a.Account.MonthlyBudget),
		a.Now.Add(a.TTL).UnixMilli(), info, k.base + "b:", secs(dayTTL), secs(monthTTL), secs(windowTTL), dryArg}
	ks := []string{k.seeded, k.wKey, k.wAcc, k.bKeyDay, k.bKeyMonth, k.bAccDay, k.bAccMonth, k.res, k.resx, k.done}
	for attempt := 0; ; attempt++ {
		reply, err := admitScript.Run(ctx, r.rdb, ks, args...).Slice()
		if err != nil {
			return quota.Decision{}, fmt.Errorf("%w: admit: %w", quota.ErrLimiter, err)
		}
		out, expired, err := admitReply(reply)
		if err != nil {
			return quota.Decision{}, fmt.Errorf("%w: admit: %w", quota.ErrLimiter, err)
		}
		if out[0] == -1 {
			if attempt > 0 {
				return quota.Decision{}, fmt.Errorf("%w: account %s still unseeded", quota.ErrLimiter, a.AccountID)
			}
			if err := r.seedAccount(ctx, a.AccountID, a.Now); err != nil {
				return quota.Decision{}, err
			}
			continue
		}
		if out[0] == 2 {
			return quota.Decision{}, fmt.Errorf("%w: reservation %s was settled already", quota.ErrLimiter, a.ID)
		}
		if len(out) != 9 || out[1] < 0 || int(out[1]) >= len(reasons) {
			return quota.Decision{}, fmt.Errorf("%w: admit: unexpected reply %v", quota.ErrLimiter, out)
		}
		d := quota.Decision{Allowed: out[0] == 1, Reason: reasons[out[1]], RetryAfter: time.Duration(out[2]) * time.Millisecond, Day: day, Month: month,
			Expired: expired}
		if d.Reason.IsBudget() {
			d.RetryAfter = quota.BudgetRetry(d.Reason, a.Now)
		}
		if dry {
			// Headers as if nothing were counted: a dry run admits nothing.
			d.Allowed = false
		}
		quota.FillHeaders(&d, a, quota.WindowFigures{Requests: out[3], Tokens: out[4], Newest: out[5]},
			quota.WindowFigures{Requests: out[6], Tokens: out[7], Newest: out[8]})
		d.Allowed = d.Reason == quota.ReasonNone
		return d, nil
	}
}

// Settle implements quota.Limiter; it is idempotent by s.ID (see settleScript).
func (r *Limiter) Settle(ctx context.Context, s quota.Settlement) (quota.SettleResult, error) {
	k := r.keys(s.AccountID, s.KeyID, s.Day, s.Month)
	ks := []string{k.seeded, k.wKey, k.wAcc, k.bKeyDay, k.bKeyMonth, k.bAccDay, k.bAccMonth, k.res, k.resx, k.spend, k.done}
	args := []any{s.ID, int64(s.Reserved), int64(s.Cost), s.At.Unix(), s.Tokens - s.ReservedTokens,
		s.Now.Unix() / 60, int64(s.GuardWindow / time.Minute), secs(dayTTL), secs(monthTTL), secs(spendTTL),
		s.Now.Add(quota.SettledRetention).UnixMilli(), s.Now.UnixMilli(), secs(2 * quota.SettledRetention)}
	for attempt := 0; ; attempt++ {
		out, err := settleScript.Run(ctx, r.rdb, ks, args...).Int64Slice()
		if err != nil {
			return quota.SettleResult{}, fmt.Errorf("%w: settle: %w", quota.ErrLimiter, err)
		}
		if out[0] == -1 && attempt == 0 {
			if err := r.seedAccount(ctx, s.AccountID, s.Now); err != nil {
				return quota.SettleResult{}, err
			}
			continue
		}
		switch out[0] {
		case 1:
			return quota.SettleResult{KeySpend: money.NanoUSD(out[1])}, nil
		case 2:
			return quota.SettleResult{Duplicate: true}, nil
		}
		return quota.SettleResult{}, fmt.Errorf("%w: settle: unexpected reply %v", quota.ErrLimiter, out)
	}
}

// Peek implements quota.Limiter with one pipelined read.
func (r *Limiter) Peek(ctx context.Context, accountID, keyID string, now time.Time) (quota.Usage, error) {
	day, month, _, _ := quota.Periods(now)
	k := r.keys(accountID, keyID, day, month)
	for attempt := 0; ; attempt++ {
		pipe := r.rdb.Pipeline()
		seeded := pipe.Exists(ctx, k.seeded)
		wa, wk := pipe.HGetAll(ctx, k.wAcc), pipe.HGetAll(ctx, k.wKey)
		ad, am := pipe.HMGet(ctx, k.bAccDay, "s", "r"), pipe.HMGet(ctx, k.bAccMonth, "s", "r")
		kd, km := pipe.HMGet(ctx, k.bKeyDay, "s", "r"), pipe.HMGet(ctx, k.bKeyMonth, "s", "r")
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
			return quota.Usage{}, fmt.Errorf("%w: peek: %w", quota.ErrLimiter, err)
		}
		if seeded.Val() == 0 && attempt == 0 {
			if err := r.seedAccount(ctx, accountID, now); err != nil {
				return quota.Usage{}, err
			}
			continue
		}
		u := quota.Usage{Account: quota.UsageOf(quota.ScopeState{Window: parseWindow(wa.Val()), Day: parseBudget(ad.Val()), Month: parseBudget(am.Val())}, now)}
		if keyID != "" {
			u.Key = quota.UsageOf(quota.ScopeState{Window: parseWindow(wk.Val()), Day: parseBudget(kd.Val()), Month: parseBudget(km.Val())}, now)
		}
		return u, nil
	}
}

// seedAccount installs the read model's picture of an account.
func (r *Limiter) seedAccount(ctx context.Context, accountID string, now time.Time) error {
	var snap quota.Snapshot
	if r.seed != nil {
		var err error
		if snap, err = r.seed(ctx, accountID, now); err != nil {
			return fmt.Errorf("%w: seed %s: %w", quota.ErrLimiter, accountID, err)
		}
	}
	k := r.keys(accountID, "", "", "")
	type payload struct {
		Incr [][]any `json:"incr"`
		Res  [][]any `json:"res"`
	}
	p := payload{Incr: [][]any{}, Res: [][]any{}}
	scopeBase := func(scope string) (string, bool) {
		if scope == quota.ScopeAccount {
			return "a", true
		}
		if id, ok := strings.CutPrefix(scope, "key:"); ok {
			return "k:" + id, true
		}
		return "", false
	}
	for scope, w := range snap.Windows {
		sb, ok := scopeBase(scope)
		if !ok {
			continue
		}
		for sec, b := range w {
			if sec <= now.Unix()-quota.WindowSeconds {
				continue
			}
			key := k.base + "w:" + sb
			p.Incr = append(p.Incr, []any{key, "r" + strconv.FormatInt(sec, 10), b.Requests, secs(windowTTL)},
				[]any{key, "t" + strconv.FormatInt(sec, 10), b.Tokens, secs(windowTTL)})
		}
	}
	for scope, periods := range snap.Budgets {
		sb, ok := scopeBase(scope)
		if !ok {
			continue
		}
		for period, b := range periods {
			kind, val, ok := strings.Cut(period, ":")
			if !ok {
				continue
			}
			key, ttl := k.base+"b:"+sb+":d:"+val, secs(dayTTL)
			if kind == "month" {
				key, ttl = k.base+"b:"+sb+":m:"+val, secs(monthTTL)
			}
			p.Incr = append(p.Incr, []any{key, "s", int64(b.Spent), ttl}, []any{key, "r", int64(b.Reserved), ttl})
		}
	}
	for _, res := range snap.Reservations {
		info := strconv.FormatInt(int64(res.Cost), 10) + "|" + res.KeyID + "|" + res.Day + "|" + res.Month
		p.Res = append(p.Res, []any{res.ID, info, res.ExpiresAt.UnixMilli()})
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("%w: seed %s: %w", quota.ErrLimiter, accountID, err)
	}
	if err := seedScript.Run(ctx, r.rdb, []string{k.seeded}, string(raw), k.res, k.resx).Err(); err != nil {
		return fmt.Errorf("%w: seed %s: %w", quota.ErrLimiter, accountID, err)
	}
	return nil
}
