package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/spf13/cobra"
)

// Checks at the prompt. A request names things a worker resolves later
// (a source, a backup, an engine's options); the CLI checks what it can
// see before it writes the request, so that a typo is an error now (exit
// 4) rather than a rejected result later. What it can see: the config
// file's sources, the sources that have backups in the bucket, the
// bucket's backups, and the engines' documented restore options. A worker
// may serve sources the CLI does not know (the scanner's, in a cluster):
// --no-check submits without looking.

// knownSource reports whether name is a source the CLI can see: one of
// the config file's, or one with a backup in the cluster.
func (a *app) knownSource(ctx context.Context, b bucket.Reader, cluster, name string) (bool, error) {
	if _, ok := a.cfg.Sources[name]; ok {
		return true, nil
	}
	page, err := b.List(ctx, requests.BackupsPrefix+requests.Segment(cluster)+"/"+requests.Segment(name)+"/", bucket.ListOptions{Limit: 1})
	if err != nil {
		return false, fmt.Errorf("look for backups of %s: %w", name, err)
	}
	return len(page.Objects) > 0, nil
}

// checkSource refuses a source the CLI cannot see (exitRefused), naming
// those it can.
func (a *app) checkSource(ctx context.Context, b bucket.Reader, what, cluster, name string) error {
	ok, err := a.knownSource(ctx, b, cluster, name)
	if err != nil || ok {
		return err
	}
	configured := a.cfg.SourceNames()
	inBucket, _ := bucketSources(ctx, b, cluster, 20)
	say := func(names []string) string {
		if len(names) == 0 {
			return "none"
		}
		return strings.Join(names, ", ")
	}
	return usageErr(fmt.Errorf("%s %q is not a source here: the config file has %s, and cluster %q of the bucket has backups of %s; check the name, or --no-check to submit it for a worker that knows it",
		what, name, say(configured), cluster, say(inBucket)))
}

// bucketSources lists the sources with backups in cluster, at most max
// (sorted).
func bucketSources(ctx context.Context, b bucket.Reader, cluster string, limit int) ([]string, error) {
	seen := map[string]bool{}
	errEnough := errors.New("enough")
	err := bucket.Walk(ctx, b, requests.BackupsPrefix+requests.Segment(cluster)+"/", func(o bucket.ObjectInfo) error {
		k, err := requests.ParseBackupKey(o.Key)
		if err == nil && !seen[k.Source] {
			seen[k.Source] = true
			if len(seen) >= limit {
				return errEnough
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return nil, err
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// checkBackup makes sure ref names a backup in the bucket (a capsule
// backup, or the old service's as legacy:<id>) and returns its engine and
// source. A missing or damaged backup is refused (exitRefused).
func (a *app) checkBackup(ctx context.Context, b bucket.Reader, ref string) (engine, source string, err error) {
	if id, ok := requests.LegacyBackupID(ref); ok {
		bb, ok := b.(bucket.Bucket)
		if !ok {
			return "", "", nil
		}
		old, err := a.openLegacy(bb)
		if err != nil {
			return "", "", err
		}
		x, err := old.Find(ctx, id)
		if err != nil {
			return "", "", usageErr(fmt.Errorf("backup %s: %w (capsule legacy lists the old service's backups; --no-check to submit anyway)", ref, err))
		}
		return x.Engine, x.Source, nil
	}
	_, trust, err := a.cfg.Signing()
	if err != nil {
		return "", "", err
	}
	e, err := index.FindTrusted(ctx, b, ref, trust)
	if err == nil {
		// The workers refuse it too: say so before anything is written.
		err = e.TrustError()
	}
	switch {
	case errors.Is(err, index.ErrUntrusted):
		return "", "", usageErr(err)
	case errors.Is(err, index.ErrBackupNotFound):
		return "", "", usageErr(fmt.Errorf("backup %s: no such backup in the bucket (capsule ls --all-clusters lists them; --no-check to submit anyway)", ref))
	case errors.Is(err, index.ErrDamaged):
		return "", "", usageErr(err)
	case err != nil:
		return "", "", err
	}
	return e.Engine, e.Source, nil
}

// checkRestore checks a Restore or Verify request at the prompt: the
// backup exists, the target is a source here of the backup's engine,
// and every option is one the engine takes.
func (a *app) checkRestore(ctx context.Context, b bucket.Reader, req *requests.Request, targetFlag string) error {
	engine, source, err := a.checkBackup(ctx, b, req.BackupID)
	if err != nil || engine == "" {
		return err
	}
	if req.Target != "" {
		ok, err := a.knownSource(ctx, b, req.ClusterOrDefault(), req.Target)
		if err != nil {
			return err
		}
		if !ok && req.Target != source {
			if err := a.checkSource(ctx, b, targetFlag, req.ClusterOrDefault(), req.Target); err != nil {
				return err
			}
		}
		if raw, ok := a.cfg.Sources[req.Target]; ok {
			if e, _ := raw["engine"].(string); e != "" && e != engine {
				return usageErr(fmt.Errorf("%s %s is a %s source; backup %s was made by the %s engine", targetFlag, req.Target, e, req.BackupID, engine))
			}
		}
	}
	eng, err := registry().Get(engine)
	if err != nil {
		return nil // an engine this binary lacks: the worker decides
	}
	if err := engines.CheckRestoreOptions(eng, req.Options); err != nil {
		return usageErr(fmt.Errorf("--option: %w", err))
	}
	return nil
}

// Completion. Cobra runs no PersistentPreRunE before a completion
// function, so each loads the configuration itself, quietly; a
// completion that cannot read the bucket offers nothing rather than an
// error, and gives up after completionTimeout.

const completionTimeout = 3 * time.Second

// completeSources offers the config file's sources and those with
// backups in the cluster.
func (a *app) completeSources(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if a.loadQuiet(cmd) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := a.cfg.SourceNames()
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	if b, err := a.openExisting(ctx); err == nil {
		more, _ := bucketSources(ctx, b, a.cfg.Cluster, 200)
		names = append(names, more...)
	}
	return matching(names, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// completeBackups offers the ids of the cluster's backups, newest first
// (ids are time-ordered), at most 100.
func (a *app) completeBackups(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 || a.loadQuiet(cmd) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	b, err := a.openExisting(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	seen := map[string]string{}
	_ = bucket.Walk(ctx, b, requests.BackupsPrefix+requests.Segment(a.cfg.Cluster)+"/", func(o bucket.ObjectInfo) error {
		k, err := requests.ParseBackupKey(o.Key)
		if err == nil && k.Rest == requests.IndexName && strings.HasPrefix(k.BackupID, toComplete) {
			seen[k.BackupID] = k.Source
		}
		return nil
	})
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	ids = ids[:min(len(ids), 100)]
	for i, id := range ids {
		ids[i] = id + "\t" + seen[id] // zsh and fish show the source beside the id
	}
	return ids, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
}

// completeRequests offers the ids of requests waiting or running.
func (a *app) completeRequests(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 || a.loadQuiet(cmd) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	b, err := a.openExisting(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var ids []string
	_ = bucket.Walk(ctx, b, requests.RequestsPrefix, func(o bucket.ObjectInfo) error {
		if id, ok := requests.IDFromKey(requests.RequestsPrefix, o.Key); ok && strings.HasPrefix(id, toComplete) {
			ids = append(ids, id)
		}
		return nil
	})
	slices.Reverse(ids)
	return ids[:min(len(ids), 100)], cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
}

func matching(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
