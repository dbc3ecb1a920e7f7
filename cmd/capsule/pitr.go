package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/index"
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
	latest, local                   bool
}

func (p *pitrFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.source, "source", "", "point-in-time restore of this source (pitr: true) instead of a backup id")
	f.StringVar(&p.at, "time", "", "with --source: recover to this moment (RFC 3339, e.g. 2026-12-07T05:03:50Z, or \"2006-01-02 15:04:05\" in UTC)")
	f.StringVar(&p.lsn, "lsn", "", "with --source: recover to this WAL position (e.g. 0/3000060)")
	f.BoolVar(&p.latest, "latest", false, "with --source: recover to the latest point the bucket holds")
	f.StringVar(&p.toDir, "to-dir", "", "with --source: write a complete data directory on this host (for a new server) instead of restoring into --to; runs here, in this process")
	f.BoolVar(&p.local, "local", false, "with --source: run the restore here, in this process, instead of asking a worker (no worker runs, or it cannot reach the bucket)")
	f.StringVar(&p.scratch, "scratch", "", "with --local or --to-dir: where the temporary server runs (default $TMPDIR); room for the whole cluster (a worker uses its worker.scratch)")
}

func (p *pitrFlags) used() bool {
	return p.source != "" || p.at != "" || p.lsn != "" || p.latest || p.toDir != "" || p.scratch != "" || p.local
}

// here says whether the restore runs in this process: --local, or
// --to-dir (a data directory on this host).
func (p *pitrFlags) here() bool { return p.local || p.toDir != "" }

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
		return usageErr(fmt.Errorf("--time, --lsn, --latest, --to-dir, --local and --scratch go with --source"))
	}
	t, err := p.target()
	if err != nil {
		return usageErr(err)
	}
	if p.toDir != "" && to != "" {
		return usageErr(fmt.Errorf("give --to or --to-dir, not both"))
	}
	if p.toDir != "" && dropPrevious {
		return usageErr(fmt.Errorf("--drop-previous goes with a restore into a server, not --to-dir"))
	}
	cfg := pitr.RestoreConfig{Cluster: a.cfg.Cluster, Source: p.source, Target: t, DataDir: p.toDir,
		Scratch: p.scratch, ID: requests.NewID(), Log: a.log, Options: options, DropPrevious: dropPrevious}
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
	_, trust, err := a.cfg.Signing()
	if err != nil {
		return err
	}
	cfg.Trust = trust.WithUnsigned(a.allowUnsigned)
	if cfg.Identities, err = a.pitrIdentities(ctx, p.source, cfg.Into); err != nil {
		return err
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

// submitPITR writes a point-in-time Restore request for a worker to
// run (on its own scratch space), and follows it as every request.
func (a *app) submitPITR(ctx context.Context, p *pitrFlags, to string, options map[string]string, dropPrevious bool, s submitFlags) error {
	if p.source == "" {
		return usageErr(fmt.Errorf("--time, --lsn, --latest, --to-dir, --local and --scratch go with --source"))
	}
	if p.scratch != "" {
		return usageErr(fmt.Errorf("--scratch goes with --local or --to-dir: a worker runs the temporary server on its own worker.scratch"))
	}
	t, err := p.target()
	if err != nil {
		return usageErr(err)
	}
	f, err := s.validate()
	if err != nil {
		return err
	}
	pt := &requests.PointInTime{Source: p.source, Time: t.Time, Latest: t.Latest}
	if t.LSN != 0 {
		pt.LSN = t.LSN.String()
	}
	req := &requests.Request{Kind: requests.KindRestore, ID: s.id, Cluster: a.cfg.Cluster, PointInTime: pt,
		Target: to, DropPrevious: dropPrevious, Options: options, AllowUnsigned: a.allowUnsigned}
	if err := a.validateRequest(req); err != nil {
		return err
	}
	if !s.noCheck {
		if err := a.checkPITR(req); err != nil {
			return err
		}
	}
	b, err := a.openBucket(ctx)
	if err != nil {
		return err
	}
	return a.submit(ctx, b, req, s, f)
}

// checkPITR checks at the prompt what a worker would check first: a
// configured target (default the source) and source of engine
// postgres, and options it takes. A name the config file does not have
// may be a worker's (the scanner's); it is left to the worker.
func (a *app) checkPITR(req *requests.Request) error {
	target, field := req.SourceName(), "--to"
	if req.Target == "" {
		field = "--source"
	}
	for _, c := range []struct{ flag, name string }{{field, target}, {"--source", req.PointInTime.Source}} {
		if _, ok := a.cfg.Sources[c.name]; !ok {
			continue
		}
		src, err := a.cfg.Lookup(c.name)
		if err != nil {
			return usageErr(fmt.Errorf("%s: %w", c.flag, err))
		}
		if src.Engine != "postgres" {
			return usageErr(fmt.Errorf("%s: source %s is of engine %s; point-in-time restores go into postgres", c.flag, c.name, src.Engine))
		}
	}
	if err := engines.CheckRestoreOptions(postgres.New(), req.Options); err != nil {
		return usageErr(err)
	}
	return nil
}

// pitrIdentities gathers the identities that open a source's encrypted
// base backups and WAL: the worker's own, the source's and the target's,
// as a worker's restore does.
func (a *app) pitrIdentities(ctx context.Context, source string, into *engines.Source) (*crypt.Identities, error) {
	ids, err := a.cfg.Identities(ctx)
	if err != nil {
		return nil, err
	}
	srcs := []engines.Source{}
	if src, err := a.cfg.Lookup(source); err == nil {
		srcs = append(srcs, src)
	}
	if into != nil && into.Name != source {
		srcs = append(srcs, *into)
	}
	for _, s := range srcs {
		if s.Identities == nil {
			continue
		}
		found, err := s.Identities(ctx)
		if err != nil {
			return nil, fmt.Errorf("source %s's identities: %w", s.Name, err)
		}
		for origin, data := range found {
			more, err := crypt.ParseIdentities(data, origin)
			if err != nil {
				return nil, fmt.Errorf("source %s: %w", s.Name, err)
			}
			ids = ids.Merge(more)
		}
	}
	return ids, nil
}

// newPITRJobs returns the worker's point-in-time recovery jobs: every
// stream and slot guard it runs, of its configuration's sources and of
// the CnvrgApp plans alike, starts and stops there, reporting to reg.
// Their WAL is encrypted to the source's recipients (else the worker's)
// and signed with signer when it is set, like the sources' backups.
func (a *app) newPITRJobs(holder string, lease time.Duration, reg *metrics.Registry, signer *index.Signer) *pitr.Jobs {
	js := &pitr.Jobs{Holder: holder, Lease: lease, Log: a.log,
		Recipients: a.cfg.Worker.Encryption.Recipients, Signer: signer, RetainFor: a.cfg.Worker.RetainFor}
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
// Their WAL is encrypted and signed as newPITRJobs says.
func (a *app) startPITR(ctx context.Context, b bucket.Bucket, holder string, lease time.Duration, reg *metrics.Registry, signer *index.Signer) (func(), error) {
	jobs, err := a.configPITRJobs(b)
	if err != nil {
		return nil, err
	}
	js := a.newPITRJobs(holder, lease, reg, signer)
	if err := js.Sync(ctx, jobs); err != nil {
		js.Stop()
		return nil, err
	}
	return js.Stop, nil
}
