package bus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events"
)

func TestPoisonMessageGoesToDeadLetterSQL(t *testing.T) {
	t.Parallel()
	testPoison(t, sqlConfig(t))
}

func TestPoisonMessageGoesToDeadLetterKafka(t *testing.T) {
	t.Parallel()
	testPoison(t, kafkaConfig(t))
}

func testPoison(t *testing.T, cfg bus.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := bus.NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	// acc_bad's events always fail, acc_panic's panic; the others succeed.
	evs := []events.Envelope{
		testEvent(t, "acc_1", 1), testEvent(t, "acc_bad", 2), testEvent(t, "acc_1", 3),
		testEvent(t, "acc_panic", 4), testEvent(t, "acc_1", 5),
	}
	publishAll(t, pub, evs)

	reg := prometheus.NewRegistry()
	r, err := bus.NewRouter(bus.RouterConfig{
		DeadLetterPublisher: pub,
		MaxRetries:          2,
		InitialInterval:     time.Millisecond,
		MaxInterval:         5 * time.Millisecond,
		Logger:              testLogger(t),
		Registerer:          reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := bus.NewSubscriber(cfg, "worker")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	attempts := map[string]int{}
	var handled []string
	done := make(chan struct{})
	r.AddConsumerHandler("worker", bus.Topic, sub, func(m *message.Message) error {
		e, err := bus.FromMessage(m)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		attempts[e.Metadata.AccountID]++
		switch e.Metadata.AccountID {
		case "acc_bad":
			return errors.New("cannot handle acc_bad")
		case "acc_panic":
			panic("handler bug")
		}
		handled = append(handled, e.EventID.String())
		if len(handled) == 3 {
			close(done)
		}
		return nil
	})
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-runErr; err != nil {
			t.Error(err)
		}
	}()

	dlSub, err := bus.NewSubscriber(cfg, "dead-letter-reader")
	if err != nil {
		t.Fatal(err)
	}
	defer dlSub.Close()
	dl, err := dlSub.Subscribe(ctx, bus.DeadLetterTopic)
	if err != nil {
		t.Fatal(err)
	}
	dead := map[string]*message.Message{}
	for _, m := range receive(t, dl, 2) {
		e, err := bus.FromMessage(m)
		if err != nil {
			t.Fatalf("dead letter does not carry the event: %v", err)
		}
		dead[e.Metadata.AccountID] = m
		if m.Metadata.Get("ce_id") != e.EventID.String() {
			t.Fatalf("dead letter lost its CloudEvents attributes: %v", m.Metadata)
		}
	}
	if reason := dead["acc_bad"].Metadata.Get(bus.MetaReasonPoisoned); !strings.Contains(reason, "cannot handle acc_bad") {
		t.Fatalf("reason %q", reason)
	}
	if reason := dead["acc_panic"].Metadata.Get(bus.MetaReasonPoisoned); !strings.Contains(reason, "handler bug") {
		t.Fatalf("reason %q", reason)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("messages after the poison ones were not handled")
	}
	mu.Lock()
	if attempts["acc_bad"] != 3 || attempts["acc_panic"] != 3 {
		t.Errorf("attempts %v, want 3 (1 + 2 retries) for each poison message", attempts)
	}
	mu.Unlock()

	// The last handler's outcome is counted once it returned, just after
	// it closed done: wait (bounded) for the counts.
	var counts map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		counts = map[string]float64{}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "tollgate_bus_messages_handled_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				counts[label(m, "handler")+"/"+label(m, "outcome")] = m.GetCounter().GetValue()
			}
		}
		if (counts["worker/ok"] == 3 && counts["worker/dead_lettered"] == 2) || time.Now().After(deadline) {
			break
		}
	}
	if counts["worker/ok"] != 3 || counts["worker/dead_lettered"] != 2 {
		t.Fatalf("metrics %v, want 3 ok and 2 dead_lettered", counts)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
