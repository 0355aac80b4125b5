package server

import (
	"errors"
	"time"

	"github.com/tollgate/tollgate/bus"
)

// defaultWorkerConcurrency is Options.WorkerConcurrency's default.
const defaultWorkerConcurrency = 256

// startWorker runs the worker role: it consumes queued jobs from the bus
// and executes them, and runs the reaper and the callback dispatcher
// (startJobs).
func (w *wiring) startWorker() (err error) {
	if w.router, err = bus.NewRouter(bus.RouterConfig{DeadLetterPublisher: w.pub, Logger: w.logger, Registerer: w.reg}); err != nil {
		return err
	}
	conc := w.opts.WorkerConcurrency
	if conc == 0 {
		conc = defaultWorkerConcurrency
	}
	w.worker = bus.NewWorker(w.run, w.exec, w.cfg.Env.InstanceID, conc, w.logger)
	sub, err := bus.NewSubscriber(w.bus, "tollgate-workers")
	if err != nil {
		return err
	}
	w.router.AddConsumerHandler("worker", bus.JobsTopic, sub, w.worker.Handle)
	w.goRun("bus router", func() error { return w.router.Run(w.run) })
	select {
	case <-w.router.Running():
	case <-time.After(30 * time.Second):
		return errors.New("bus router did not start within 30s")
	}
	return w.startJobs()
}
