package pitr

import (
	"context"
	"fmt"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/sirupsen/logrus"
)

// Guard keeps the server's disk from filling when the stream cannot
// write (the bucket is unreachable, no worker holds the stream): the
// slot then holds WAL on the server. Past the source's slotAlertBytes
// it reports (log, metric, alert rule); past slotMaxBytes it drops the
// slot, so the server frees the WAL rather than stop, and the stream
// starts over with a gap that the next base backup closes. Every worker
// runs it for every pitr source, lease or not: the holder may be the
// one that cannot reach the bucket.
type Guard struct {
	Cluster string
	Source  engines.Source
	Log     logrus.FieldLogger
	// Observe, when set, sees every reading: the WAL the slot holds back
	// and the alert limit.
	Observe func(lagBytes, alertBytes int64)
	// Dropped, when set, is called after the slot was dropped.
	Dropped func()
}

// GuardState is what one pass saw and did.
type GuardState struct {
	LagBytes   int64
	AlertBytes int64
	MaxBytes   int64
	Alert      bool
	Dropped    bool
}

// RunOnce reads the slot and acts on its lag.
func (g *Guard) RunOnce(ctx context.Context) (GuardState, error) {
	_, alert, hard, err := postgres.PITR(g.Source)
	if err != nil {
		return GuardState{}, err
	}
	st, err := postgres.Slot(ctx, g.Source)
	if err != nil {
		return GuardState{}, err
	}
	gs := GuardState{LagBytes: st.LagBytes, AlertBytes: alert, MaxBytes: hard}
	if g.Observe != nil {
		g.Observe(st.LagBytes, alert)
	}
	log := g.Log
	if log == nil {
		log = engines.DiscardLog()
	}
	log = log.WithFields(logrus.Fields{"source": g.Source.Name, "slot": postgres.SlotName(g.Source.Name), "lag_bytes": st.LagBytes})
	switch {
	case !st.Exists:
		return gs, nil
	case st.LagBytes >= hard:
		if err := postgres.DropSlot(ctx, g.Source); err != nil {
			return gs, err
		}
		gs.Dropped = true
		if g.Dropped != nil {
			g.Dropped()
		}
		log.WithField("max_bytes", hard).Error("dropped the WAL stream's replication slot: it held more WAL than slotMaxBytes; point-in-time restores need a base backup taken after now")
	case st.LagBytes >= alert:
		gs.Alert = true
		log.WithField("alert_bytes", alert).Warn(fmt.Sprintf("the WAL stream's slot holds back more WAL than slotAlertBytes; it is dropped at slotMaxBytes (%d)", hard))
	}
	return gs, nil
}
