package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cnvrg/capsule/engines"
)

// prunedCopy is one kept copy and what prune-previous did with it.
type prunedCopy struct {
	engines.KeptPrevious
	// Action: dropped, would drop (--dry-run), kept (too young, or of
	// unknown age under --older-than), or failed.
	Action string `json:"action"`
	Error  string `json:"error,omitempty"`
}

func (a *app) prunePreviousCmd() *cobra.Command {
	var (
		olderThan time.Duration
		dryRun    bool
		output    string
	)
	cmd := &cobra.Command{
		Use:   "prune-previous SOURCE",
		Short: "Remove the previous copies that restores kept beside a source's target",
		Long: `Every restore without --drop-previous keeps the target's former data beside it
(a files tree .<dir>.capsule-prev-<id>.a<n>, a PostgreSQL database
<db>_capsule_prev_<id>_a<n>) and names it in its result. prune-previous lists
those kept for SOURCE and drops them: all of them, or with --older-than only
those kept longer ago than that (the time is read from the restore's request
id; a copy whose age cannot be told is kept). --dry-run only says what it
would drop.

It runs here, through the engine, with the config file's definition of SOURCE
and its credentials: run it where a worker runs (in a cluster: kubectl exec
into a worker pod). The files and postgres engines support it; for the others
the result of each restore names what it kept.`,
		Example:           `  capsule prune-previous cnvrg/pg --older-than 168h --dry-run`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeSources,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseFormat(output)
			if err != nil {
				return err
			}
			if olderThan < 0 {
				return usageErr(fmt.Errorf("--older-than %s: must not be negative", olderThan))
			}
			src, err := a.cfg.Lookup(args[0])
			if err != nil {
				return usageErr(fmt.Errorf("source: %w (prune-previous needs the source's definition in the config file)", err))
			}
			eng, err := registry().Get(src.Engine)
			if err != nil {
				return err
			}
			keeper, ok := eng.(engines.PreviousKeeper)
			if !ok {
				return usageErr(fmt.Errorf("engine %s cannot prune previous copies yet: each restore's result names what it kept (capsule status ID)", src.Engine))
			}
			ctx := cmd.Context()
			kept, err := keeper.ListPrevious(ctx, src)
			if err != nil {
				return err
			}
			now := time.Now()
			var out []prunedCopy
			var failed []error
			for _, k := range kept {
				p := prunedCopy{KeptPrevious: k}
				switch {
				case olderThan > 0 && k.KeptAt.IsZero():
					p.Action = "kept (age unknown)"
				case olderThan > 0 && now.Sub(k.KeptAt) < olderThan:
					p.Action = "kept (younger than --older-than)"
				case dryRun:
					p.Action = "would drop"
				default:
					if err := keeper.DropPrevious(ctx, src, k.Name); err != nil {
						p.Action, p.Error = "failed", err.Error()
						failed = append(failed, err)
					} else {
						p.Action = "dropped"
						a.log.WithField("previous", k.Name).WithField("source", src.Name).Info("dropped a kept previous copy")
					}
				}
				out = append(out, p)
			}
			if f.data() {
				if out == nil {
					out = []prunedCopy{}
				}
				err = writeData(a.out, f, out)
			} else if len(out) == 0 {
				fmt.Fprintf(a.errOut, "no previous copies kept for source %s\n", src.Name)
			} else {
				err = printTable(a.out, f, out, []column[prunedCopy]{
					{head: "PREVIOUS", cell: func(p prunedCopy) string { return p.Name }},
					{head: "RESTORE", cell: func(p prunedCopy) string { return fmt.Sprintf("%s (attempt %d)", p.Request, p.Attempt) }},
					{head: "KEPT", cell: func(p prunedCopy) string { return a.when(p.KeptAt) }},
					{head: "ACTION", cell: func(p prunedCopy) string {
						if p.Error != "" {
							return p.Action + ": " + p.Error
						}
						return p.Action
					}},
				})
			}
			if err != nil {
				return err
			}
			return errors.Join(failed...)
		},
	}
	cmd.Flags().DurationVar(&olderThan, "older-than", 0, "only copies kept longer ago than this (0: all)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be dropped, drop nothing")
	outputFlag(cmd, &output)
	return cmd
}
