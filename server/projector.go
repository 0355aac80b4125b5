package server

import (
	"time"

	"github.com/tollgate/tollgate/billing/records"
	"github.com/tollgate/tollgate/completion/jobs"
	"github.com/tollgate/tollgate/usage"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/projections"
	quotastate "github.com/tollgate/tollgate/quota/state"
)

// startProjector runs the projector role: the read models follow the
// event store itself (see projections.Follower). One projector runs
// across replicas (a leader lock).
func (w *wiring) startProjector() error {
	set, err := projections.NewSet(w.Pool, projections.LiveSchema, w.logger, w.reg, ReadModels(w.cfg)(projections.LiveSchema)...)
	if err != nil {
		return err
	}
	follower, err := projections.NewFollower(projections.FollowerConfig{Set: set, Store: w.Store, Logger: w.logger})
	if err != nil {
		return err
	}
	w.goRun("projections", w.leader(w.run, "tollgate:projections", follower.Run))
	go set.WatchLag(w.run, follower.Lag, 5*time.Second)
	return nil
}

// ReadModels returns the projectors of every read model, built on schema.
func ReadModels(cfg *config.Config) func(schema string) []projections.Projector {
	return func(schema string) []projections.Projector {
		ps := []projections.Projector{usage.New(schema), jobs.New(schema)}
		ps = append(ps, records.Projectors(schema, cfg.Billing.Window.D(), cfg.Billing.Unit)...)
		return append(ps, quotastate.New(schema))
	}
}
