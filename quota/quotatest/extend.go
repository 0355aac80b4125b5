package quotatest

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/quota"
)

// extend: an extended reservation is still held (and counted) past its first
// end; a settled one is not brought back; an extension never shortens.
func extend(t *testing.T, ad Adapter) {
	ctx := context.Background()
	l := ad.New(t, nil)
	a := Admission("x1", T0)
	a.Account.DailyBudget, a.Cost, a.TTL = 1500, 1000, time.Minute
	d := MustAdmit(t, l, a)
	held, err := l.Extend(ctx, quota.Extension{ID: "x1", AccountID: "acc_1", ExpiresAt: T0.Add(time.Hour), Now: T0.Add(30 * time.Second)})
	if err != nil || !held {
		t.Fatalf("Extend = %v, %v; want held", held, err)
	}
	if held, err := l.Extend(ctx, quota.Extension{ID: "x1", AccountID: "acc_1", ExpiresAt: T0.Add(2 * time.Second), Now: T0.Add(31 * time.Second)}); err != nil || !held {
		t.Fatalf("shorter Extend = %v, %v", held, err)
	}
	// Past the reservation's first end, another admission still
	// finds it: 1000 reserved + 1000 > 1500.
	b := Admission("x2", T0.Add(10*time.Minute))
	b.Account.DailyBudget, b.Cost = 1500, 1000
	db, err := l.Admit(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if db.Allowed || len(db.Expired) != 0 {
		t.Fatalf("admission past the first end of an extended reservation: %+v; want refused, nothing expired", db)
	}
	Settle(t, l, a, d, 400, 10, T0.Add(11*time.Minute))
	if held, err := l.Extend(ctx, quota.Extension{ID: "x1", AccountID: "acc_1", ExpiresAt: T0.Add(2 * time.Hour), Now: T0.Add(12 * time.Minute)}); err != nil || held {
		t.Fatalf("Extend of a settled reservation = %v, %v; want not held", held, err)
	}
	u, err := l.Peek(ctx, "acc_1", "key_1", T0.Add(12*time.Minute))
	if err != nil || u.Account.Day.Spent != 400 || u.Account.Day.Reserved != 0 {
		t.Fatalf("after settlement: %+v, %v", u.Account.Day, err)
	}
}
