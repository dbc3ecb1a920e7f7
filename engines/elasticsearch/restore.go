package elasticsearch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
)

// Restore implements engines.Engine.
//
// Without the renameSuffix option it first verifies every artifact, then
// replaces each index in place (delete, create, load). With it, it loads
// every index into <index><suffix> beside the live one and, once every
// artifact was read to its end and checked, moves the aliases (and the
// index's own name, as an alias) to the copies in one atomic _aliases
// call; on error or cancellation it deletes the copies.
func (e *Engine) Restore(ctx context.Context, job *engines.RestoreJob) (*engines.RestoreInfo, error) {
	cfg, err := decodeConfig(job.Target)
	if err != nil {
		return nil, err
	}
	opts, err := parseRestoreOptions(job.Options.Extra)
	if err != nil {
		return nil, err
	}
	if opts.renameSuffix != "" {
		// Renamed copies carry the attempt: a paused attempt whose request
		// another worker took over never loads into its successor's copy.
		opts.renameSuffix += "-a" + strconv.Itoa(job.AttemptNumber())
	}
	c, err := newClient(ctx, job.Target, cfg)
	if err != nil {
		return nil, err
	}
	defer c.close()
	si, err := c.info(ctx)
	if err != nil {
		return nil, err
	}
	log := logOf(job.Log).WithFields(logrus.Fields{"engine": Name, "target": job.Target.Name, "server": si.product(), "format": job.Backup.Format})
	switch job.Backup.Format {
	case FormatLogical:
	case FormatSnapshot:
		return e.snapshotRestore(ctx, job, cfg, opts, c, si, log)
	default:
		return nil, fmt.Errorf("backup format %q is not one this engine writes (%s, %s)", job.Backup.Format, FormatLogical, FormatSnapshot)
	}
	r := &restorer{e: e, c: c, cfg: cfg, si: si, log: log, job: job, opts: opts}
	if total, ok := job.Backup.Details["documents"].(float64); ok {
		r.total = int64(total)
	}
	return r.run(ctx)
}

type restorer struct {
	e     *Engine
	c     *client
	cfg   *Config
	si    *serverInfo
	log   logrus.FieldLogger
	job   *engines.RestoreJob
	opts  restoreOptions
	m     *meta
	done  int64
	total int64
}

func (r *restorer) run(ctx context.Context) (*engines.RestoreInfo, error) {
	arts := r.job.Artifacts
	names := arts.Names()
	if len(names) == 0 || names[0] != metaArtifact {
		return nil, fmt.Errorf("backup has no %s as its first artifact: not a logical Elasticsearch backup", metaArtifact)
	}
	m, err := readMeta(ctx, arts)
	if err != nil {
		return nil, err
	}
	r.m = m
	if err := checkArtifacts(m, names); err != nil {
		return nil, err
	}
	var streams []string
	for _, ds := range m.DataStreams {
		streams = append(streams, ds.Name)
	}
	g := &guard{r: r, artifact: metaArtifact}
	if err := g.check(ctx, m.Indices, streams, m); err != nil {
		return nil, err
	}
	// Nothing is created on the cluster before every artifact is known
	// good. Staged copies are read again, and checked again, as they load.
	for _, n := range names[1:] {
		if err := arts.Verify(ctx, n); err != nil {
			return nil, err
		}
	}
	r.log.WithField("artifacts", len(names)).Info("every artifact verified")
	if r.opts.renameSuffix == "" {
		return r.inPlace(ctx)
	}
	return r.staged(ctx)
}

func readMeta(ctx context.Context, arts engines.ArtifactReader) (*meta, error) {
	rc, err := arts.Open(ctx, metaArtifact)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	raw, err := readWhole(rc, metaArtifact)
	if err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", metaArtifact, err)
	}
	if m.Format != FormatLogical {
		return nil, fmt.Errorf("%s: format %q, want %q", metaArtifact, m.Format, FormatLogical)
	}
	if err := m.checkNames(); err != nil {
		return nil, err
	}
	return &m, nil
}

// checkArtifacts makes sure the backup holds exactly the artifacts its
// meta names.
func checkArtifacts(m *meta, names []string) error {
	have := map[string]bool{}
	for _, n := range names[1:] {
		have[n] = true
	}
	want := map[string]bool{}
	for _, im := range m.Indices {
		want[im.Artifact] = true
	}
	for _, ds := range m.DataStreams {
		want[ds.Artifact] = true
	}
	for n := range want {
		if !have[n] {
			return fmt.Errorf("backup lacks artifact %s that %s names", n, metaArtifact)
		}
	}
	for n := range have {
		if !want[n] {
			return fmt.Errorf("backup has artifact %s that %s does not name", n, metaArtifact)
		}
	}
	return nil
}

// inPlace replaces each index and data stream; the artifacts were
// verified already.
func (r *restorer) inPlace(ctx context.Context) (*engines.RestoreInfo, error) {
	// Only the holder of the lease may change the target: confirm it
	// now, the last thing before the first write.
	if err := r.fence(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := r.putTemplates(ctx); err != nil {
		return nil, err
	}
	var restored []string
	for _, im := range r.m.Indices {
		q := url.Values{"ignore_unavailable": {"true"}}
		if err := r.c.request(ctx, http.MethodDelete, esPath(seg(im.Name)), q, nil, nil); err != nil {
			return nil, fmt.Errorf("delete index %s: %w", im.Name, err)
		}
		r.log.WithField("index", im.Name).Info("index deleted: recreating it")
		if err := r.loadIndex(ctx, im, im.Name, true); err != nil {
			return nil, err
		}
		restored = append(restored, im.Name)
	}
	if err := r.dataStreams(ctx); err != nil {
		return nil, err
	}
	return &engines.RestoreInfo{
		Downtime: time.Since(start),
		Details:  map[string]any{"documents": r.done, "indices": restored, "dataStreams": len(r.m.DataStreams)},
	}, nil
}

// staged loads every index under its new name, then swaps the aliases.
func (r *restorer) staged(ctx context.Context) (info *engines.RestoreInfo, err error) {
	sfx := r.opts.renameSuffix
	for _, im := range r.m.Indices {
		target := im.Name + sfx
		exists, err := r.exists(ctx, target)
		if err != nil {
			return nil, err
		}
		if exists {
			return nil, fmt.Errorf("index %s exists already: restore with another renameSuffix", target)
		}
	}
	var staged []string
	swapped := false
	defer func() {
		if err == nil || swapped {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for _, s := range staged {
			if derr := r.c.request(cctx, http.MethodDelete, esPath(seg(s)), url.Values{"ignore_unavailable": {"true"}}, nil, nil); derr != nil {
				r.log.WithFields(logrus.Fields{"index": s, "error": derr}).Error("could not delete a staged index")
			} else {
				r.log.WithField("index", s).Info("staged index deleted")
			}
		}
	}()
	for _, im := range r.m.Indices {
		target := im.Name + sfx
		staged = append(staged, target)
		if err := r.loadIndex(ctx, im, target, false); err != nil {
			return nil, err
		}
	}
	r.log.WithField("indices", len(staged)).Info("every index staged and every artifact verified: swapping aliases")
	// Only the holder of the lease may swap: confirm it now, the last
	// thing before the first write to the live cluster's names.
	if err := r.fence(ctx); err != nil {
		return nil, err
	}
	if err := r.putTemplates(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	previous, err := r.swapAliases(ctx)
	if err != nil {
		return nil, err
	}
	swapped = true
	downtime := time.Since(start)
	if len(r.m.DataStreams) > 0 {
		dsStart := time.Now()
		if err := r.dataStreams(ctx); err != nil {
			return nil, err
		}
		downtime += time.Since(dsStart)
	}
	return &engines.RestoreInfo{
		Downtime: downtime,
		Previous: strings.Join(previous, ","),
		Details:  map[string]any{"documents": r.done, "indices": staged, "dataStreams": len(r.m.DataStreams)},
	}, nil
}

// fence calls the job's Fence; on an error nothing may be swapped.
func (r *restorer) fence(ctx context.Context) error {
	if err := r.job.CheckFence(ctx); err != nil {
		r.log.WithError(err).Warn("not swapping: this attempt no longer holds the request")
		return err
	}
	return nil
}

// exists reports whether an index or alias of that name exists.
func (r *restorer) exists(ctx context.Context, name string) (bool, error) {
	err := r.c.request(ctx, http.MethodHead, esPath(seg(name)), nil, nil, nil)
	if isStatus(err, http.StatusNotFound) {
		return false, nil
	}
	return err == nil, err
}

// aliasHolders lists the indices that hold alias name (none when there is
// no such alias).
func (r *restorer) aliasHolders(ctx context.Context, name string) ([]string, error) {
	var got map[string]json.RawMessage
	err := r.c.request(ctx, http.MethodGet, esPath("_alias", seg(name)), nil, nil, &got)
	if isStatus(err, http.StatusNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return sortedKeys(got), nil
}

// swapAliases moves, in one atomic _aliases call, each backed-up index's
// aliases to its copy, and its name too (as an alias) where the name is
// free or an alias or DropPrevious lets the old index go.
func (r *restorer) swapAliases(ctx context.Context) (previous []string, err error) {
	var actions []map[string]any
	var dropAfter []string
	for _, im := range r.m.Indices {
		target := im.Name + r.opts.renameSuffix
		for _, a := range sortedKeys(im.Aliases) {
			holders, err := r.aliasHolders(ctx, a)
			if err != nil {
				return nil, err
			}
			for _, h := range holders {
				if h != target {
					actions = append(actions, map[string]any{"remove": map[string]string{"index": h, "alias": a}})
				}
			}
			add := map[string]any{"index": target, "alias": a}
			var props map[string]any
			if err := json.Unmarshal(im.Aliases[a], &props); err != nil {
				return nil, fmt.Errorf("alias %s of %s: %w", a, im.Name, err)
			}
			for _, k := range []string{"filter", "index_routing", "search_routing", "is_write_index", "is_hidden"} {
				if v, ok := props[k]; ok {
					add[k] = v
				}
			}
			actions = append(actions, map[string]any{"add": add})
		}
		holders, err := r.aliasHolders(ctx, im.Name)
		if err != nil {
			return nil, err
		}
		switch {
		case len(holders) > 0:
			for _, h := range holders {
				actions = append(actions, map[string]any{"remove": map[string]string{"index": h, "alias": im.Name}})
			}
			actions = append(actions, map[string]any{"add": map[string]string{"index": target, "alias": im.Name}})
			if r.job.Options.DropPrevious {
				dropAfter = append(dropAfter, holders...)
			} else {
				previous = append(previous, holders...)
			}
		default:
			live, err := r.exists(ctx, im.Name)
			if err != nil {
				return nil, err
			}
			if live && !r.job.Options.DropPrevious {
				// The old index keeps its name; its aliases moved.
				previous = append(previous, im.Name)
				continue
			}
			if live {
				actions = append(actions, map[string]any{"remove_index": map[string]string{"index": im.Name}})
			}
			actions = append(actions, map[string]any{"add": map[string]string{"index": target, "alias": im.Name}})
		}
	}
	if len(actions) > 0 {
		if err := r.c.request(ctx, http.MethodPost, "/_aliases", nil, map[string]any{"actions": actions}, nil); err != nil {
			return nil, fmt.Errorf("swap aliases: %w", err)
		}
	}
	r.log.WithFields(logrus.Fields{"actions": len(actions), "previous": previous}).Info("aliases swapped")
	for _, d := range dropAfter {
		if err := r.c.request(ctx, http.MethodDelete, esPath(seg(d)), nil, nil, nil); err != nil {
			r.log.WithFields(logrus.Fields{"index": d, "error": err}).Warn("could not delete a previous index")
		}
	}
	return previous, nil
}

func (r *restorer) putTemplates(ctx context.Context) error {
	for _, pl := range r.m.Pipelines {
		if err := r.c.request(ctx, http.MethodPut, esPath("_ingest", "pipeline", seg(pl.Name)), nil, pl.Body, nil); err != nil {
			return fmt.Errorf("pipeline %s: %w", pl.Name, err)
		}
	}
	for _, t := range r.m.ComponentTemplates {
		if err := r.c.request(ctx, http.MethodPut, esPath("_component_template", seg(t.Name)), nil, t.Body, nil); err != nil {
			return fmt.Errorf("component template %s: %w", t.Name, err)
		}
	}
	for _, t := range r.m.IndexTemplates {
		if err := r.c.request(ctx, http.MethodPut, esPath("_index_template", seg(t.Name)), nil, t.Body, nil); err != nil {
			return fmt.Errorf("index template %s: %w", t.Name, err)
		}
	}
	return nil
}

// loadIndex creates target with im's settings and mappings (and aliases
// when withAliases), loads im's documents, applies the late settings and
// checks the count.
func (r *restorer) loadIndex(ctx context.Context, im indexMeta, target string, withAliases bool) error {
	body := map[string]any{"settings": creationSettings(im.Settings)}
	if len(im.Mappings) > 0 && string(im.Mappings) != "null" {
		body["mappings"] = im.Mappings
	}
	if withAliases && len(im.Aliases) > 0 {
		body["aliases"] = im.Aliases
	}
	if err := r.c.request(ctx, http.MethodPut, esPath(seg(target)), nil, body, nil); err != nil {
		return fmt.Errorf("create index %s: %w", target, err)
	}
	n, err := r.loadDocs(ctx, im.Artifact, im.Name, target, "index")
	if err != nil {
		return err
	}
	if err := r.c.request(ctx, http.MethodPut, esPath(seg(target), "_settings"), nil, finalSettings(im.Settings), nil); err != nil {
		return fmt.Errorf("index %s: settings: %w", target, err)
	}
	return r.checkCount(ctx, target, n)
}

func (r *restorer) checkCount(ctx context.Context, target string, want int64) error {
	if err := r.c.request(ctx, http.MethodPost, esPath(seg(target), "_refresh"), nil, nil, nil); err != nil {
		return fmt.Errorf("index %s: refresh: %w", target, err)
	}
	var cnt struct {
		Count int64 `json:"count"`
	}
	if err := r.c.request(ctx, http.MethodGet, esPath(seg(target), "_count"), nil, nil, &cnt); err != nil {
		return fmt.Errorf("index %s: count: %w", target, err)
	}
	if cnt.Count != want {
		return fmt.Errorf("index %s holds %d documents after the restore, the backup %d", target, cnt.Count, want)
	}
	r.log.WithFields(logrus.Fields{"index": target, "documents": want}).Info("index restored")
	return nil
}

// dataStreams replaces each data stream: delete it, then let _bulk
// create it again (from its restored template) with op_type create.
func (r *restorer) dataStreams(ctx context.Context) error {
	for _, ds := range r.m.DataStreams {
		err := r.c.request(ctx, http.MethodDelete, esPath("_data_stream", seg(ds.Name)), nil, nil, nil)
		if err != nil && !isStatus(err, http.StatusNotFound) {
			return fmt.Errorf("delete data stream %s: %w", ds.Name, err)
		}
		n, err := r.loadDocs(ctx, ds.Artifact, ds.Name, ds.Name, "create")
		if err != nil {
			return err
		}
		if err := r.checkCount(ctx, ds.Name, n); err != nil {
			return err
		}
	}
	return nil
}

// loadDocs reads a documents artifact to its end and loads its documents
// into target. Whatever goes wrong, a corrupt artifact is reported as its
// *engines.ChecksumError.
func (r *restorer) loadDocs(ctx context.Context, artifact, source, target, op string) (n int64, err error) {
	rc, err := r.job.Artifacts.Open(ctx, artifact)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 256<<10)
	defer func() {
		// An artifact too large to read is not read to its end either.
		if err != nil && !errors.Is(err, ErrTooLarge) {
			err = drain(br, err)
		}
	}()
	l := &bulkLoader{
		c: r.c, log: r.log, index: target, op: op, maxDocs: r.cfg.BatchSize, backoff: r.e.retryBase(),
		onLoaded: func(n int) {
			r.done += int64(n)
			r.job.Progress.Report("documents", r.done, r.total)
		},
	}
	line, err := readLine(br, maxDocLineBytes)
	if err != nil {
		return 0, fmt.Errorf("%s: header: %w", artifact, err)
	}
	var head docLine
	if err := json.Unmarshal(line, &head); err != nil || head.Capsule != docsHeader || head.Index != source {
		return 0, fmt.Errorf("%s: header does not name %s %s", artifact, docsHeader, source)
	}
	var end *docsEnd
	for end == nil {
		line, err := readLine(br, maxDocLineBytes)
		if err == io.EOF {
			return 0, fmt.Errorf("%s: ends without its trailer", artifact)
		}
		if err != nil {
			return 0, fmt.Errorf("%s: line %d: %w", artifact, n+2, err)
		}
		var d docLine
		if err := json.Unmarshal(line, &d); err != nil {
			return 0, fmt.Errorf("%s: line %d: %w", artifact, n+2, err)
		}
		switch {
		case d.End != nil:
			end = d.End
		case d.ID != nil && len(d.Source) > 0:
			if err := l.add(ctx, *d.ID, d.Routing, d.Source); err != nil {
				return 0, err
			}
			n++
		default:
			return 0, fmt.Errorf("%s: line %d is neither a document nor the trailer", artifact, n+2)
		}
	}
	if len(l.items) > 0 {
		if err := l.flush(ctx); err != nil {
			return 0, err
		}
	}
	// Read to the end, holding none of it: that is where the checksum is
	// checked.
	if _, err := io.Copy(onlySpace{}, br); err != nil {
		if errors.Is(err, errNotSpace) {
			return 0, fmt.Errorf("%s: data after its trailer", artifact)
		}
		return 0, err
	}
	if end.Count != n {
		return 0, fmt.Errorf("%s: %d documents, its trailer says %d", artifact, n, end.Count)
	}
	if l.retried > 0 {
		r.log.WithFields(logrus.Fields{"index": target, "retried": l.retried}).Info("documents retried after 429")
	}
	return n, nil
}

// readLine reads one line of at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, fmt.Errorf("a line %w (%d MiB)", ErrTooLarge, max>>20)
		}
		line = append(line, frag...)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) > 0:
			return nil, errors.New("last line has no newline")
		}
		return line, err
	}
}

var errNotSpace = errors.New("not white space")

// onlySpace discards white space and fails on anything else.
type onlySpace struct{}

func (onlySpace) Write(p []byte) (int, error) {
	if len(bytes.TrimSpace(p)) > 0 {
		return 0, errNotSpace
	}
	return len(p), nil
}
