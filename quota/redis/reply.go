package redis

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tollgate/tollgate/money"
	"github.com/tollgate/tollgate/quota"
)

// admitReply splits the admit script's reply into its figures and the
// reservations it released on expiry.
func admitReply(reply []any) ([]int64, []quota.Reservation, error) {
	var out []int64
	var expired []quota.Reservation
	for i := 0; i < len(reply); i++ {
		switch v := reply[i].(type) {
		case int64:
			out = append(out, v)
		case string:
			if i+1 >= len(reply) {
				return nil, nil, fmt.Errorf("unexpected reply %v", reply)
			}
			info, _ := reply[i+1].(string)
			res, ok := parseReservation(v, info)
			if !ok {
				return nil, nil, fmt.Errorf("unexpected reservation %q %q", v, info)
			}
			expired = append(expired, res)
			i++
		default:
			return nil, nil, fmt.Errorf("unexpected reply %v", reply)
		}
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("empty reply")
	}
	return out, expired, nil
}

// parseReservation reads a reservation's info ("cost|key|day|month").
func parseReservation(id, info string) (quota.Reservation, bool) {
	f := strings.Split(info, "|")
	if len(f) != 4 {
		return quota.Reservation{}, false
	}
	cost, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return quota.Reservation{}, false
	}
	return quota.Reservation{ID: id, Cost: money.NanoUSD(cost), KeyID: f[1], Day: f[2], Month: f[3]}, true
}

func parseWindow(h map[string]string) map[int64]quota.Bucket {
	w := map[int64]quota.Bucket{}
	for f, v := range h {
		if len(f) < 2 {
			continue
		}
		sec, err1 := strconv.ParseInt(f[1:], 10, 64)
		n, err2 := strconv.ParseInt(v, 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		b := w[sec]
		if f[0] == 'r' {
			b.Requests = n
		} else {
			b.Tokens = n
		}
		w[sec] = b
	}
	return w
}

func parseBudget(v []any) quota.Budget {
	get := func(i int) money.NanoUSD {
		if i >= len(v) {
			return 0
		}
		s, _ := v[i].(string)
		n, _ := strconv.ParseInt(s, 10, 64)
		return money.NanoUSD(n)
	}
	return quota.Budget{Spent: get(0), Reserved: get(1)}
}
