package billing

import (
	"fmt"
	"time"
)

// ParsePeriod parses a billing period "YYYY-MM" into its UTC bounds.
func ParsePeriod(period string) (from, to time.Time, err error) {
	from, err = time.Parse("2006-01", period)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("period %q: want YYYY-MM, e.g. 2026-11: %w", period, err)
	}
	return from, from.AddDate(0, 1, 0), nil
}
