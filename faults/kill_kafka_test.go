package faults

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tollgate/tollgate/bus"
)

// killKafkaDiagnose says where the jobs of completions that never ended
// are on the Kafka jobs topic, and where the workers' group stands: were
// they never published, or published and not consumed?
func killKafkaDiagnose(brokers []string, s *killState) string {
	stuck := map[string]bool{}
	for id, c := range s.completions {
		if c.outcomes() == 0 {
			stuck[id] = true
		}
	}
	if len(stuck) == 0 || len(brokers) == 0 {
		return ""
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(bus.JobsTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err.Error()
	}
	defer cl.Close()
	var b strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	found := map[string]string{}
	ends := map[int32]int64{}
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			ends[r.Partition] = max(ends[r.Partition], r.Offset+1)
			for id := range stuck {
				if strings.Contains(string(r.Value), id) {
					found[id] += fmt.Sprintf(" p%d@%d", r.Partition, r.Offset)
				}
			}
		})
	}
	published := 0
	for id := range stuck {
		if found[id] != "" {
			published++
		}
	}
	fmt.Fprintf(&b, "  %d stuck completions, %d of them on %s; records per partition %v\n", len(stuck), published, bus.JobsTopic, ends)
	var sample []string
	for id, where := range found {
		sample = append(sample, id+where)
	}
	sort.Strings(sample)
	if len(sample) > 5 {
		sample = sample[:5]
	}
	fmt.Fprintf(&b, "  e.g. %s\n", strings.Join(sample, "; "))
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = "tollgate-workers"
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		return b.String() + "  offset fetch: " + err.Error()
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			fmt.Fprintf(&b, "  group tollgate-workers committed %s p%d @ %d (err %d)\n", t.Topic, p.Partition, p.Offset, p.ErrorCode)
		}
	}
	dreq := kmsg.NewPtrDescribeGroupsRequest()
	dreq.Groups = []string{"tollgate-workers"}
	if dresp, err := dreq.RequestWith(context.Background(), cl); err == nil {
		for _, g := range dresp.Groups {
			fmt.Fprintf(&b, "  group state %s, %d members\n", g.State, len(g.Members))
			for _, m := range g.Members {
				var a kmsg.ConsumerMemberAssignment
				_ = a.ReadFrom(m.MemberAssignment)
				fmt.Fprintf(&b, "    member %s client %s assignment %+v\n", m.MemberID, m.ClientID, a.Topics)
			}
		}
	}
	return b.String()
}
