package quota_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The quota decisions and admission control import no driver: the
// limiter's store (Redis), the read model's (PostgreSQL) and HTTP live in
// the adapters and the edge.
func TestNoDriverInTheDomain(t *testing.T) {
	t.Parallel()
	forbidden := []string{"github.com/jackc/pgx", "github.com/redis/go-redis", "github.com/IBM/sarama",
		"github.com/ThreeDotsLabs/watermill", "github.com/stripe/stripe-go", "net/http"}
	for _, pkg := range []string{"github.com/tollgate/tollgate/quota", "github.com/tollgate/tollgate/quota/admission"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
