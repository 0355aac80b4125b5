package llm

import (
	"fmt"
	"sort"
	"time"

	"github.com/tollgate/tollgate/config"
)

// candidate is a deployment of the model being routed.
type candidate struct {
	dep  config.Deployment
	prov Provider
}

// order returns the model's deployments in the order to try them: by
// priority, and by weighted random choice within a priority.
func (r *Router) order(model config.Model) ([]candidate, error) {
	type item struct {
		candidate
		prio, weight int
	}
	items := make([]item, 0, len(model.Deployments))
	for i, d := range model.Deployments {
		p, ok := r.providers[d.Provider]
		if !ok {
			// Validate prevents this; a config edited after NewRouter could not.
			return nil, fmt.Errorf("llm: model %q deployment %d: unknown provider %q", model.Name, i, d.Provider)
		}
		prio := i
		if d.Priority != nil {
			prio = *d.Priority
		}
		items = append(items, item{candidate: candidate{dep: d, prov: p}, prio: prio, weight: max(d.Weight, 1)})
	}
	sort.SliceStable(items, func(a, b int) bool { return items[a].prio < items[b].prio })
	out := make([]candidate, 0, len(items))
	for lo := 0; lo < len(items); {
		hi := lo
		for hi < len(items) && items[hi].prio == items[lo].prio {
			hi++
		}
		group := items[lo:hi]
		for len(group) > 0 {
			total := 0
			for _, it := range group {
				total += it.weight
			}
			if len(group) == 1 {
				out = append(out, group[0].candidate)
				break
			}
			pick, x := len(group)-1, r.rand()*float64(total)
			for k, it := range group {
				if x < float64(it.weight) {
					pick = k
					break
				}
				x -= float64(it.weight)
			}
			out = append(out, group[pick].candidate)
			group = append(group[:pick:pick], group[pick+1:]...)
		}
		lo = hi
	}
	return out, nil
}

// breaker returns the circuit of a deployment, shared by every model that
// uses it.
func (r *Router) breaker(d config.Deployment) *breaker {
	key := d.Provider + "\x00" + d.Model
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.breakers[key]
	if !ok {
		g := r.metrics.state.WithLabelValues(d.Provider, d.Model)
		g.Set(circuitClosed)
		b = &breaker{threshold: r.routing.Cooldown.Failures, cooldown: r.routing.Cooldown.Duration.D(),
			onState: func(s int) { g.Set(float64(s)) }}
		r.breakers[key] = b
	}
	return b
}

// backoff is the full-jitter exponential backoff before retry round n (1, 2...).
func (r *Router) backoff(round int) time.Duration {
	ceil := r.routing.MaxBackoff.D()
	if b := r.routing.BaseBackoff.D(); round < 32 && b<<(round-1) > 0 && b<<(round-1) < ceil {
		ceil = b << (round - 1)
	}
	return time.Duration(r.rand() * float64(ceil))
}
