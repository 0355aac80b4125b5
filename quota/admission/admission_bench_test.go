package admission_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/llmtest"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/admission"
	"github.com/tollgate/tollgate/quota/memory"
	qredis "github.com/tollgate/tollgate/quota/redis"
	"github.com/tollgate/tollgate/redistest"
)

// BenchmarkAdmit measures one admission (rate limits, the worst-case
// token estimate, the budget reservation) and its settlement, on the
// in-process limiter and on Redis, from many goroutines on 64 accounts:
//
//	go test -run '^$' -bench Admit -count 5 ./quota/admission | benchstat -
func BenchmarkAdmit(b *testing.B) {
	cfg := llmtest.Config(b, "http://127.0.0.1:1", "1000", "2000", "")
	model, _ := cfg.Model("m")
	body := []byte(`{"model":"m","max_tokens":64,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark, please."}]}`)
	for _, lim := range []struct {
		name string
		make func(b *testing.B) quota.Limiter
	}{
		{"memory", func(*testing.B) quota.Limiter { return memory.New(nil) }},
		{"redis", func(b *testing.B) quota.Limiter {
			rdb, prefix := redistest.Shared(b, 64)
			return qredis.New(rdb, prefix, nil)
		}},
	} {
		b.Run(lim.name, func(b *testing.B) {
			a := admission.New(admission.Config{Config: cfg, Service: noCompletions{}, Limiter: lim.make(b), Now: time.Now})
			ctx := context.Background()
			var n atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					p := admission.Principal{AccountID: fmt.Sprintf("acc_%d", i%64), KeyID: fmt.Sprintf("key_%d", i%64), Plan: "free"}
					adm, err := a.Admit(ctx, p, model, fmt.Sprintf("c%d", i), body)
					if err != nil {
						b.Fatal(err)
					}
					a.Release(ctx, adm)
				}
			})
		})
	}
}
