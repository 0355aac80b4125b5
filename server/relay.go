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

// startRelay runs the relay role: it publishes every committed event to
// the bus, and queued jobs once more on the jobs topic. One relay runs
// across replicas (a leader lock).
func (w *wiring) startRelay() error {
	relay, err := outbox.NewRelay(outbox.RelayConfig{
		Store: w.Store, Publisher: bus.EventPublisher{Publisher: w.pub}, Topic: bus.Topic, Logger: w.logger, Registerer: w.reg,
		Routes: []outbox.Route{{Topic: bus.JobsTopic, Match: bus.IsJob}},
	})
	if err != nil {
		return err
	}
	w.goRun("relay", w.leader(w.run, "tollgate:relay", relay.Run))
	return nil
}
