package quota_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/quota"
)

// One settlement, whoever asks: the event recorded with the outcome and
// the limiter's settlement carry the same figures.
func TestOutcomeSettlementAndEventAgree(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	now := at.Add(time.Minute)
	o := quota.Outcome{ID: "c1", AccountID: "acc_1", KeyID: "key_1", RequestedAt: at,
		Reservation: events.QuotaReserved{CostNanoUSD: 5000, Tokens: 1200, Day: "2026-03-14", Month: "2026-03"}}
	failed := quota.Settlement{ID: "c1", AccountID: "acc_1", KeyID: "key_1", Reserved: 5000, ReservedTokens: 1200, At: at,
		Day: "2026-03-14", Month: "2026-03", Now: now}
	if got := o.Settlement(now); got != failed {
		t.Errorf("failed: %+v, want %+v", got, failed)
	}
	if got, want := o.Event(events.ReleaseAbandoned), (events.QuotaReleased{CompletionID: "c1", AccountID: "acc_1", KeyID: "key_1",
		ReservedNanoUSD: 5000, ReservedTokens: 1200, Reason: events.ReleaseAbandoned, Day: "2026-03-14", Month: "2026-03"}); !reflect.DeepEqual(got, want) {
		t.Errorf("failed event: %+v, want %+v", got, want)
	}
	o.Succeeded = &events.CompletionSucceeded{CostNanoUSD: 1800, Usage: events.Usage{TotalTokens: 300}}
	succeeded := failed
	succeeded.Cost, succeeded.Tokens = 1800, 300
	if got := o.Settlement(now); got != succeeded {
		t.Errorf("succeeded: %+v, want %+v", got, succeeded)
	}
	if got, want := o.Event(""), (events.QuotaSettled{CompletionID: "c1", AccountID: "acc_1", KeyID: "key_1", ReservedNanoUSD: 5000,
		CostNanoUSD: 1800, ReservedTokens: 1200, Tokens: 300, Day: "2026-03-14", Month: "2026-03"}); !reflect.DeepEqual(got, want) {
		t.Errorf("succeeded event: %+v, want %+v", got, want)
	}
	a := quota.Admission{ID: "c2", AccountID: "acc_1", KeyID: "key_1", Tokens: 90, Cost: 700, Now: at}
	if got, want := quota.Release(a, now), (quota.Settlement{ID: "c2", AccountID: "acc_1", KeyID: "key_1", Reserved: 700, ReservedTokens: 90,
		At: at, Day: "2026-03-14", Month: "2026-03", Now: now}); got != want {
		t.Errorf("release: %+v, want %+v", got, want)
	}
}
