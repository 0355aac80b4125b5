package projections

import "github.com/prometheus/client_golang/prometheus"

// EventsCounter exposes a Set's events counter to the external tests.
func EventsCounter(s *Set) *prometheus.CounterVec { return s.events }
