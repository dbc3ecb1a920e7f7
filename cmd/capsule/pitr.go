package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/metrics"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/jackc/pglogrepl"
	"github.com/spf13/cobra"
)

// pitrFlags are restore's point-in-time flags.
type pitrFlags struct {
	source, at, lsn, toDir, scratch string
	latest                          bool
}

func (p *pitrFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.source, "source", "", "point-in-time restore of this source (pitr: true) instead of a backup id")
	f.StringVar(&p.at, "time", "", "with --source: recover to this moment (RFC 3339, e.g. 2026-12-07T05:03:50Z, or \"2006-01-02 15:04:05\" in UTC)")
	f.StringVar(&p.lsn, "lsn", "", "with --source: recover to this WAL position (e.g. 0/3000060)")
	f.BoolVar(&p.latest, "latest", false, "with --source: recover to the latest point the bucket holds")
	f.StringVar(&p.toDir, "to-dir", "", "with --source: write a complete data directory here (for a new server) instead of restoring into --to")
	f.StringVar(&p.scratch, "scratch", "", "with --source: where the temporary server runs (default $TMPDIR); room for the whole cluster")
}

func (p *pitrFlags) used() bool {
	return p.source != "" || p.at != "" || p.lsn != "" || p.latest || p.toDir != "" || p.scratch != ""
}

// target reads --time, --lsn or --latest.
func (p *pitrFlags) target() (pitr.Target, error) {
	var t pitr.Target
	if p.at != "" {
		at, err := parseTime(p.at)
		if err != nil {
			return t, fmt.Errorf("--time: %w", err)
		}
		t.Time = at
	}
	if p.lsn != "" {
		l, err := pglogrepl.ParseLSN(p.lsn)
		if err != nil || l == 0 {
			return t, fmt.Errorf("--lsn: %q is not a WAL position such as 0/3000060", p.lsn)
		}
		t.LSN = l
	}
	t.Latest = p.latest
	return t, t.Validate()
}

func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time such as 2026-12-07T05:03:50Z", s)
}

// runPITR restores a source to a point in time, here, in this process:
// the temporary server runs on this host's scratch space.
func (a *app) runPITR(ctx context.Context, p *pitrFlags, to string, options map[string]string, dropPrevious bool) error {
	if p.source == "" {
		return usageErr(fmt.Errorf("--time, --lsn, --latest, --to-dir and --scratch go with --source"))
	}
	if dropPrevious {
		return usageErr(fmt.Errorf("--drop-previous does not apply to a point-in-time restore (capsule prune-previous removes the kept copy)"))
	}
	t, err := p.target()
	if err != nil {
		return usageErr(err)
	}
	if p.toDir != "" && to != "" {
		return usageErr(fmt.Errorf("give --to or --to-dir, not both"))
	}
	cfg := pitr.RestoreConfig{Cluster: a.cfg.Cluster, Source: p.source, Target: t, DataDir: p.toDir,
		Scratch: p.scratch, ID: requests.NewID(), Log: a.log, Options: options}
	if p.toDir == "" {
		name := to
		if name == "" {
			name = p.source
		}
		src, err := a.cfg.Lookup(name)
		if err != nil {
			return usageErr(fmt.Errorf("--to: %w", err))
		}
		if src.Engine != "postgres" {
			return usageErr(fmt.Errorf("--to: source %s is of engine %s; point-in-time restores go into postgres", name, src.Engine))
		}
		if err := engines.CheckRestoreOptions(postgres.New(), options); err != nil {
			return usageErr(err)
		}
		cfg.Into = &src
	}
	b, err := a.openBucket(ctx)
	if err != nil {
		return err
	}
	cfg.Bucket = b
	res, err := pitr.Restore(ctx, cfg)
	if err != nil {
		return &exitError{code: exitEndedBadly, err: err}
	}
	data, _ := json.MarshalIndent(res, "", "  ")
	fmt.Fprintln(a.out, strings.TrimSpace(string(data)))
	return nil
}

// newPITRJobs returns the worker's point-in-time recovery jobs: every
// stream and slot guard it runs, of its configuration's sources and of
// the CnvrgApp plans alike, starts and stops there, reporting to reg.
func (a *app) newPITRJobs(holder string, lease time.Duration, reg *metrics.Registry) *pitr.Jobs {
	js := &pitr.Jobs{Holder: holder, Lease: lease, Log: a.log}
	if reg != nil {
		js.Written = func(j pitr.Job, _ pitr.Segment, h pitr.Header) {
			reg.ObservePITR(j.Cluster, j.Source.Name, h.ServerTime)
		}
		js.Observe = func(j pitr.Job, lag, alert int64) { reg.ObserveSlot(j.Cluster, j.Source.Name, lag, alert) }
		js.Dropped = func(j pitr.Job) { reg.SlotDropped(j.Cluster, j.Source.Name) }
		js.Stopped = func(j pitr.Job) { reg.ForgetPITR(j.Cluster, j.Source.Name) }
	}
	return js
}

// configPITRJobs are the jobs of the configured postgres sources with
// pitr: true, streaming into b (the worker's own bucket), by name
// ("config/<source>"). A source whose settings do not parse is an error.
func (a *app) configPITRJobs(b bucket.Bucket) (map[string]pitr.Job, error) {
	jobs := map[string]pitr.Job{}
	for _, name := range a.cfg.SourceNames() {
		src, err := a.cfg.Lookup(name)
		if err != nil || src.Engine != "postgres" {
			continue
		}
		on, _, _, err := postgres.PITR(src)
		if err != nil {
			return nil, err
		}
		if on {
			jobs["config/"+name] = pitr.Job{Bucket: b, Cluster: a.cfg.Cluster, Source: src}
		}
	}
	return jobs, nil
}

// startPITR starts, for every configured postgres source with pitr:
// true, its WAL stream (which runs on whichever worker holds the
// stream's lease) and the slot guard (which runs on every worker). The
// returned function stops them and waits.
func (a *app) startPITR(ctx context.Context, b bucket.Bucket, holder string, lease time.Duration, reg *metrics.Registry) (func(), error) {
	jobs, err := a.configPITRJobs(b)
	if err != nil {
		return nil, err
	}
	js := a.newPITRJobs(holder, lease, reg)
	if err := js.Sync(ctx, jobs); err != nil {
		js.Stop()
		return nil, err
	}
	return js.Stop, nil
}
