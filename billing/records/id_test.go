package records

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/pgtest"
)

func TestBillingRecordIDMatchesSQL(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ws := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	var got string
	if err := pool.QueryRow(context.Background(), `SELECT `+recordIDSQL("$1::text", rfc3339SQL("$2::timestamptz"), "$3::int"),
		"acc_é", ws, 7).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := billing.RecordID("acc_é", ws, 7); got != want || len(got) != 27 {
		t.Errorf("SQL id %s, Go id %s", got, want)
	}
}
