package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/maintenance"
	"github.com/cnvrg/capsule/metrics"
	"github.com/cnvrg/capsule/schedule"
)

// maintenanceConfig is the worker's maintenance: worker.maintenance and
// the sources' retention policies.
func (a *app) maintenanceConfig(b bucket.Bucket, holder string, reg *metrics.Registry) (maintenance.Config, []schedule.Plan, error) {
	plans, err := a.cfg.Plans()
	if err != nil {
		return maintenance.Config{}, nil, err
	}
	w := a.cfg.Worker
	mc := maintenance.Config{
		Bucket: b, Holder: holder, Every: w.Maintenance.Every, GCAfter: w.Maintenance.GCAfter,
		RequestLease: w.Lease, Log: a.log,
	}
	if reg != nil {
		mc.Damaged, mc.Observe = reg.Damaged(), reg.ObserveMaintenance
	}
	var sched []schedule.Plan
	for _, p := range plans {
		if p.Retention != nil {
			mc.Policies = append(mc.Policies, *p.Retention)
		}
		if p.Schedule != nil {
			sched = append(sched, schedule.Plan{Source: p.Source, Cluster: a.cfg.Cluster, Schedule: *p.Schedule, Verify: p.Verify})
		}
	}
	return mc, sched, nil
}

// startMaintenance runs the worker's maintenance and its sources' plans
// beside the watcher until ctx ends; wait waits for them.
func (a *app) startMaintenance(ctx context.Context, b bucket.Bucket, holder string, reg *metrics.Registry) (wait func(), err error) {
	mc, plans, err := a.maintenanceConfig(b, holder, reg)
	if err != nil {
		return nil, err
	}
	svc, err := maintenance.New(mc)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	if len(plans) > 0 {
		r := schedule.NewRunner(b, plans, a.log)
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(ctx, a.cfg.Worker.Poll) }()
	}
	return wg.Wait, nil
}

// pruneCmd is "capsule prune" and gcCmd "capsule gc": one pass of the
// worker's maintenance, now.
func (a *app) pruneCmd() *cobra.Command { return a.maintenanceCmd("prune") }

func (a *app) gcCmd() *cobra.Command { return a.maintenanceCmd("gc") }

func (a *app) maintenanceCmd(job string) *cobra.Command {
	var (
		dryRun bool
		output string
	)
	cmd := &cobra.Command{Args: args(cobra.NoArgs)}
	switch job {
	case "prune":
		cmd.Use, cmd.Short = "prune", "Delete the backups the sources' retention policies no longer keep (one pass)"
		cmd.Long = `Apply every source's retention policy once (keepLast, keepDaily, keepWeekly,
keepMonthly in the config file's sources), as workers do every
worker.maintenance.every: the newest good backups, one per day, week and month
as asked, and always the newest verified-good one are kept; the rest are
deleted. Each policy runs under its retention lease, so a worker's pass at
the same time is never doubled. --dry-run deletes nothing and prints what
would go. (prune-previous is another command: it drops the copies restores
kept on their targets.)`
		cmd.Example = "  capsule prune --dry-run\n  capsule prune -o json"
	default:
		cmd.Use, cmd.Short = "gc", "Remove what crashed work left in the bucket (one pass)"
		cmd.Long = `Collect garbage once, as workers do every worker.maintenance.every: attempt
folders no index names, folders of backups that never committed, and
multipart uploads left open, once older than worker.maintenance.gcAfter by
the bucket's clock and not under a live lease. --dry-run removes nothing
and prints what would go.`
		cmd.Example = "  capsule gc --dry-run"
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		f, err := parseFormat(output)
		if err != nil {
			return err
		}
		if err := a.cfg.Validate(nil); err != nil {
			return err
		}
		ctx := cmd.Context()
		b, err := a.openBucket(ctx)
		if err != nil {
			return err
		}
		host, _ := os.Hostname()
		mc, _, err := a.maintenanceConfig(b, fmt.Sprintf("capsule-%s/%s/%d", job, host, os.Getpid()), nil)
		if err != nil {
			return err
		}
		mc.DryRun, mc.Retention, mc.GC = dryRun, job == "prune", job == "gc"
		if job == "prune" && len(mc.Policies) == 0 {
			return usageErr(fmt.Errorf("no source in the config file has a retention policy (keepLast, keepDaily, keepWeekly or keepMonthly)"))
		}
		svc, err := maintenance.New(mc)
		if err != nil {
			return err
		}
		rep, err := svc.Pass(ctx)
		if err != nil {
			return err
		}
		if f.data() {
			return writeData(a.out, f, rep)
		}
		printMaintenance(a, rep)
		return nil
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be deleted, delete nothing")
	outputFlag(cmd, &output)
	return cmd
}

// printMaintenance writes a pass's report as lines a person reads.
func printMaintenance(a *app, rep *maintenance.Report) {
	verb, aborted := "deleted", "aborted"
	if rep.DryRun {
		verb, aborted = "would delete", "would abort"
	}
	for _, p := range rep.Retention {
		r := p.Report
		name := p.Policy.Cluster + "/" + p.Policy.Source
		switch {
		case p.Error != "":
			fmt.Fprintf(a.out, "%s: failed: %s\n", name, p.Error)
		case r == nil:
		case r.LeaseHeldBy != "":
			fmt.Fprintf(a.out, "%s: skipped: %s is applying this policy now\n", name, r.LeaseHeldBy)
		default:
			fmt.Fprintf(a.out, "%s: kept %d, %s %d backups (%d objects)%s\n", name, len(r.Kept), verb, len(r.Deleted), r.Objects, list(r.Deleted))
			for _, id := range sortedKeys(r.Skipped) {
				fmt.Fprintf(a.out, "  left %s: %s\n", id, r.Skipped[id])
			}
		}
	}
	if g := rep.GC; g != nil {
		if g.LeaseHeldBy != "" {
			fmt.Fprintf(a.out, "gc: skipped: %s is collecting garbage now\n", g.LeaseHeldBy)
		} else {
			fmt.Fprintf(a.out, "gc: %s %d folders (%d objects), %s %d uploads%s\n", verb, len(g.Removed), g.Objects, aborted, len(g.Aborted), list(g.Removed))
			for _, o := range g.Retained {
				fmt.Fprintf(a.out, "  kept by Object Lock: %s\n", o.Key)
			}
		}
		if rep.GCError != "" {
			fmt.Fprintf(a.out, "gc: failed: %s\n", rep.GCError)
		}
	}
}

func list(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ": " + strings.Join(ids, ", ")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
