package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/alert"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/scanner"
	"github.com/cnvrg/capsule/watcher"
)

// clientPrograms are the programs an engine runs on the worker: for each
// need, the names any one of which serves.
var clientPrograms = map[string][][]string{
	"postgres": {{"pg_dump"}, {"pg_restore"}, {"pg_dumpall"}},
	"mysql":    {{"mariadb-dump", "mysqldump"}, {"mariadb", "mysql"}},
}

// sourceProblems says, for each configured source, what keeps this
// worker from serving it: an unset password variable, an unreadable
// password file, a missing client program.
func (a *app) sourceProblems() map[string][]string {
	problems := map[string][]string{}
	for _, name := range a.cfg.SourceNames() {
		raw := a.cfg.Sources[name]
		if env, _ := raw["passwordEnv"].(string); env != "" {
			if _, ok := os.LookupEnv(env); !ok {
				problems[name] = append(problems[name], "environment variable "+env+" (passwordEnv) is not set in the worker's environment")
			}
		}
		if f, _ := raw["passwordFile"].(string); f != "" {
			if _, err := os.ReadFile(f); err != nil {
				problems[name] = append(problems[name], "passwordFile: "+err.Error())
			}
		}
		engine, _ := raw["engine"].(string)
		for _, need := range clientPrograms[engine] {
			if !installed(engine, need) {
				problems[name] = append(problems[name], "client program "+strings.Join(need, " or ")+" is not installed (not on PATH)")
			}
		}
	}
	return problems
}

func installed(engine string, names []string) bool {
	for _, n := range names {
		if _, err := exec.LookPath(n); err == nil {
			return true
		}
		if engine == "postgres" {
			for _, g := range postgres.BinGlobs {
				if m, _ := filepath.Glob(filepath.Join(g, n)); len(m) > 0 {
					return true
				}
			}
		}
	}
	return false
}

// logStartup is the worker's summary of what it serves, and a warning for
// each source it cannot.
func (a *app) logStartup(worker, bucketDesc string, hooks int) {
	problems := a.sourceProblems()
	engines := map[string]bool{}
	var serves, cannot []string
	for _, name := range a.cfg.SourceNames() {
		e, _ := a.cfg.Sources[name]["engine"].(string)
		engines[e] = true
		if len(problems[name]) > 0 {
			cannot = append(cannot, name)
			a.log.WithFields(logrus.Fields{"source": name, "engine": e, "problems": strings.Join(problems[name], "; ")}).
				Warn("this worker cannot serve the source: its requests will fail here")
			continue
		}
		serves = append(serves, name)
	}
	var engs []string
	for e := range engines {
		engs = append(engs, e)
	}
	fields := logrus.Fields{
		"worker": worker, "bucket": bucketDesc, "cluster": a.cfg.Cluster,
		"sources": strings.Join(serves, ","), "engines": strings.Join(slices.Sorted(slices.Values(engs)), ","), "webhooks": hooks,
	}
	if len(cannot) > 0 {
		fields["missing"] = strings.Join(cannot, ",")
	}
	if len(a.cfg.Sources) == 0 {
		a.log.WithFields(fields).Warn("worker starting with no sources configured: it can claim nothing; add sources to the config file (--config)")
		return
	}
	a.log.WithFields(fields).Info("worker starting")
}

// notifier builds the worker's webhooks; nil when none is configured.
func (a *app) notifier() (*alert.Notifier, error) {
	hooks, err := a.cfg.Webhooks(os.LookupEnv)
	if err != nil || len(hooks) == 0 {
		return nil, err
	}
	return alert.New(hooks, alert.Options{Log: a.log})
}

// alertOn chains the watcher's events to n: failed requests and failed
// verifications become webhook notifications.
func alertOn(cfg *watcher.Config, n *alert.Notifier) {
	if n == nil {
		return
	}
	prev := cfg.Events
	worker := cfg.Worker
	cfg.Events = func(e watcher.Event) {
		if prev != nil {
			prev(e)
		}
		if e.Type != watcher.EventFinished || e.Status != requests.StatusFailed {
			return
		}
		ev := alert.Event{Type: alert.Failed, Cluster: e.Cluster, Source: e.Source, Kind: string(e.Kind), RequestID: e.ID, Worker: worker, Time: e.Finished}
		if e.Kind == requests.KindVerify {
			ev.Type = alert.VerifyFailed
		}
		if e.Err != nil {
			ev.Error = e.Err.Error()
		}
		n.Notify(ev)
	}
}

// closeNotifier lets the webhooks in flight finish, for a while.
func closeNotifier(n *alert.Notifier) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n.Close(ctx)
}

// missedAlerts turns the scanner's missed schedules into webhook
// notifications; nil without webhooks. sc is read when an event comes,
// after the scanner exists.
func missedAlerts(sc func() *scanner.Scanner, worker string, n *alert.Notifier) func(scanner.Event) {
	if n == nil {
		return nil
	}
	return func(e scanner.Event) {
		if e.Type != scanner.EventMissed {
			return
		}
		ev := alert.Event{Type: alert.Missed, Source: e.Plan, Kind: string(e.Kind), RequestID: e.ID, Worker: worker}
		if p, ok := sc().Plan(e.Plan); ok {
			ev.Cluster = p.Cluster
		}
		if e.Err != nil {
			ev.Error = e.Err.Error()
		}
		n.Notify(ev)
	}
}
