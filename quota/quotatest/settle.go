package quotatest

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/quota"
)

// settlement: a settlement retried (its first attempt landed, its reply
// was lost) counts once; a release that ran before its admission (sent before a
// pause, run after it) keeps the admission from reserving; Check decides
// without counting.
func settlement(t *testing.T, ad Adapter) {
	t.Run("a settlement applied twice counts once", func(t *testing.T) {
		l := ad.New(t, nil)
		a := Admission("i1", T0)
		a.Account.DailyBudget, a.Cost = 5000, 1000
		d := MustAdmit(t, l, a)
		first := Settle(t, l, a, d, 700, 10, T0)
		again := Settle(t, l, a, d, 700, 10, T0.Add(time.Second))
		if first.Duplicate || !again.Duplicate {
			t.Fatalf("first %+v, again %+v", first, again)
		}
		u, err := l.Peek(context.Background(), "acc_1", "key_1", T0)
		if err != nil {
			t.Fatal(err)
		}
		if u.Account.Day.Spent != 700 || u.Account.Day.Reserved != 0 || u.Key.Month.Spent != 700 {
			t.Fatalf("after two settlements of one reservation: %+v", u)
		}
	})
	t.Run("a settlement after the reservation expired still spends", func(t *testing.T) {
		l := ad.New(t, nil)
		a := Admission("e1", T0)
		a.Account.DailyBudget, a.Cost, a.TTL = 5000, 1000, time.Minute
		d := MustAdmit(t, l, a)
		b := Admission("e2", T0.Add(2*time.Minute))
		b.Account.DailyBudget, b.Cost = 5000, 1000
		// b's admission sweeps e1's expired reservation and reports it,
		// so its spend can be re-derived from the event log.
		if db := MustAdmit(t, l, b); len(db.Expired) != 1 || db.Expired[0].ID != "e1" || db.Expired[0].Cost != 1000 ||
			db.Expired[0].KeyID != "key_1" || db.Expired[0].Day != d.Day || db.Expired[0].Month != d.Month {
			t.Fatalf("expired: %+v", db.Expired)
		}
		Settle(t, l, a, d, 400, 10, T0.Add(3*time.Minute))
		u, _ := l.Peek(context.Background(), "acc_1", "key_1", T0.Add(3*time.Minute))
		if u.Account.Day.Spent != 400 || u.Account.Day.Reserved != 1000 {
			t.Fatalf("late settlement: %+v", u.Account.Day)
		}
	})
	t.Run("an admission after its release reserves nothing", func(t *testing.T) {
		l := ad.New(t, nil)
		a := Admission("r1", T0)
		a.Account.DailyBudget, a.Cost = 5000, 1000
		day, month, _, _ := quota.Periods(T0)
		Settle(t, l, a, quota.Decision{Day: day, Month: month}, 0, 0, T0)
		if _, err := l.Admit(context.Background(), a); err == nil {
			t.Fatal("an admission whose release ran first was admitted")
		}
		u, _ := l.Peek(context.Background(), "acc_1", "key_1", T0)
		if u.Account.Day.Reserved != 0 || u.Account.Day.Spent != 0 {
			t.Fatalf("after the late admission: %+v", u.Account.Day)
		}
	})
}

// check: Check decides like Admit and counts nothing.
func check(t *testing.T, ad Adapter) {
	l := ad.New(t, nil)
	a := Admission("k1", T0)
	a.Key.RequestsPerMinute, a.Account.DailyBudget = 2, 1500
	for i := 0; i < 3; i++ {
		if d, err := l.Check(context.Background(), quota.MinimalRequest(a)); err != nil || !d.Allowed {
			t.Fatalf("check %d: %+v %v", i, d, err)
		}
	}
	u, _ := l.Peek(context.Background(), "acc_1", "key_1", T0)
	if u.Key.Requests != 0 || u.Account.Day.Reserved != 0 {
		t.Fatalf("check counted: %+v", u)
	}
	MustAdmit(t, l, a)
	b := Admission("k2", T0)
	b.Key.RequestsPerMinute, b.Account.DailyBudget, b.Cost = 2, 1500, 100
	MustAdmit(t, l, b)
	d, err := l.Check(context.Background(), quota.MinimalRequest(b))
	if err != nil || d.Allowed || d.Reason != quota.KeyRequestsPerMinute || d.RetryAfter <= 0 {
		t.Fatalf("check at the rate limit: %+v %v", d, err)
	}
	c := Admission("k3", T0)
	c.Account.DailyBudget = 1100 // 1000 + 100 reserved: nothing left
	if d, _ := l.Check(context.Background(), quota.MinimalRequest(c)); d.Allowed || d.Reason != quota.AccountDailyBudget {
		t.Fatalf("check on a spent budget: %+v", d)
	}
}
