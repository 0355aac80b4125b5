package server

import (
	"github.com/tollgate/tollgate/bus"
	"github.com/tollgate/tollgate/events/outbox"
)

// openPublisher opens the bus publisher the relay and the worker share.
func (w *wiring) openPublisher() (err error) {
	if w.pub, err = bus.NewPublisher(w.bus); err != nil {
		return err
	}
	w.closers = append(w.closers, w.pub.Close)
	return nil
}

// startRelay runs the relay role: it publishes queued jobs on the jobs
// topic and, when the bus publishes all events (TOLLGATE_BUS_PUBLISH, by
// default on Kafka), every committed event to bus.Topic before them. One
// relay runs across replicas (a leader lock).
func (w *wiring) startRelay() error {
	relay, err := outbox.NewRelay(outbox.RelayConfig{
		Store: w.Store, Publisher: bus.EventPublisher{Publisher: w.pub}, Topic: bus.Topic, Logger: w.logger, Registerer: w.reg,
		Routes:     []outbox.Route{{Topic: bus.JobsTopic, Match: bus.IsJob, Types: bus.JobTypes()}},
		RoutesOnly: !w.cfg.Env.PublishAllEvents(),
	})
	if err != nil {
		return err
	}
	w.goRun("relay", w.leader(w.run, "tollgate:relay", relay.Run))
	return nil
}
