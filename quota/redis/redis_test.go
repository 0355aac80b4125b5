package redis_test

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/quota/quotatest"
	"github.com/tollgate/tollgate/quota/redis"
	"github.com/tollgate/tollgate/redistest"
)

// The Redis limiter keeps the contract, reseeding after a flush included.
func TestContract(t *testing.T) {
	t.Parallel()
	var rdb *goredis.Client
	var prefix string
	quotatest.Run(t, quotatest.Adapter{
		New: func(t *testing.T, seed quota.Seeder) quota.Limiter {
			rdb, prefix = redistest.Shared(t, 64)
			return redis.New(rdb, prefix, seed)
		},
		Flush: func(t *testing.T) {
			if err := redistest.DeletePrefix(context.Background(), rdb, prefix); err != nil {
				t.Fatal(err)
			}
		},
	})
}
