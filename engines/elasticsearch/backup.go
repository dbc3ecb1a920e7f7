package elasticsearch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
)

// ErrContextExpired reports a point in time or scroll that expired on the
// server while a backup read it: the documents read so far and those still
// to read would not come from one consistent view, so the backup fails
// (the executor's next attempt starts over). A longer keepAlive helps when
// the bucket is slow to take the data.
var ErrContextExpired = errors.New("search context expired")

// Backup implements engines.Engine.
func (e *Engine) Backup(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	cfg, err := decodeConfig(job.Source)
	if err != nil {
		return nil, err
	}
	c, err := newClient(ctx, job.Source, cfg)
	if err != nil {
		return nil, err
	}
	defer c.close()
	si, err := c.info(ctx)
	if err != nil {
		return nil, err
	}
	log := logOf(job.Log).WithFields(logrus.Fields{"engine": Name, "source": job.Source.Name, "server": si.product(), "mode": cfg.Mode})
	if cfg.Mode == ModeSnapshot {
		return e.snapshotBackup(ctx, job, cfg, c, si, log)
	}
	b := &backuper{c: c, cfg: cfg, si: si, log: log, progress: job.Progress}
	return b.run(ctx, job)
}

type backuper struct {
	c        *client
	cfg      *Config
	si       *serverInfo
	log      logrus.FieldLogger
	progress engines.Progress
	done     int64
}

func (b *backuper) run(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	idx, streams, err := b.resolve(ctx)
	if err != nil {
		return nil, err
	}
	if len(idx) == 0 && len(streams) == 0 {
		return nil, fmt.Errorf("indices %v match no open index or data stream", b.cfg.Indices)
	}
	m := &meta{Format: FormatLogical, Server: b.si.product()}
	namer := artifactNamer{metaArtifact: true}
	for _, name := range idx {
		im, err := b.indexMeta(ctx, name)
		if err != nil {
			return nil, err
		}
		im.Artifact = namer.name("index", name)
		m.Indices = append(m.Indices, *im)
	}
	for _, name := range streams {
		m.DataStreams = append(m.DataStreams, dataStreamMeta{Name: name, Artifact: namer.name("datastream", name)})
	}
	if err := b.templates(ctx, m); err != nil {
		return nil, err
	}
	if err := b.pipelines(ctx, m); err != nil {
		return nil, err
	}
	if err := writeJSONArtifact(job.Artifacts, metaArtifact, m); err != nil {
		return nil, err
	}
	counts := map[string]int64{}
	for _, im := range m.Indices {
		n, err := b.docsArtifact(ctx, job.Artifacts, im.Artifact, im.Name)
		if err != nil {
			return nil, err
		}
		counts[im.Name] = n
	}
	for _, ds := range m.DataStreams {
		n, err := b.docsArtifact(ctx, job.Artifacts, ds.Artifact, ds.Name)
		if err != nil {
			return nil, err
		}
		counts[ds.Name] = n
	}
	b.log.WithFields(logrus.Fields{"indices": len(m.Indices), "data_streams": len(m.DataStreams), "documents": b.done}).Info("elasticsearch backup done")
	return &engines.BackupInfo{
		Format:        FormatLogical,
		ServerVersion: b.si.product(),
		SourceInfo:    sourceInfo(b.cfg, b.si),
		Details: map[string]any{
			"documents":          b.done,
			"perIndex":           counts,
			"indexTemplates":     len(m.IndexTemplates),
			"componentTemplates": len(m.ComponentTemplates),
			"pipelines":          len(m.Pipelines),
		},
	}, nil
}

func sourceInfo(cfg *Config, si *serverInfo) map[string]string {
	host := ""
	if u, err := url.Parse(cfg.URL); err == nil {
		host = u.Host
	}
	out := map[string]string{"host": host, "mode": cfg.Mode, "cluster": si.ClusterName}
	if cfg.Mode == ModeSnapshot {
		out["repository"] = cfg.Repository
	}
	return out
}

// resolve lists the open indices (not the backing indices of data
// streams) and the data streams the patterns match, sorted.
func (b *backuper) resolve(ctx context.Context) (indices, streams []string, err error) {
	idx := map[string]bool{}
	ds := map[string]bool{}
	if b.si.hasResolve() {
		var r struct {
			Indices []struct {
				Name       string   `json:"name"`
				Attributes []string `json:"attributes"`
				DataStream string   `json:"data_stream"`
			} `json:"indices"`
			Aliases []struct {
				Name    string   `json:"name"`
				Indices []string `json:"indices"`
			} `json:"aliases"`
			DataStreams []struct {
				Name string `json:"name"`
			} `json:"data_streams"`
		}
		q := url.Values{"expand_wildcards": {"open"}}
		if err := b.c.request(ctx, http.MethodGet, esPath("_resolve", "index", segs(b.cfg.Indices)), q, nil, &r); err != nil {
			return nil, nil, err
		}
		for _, i := range r.Indices {
			for _, a := range i.Attributes {
				if a == "closed" {
					return nil, nil, fmt.Errorf("index %s is closed: open it or leave it out of indices", i.Name)
				}
			}
			if i.DataStream != "" {
				ds[i.DataStream] = true
			} else {
				idx[i.Name] = true
			}
		}
		for _, a := range r.Aliases {
			for _, i := range a.Indices {
				idx[i] = true
			}
		}
		for _, d := range r.DataStreams {
			ds[d.Name] = true
		}
	} else {
		var rows []struct {
			Index  string `json:"index"`
			Status string `json:"status"`
		}
		q := url.Values{"format": {"json"}, "h": {"index,status"}, "expand_wildcards": {"open"}}
		if err := b.c.request(ctx, http.MethodGet, esPath("_cat", "indices", segs(b.cfg.Indices)), q, nil, &rows); err != nil {
			return nil, nil, err
		}
		for _, r := range rows {
			if r.Status == "close" {
				return nil, nil, fmt.Errorf("index %s is closed: open it or leave it out of indices", r.Index)
			}
			idx[r.Index] = true
		}
	}
	return sortedKeys(idx), sortedKeys(ds), nil
}

func (b *backuper) indexMeta(ctx context.Context, name string) (*indexMeta, error) {
	var r map[string]struct {
		Aliases  map[string]json.RawMessage `json:"aliases"`
		Mappings json.RawMessage            `json:"mappings"`
		Settings map[string]any             `json:"settings"`
	}
	q := url.Values{"flat_settings": {"true"}}
	if err := b.c.request(ctx, http.MethodGet, esPath(seg(name)), q, nil, &r); err != nil {
		return nil, fmt.Errorf("index %s: %w", name, err)
	}
	got, ok := r[name]
	if !ok || len(r) != 1 {
		return nil, fmt.Errorf("index %s: GET answered for %v", name, sortedKeys(r))
	}
	return &indexMeta{Name: name, Settings: restorable(got.Settings), Mappings: got.Mappings, Aliases: got.Aliases}, nil
}

// templates adds the composable index templates that match a backed-up
// name or a templates pattern, and the component templates they use; not
// those the cluster manages itself.
func (b *backuper) templates(ctx context.Context, m *meta) error {
	if !b.si.hasComposableTemplates() {
		b.log.Info("server has no composable templates: none backed up")
		return nil
	}
	var it struct {
		IndexTemplates []struct {
			Name          string          `json:"name"`
			IndexTemplate json.RawMessage `json:"index_template"`
		} `json:"index_templates"`
	}
	if err := b.c.request(ctx, http.MethodGet, "/_index_template", nil, nil, &it); err != nil && !isStatus(err, http.StatusNotFound) {
		return err
	}
	var targets []string
	for _, im := range m.Indices {
		targets = append(targets, im.Name)
	}
	for _, ds := range m.DataStreams {
		targets = append(targets, ds.Name)
	}
	components := map[string]bool{}
	for _, t := range it.IndexTemplates {
		if managed(t.IndexTemplate) {
			continue
		}
		var body struct {
			IndexPatterns []string `json:"index_patterns"`
			ComposedOf    []string `json:"composed_of"`
		}
		if err := json.Unmarshal(t.IndexTemplate, &body); err != nil {
			return fmt.Errorf("index template %s: %w", t.Name, err)
		}
		want := matchAny(b.cfg.Templates, t.Name)
		for _, target := range targets {
			want = want || matchAny(body.IndexPatterns, target)
		}
		if !want {
			continue
		}
		m.IndexTemplates = append(m.IndexTemplates, namedBody{Name: t.Name, Body: t.IndexTemplate})
		for _, c := range body.ComposedOf {
			components[c] = true
		}
	}
	var ct struct {
		ComponentTemplates []struct {
			Name              string          `json:"name"`
			ComponentTemplate json.RawMessage `json:"component_template"`
		} `json:"component_templates"`
	}
	if err := b.c.request(ctx, http.MethodGet, "/_component_template", nil, nil, &ct); err != nil && !isStatus(err, http.StatusNotFound) {
		return err
	}
	for _, t := range ct.ComponentTemplates {
		if managed(t.ComponentTemplate) || !(components[t.Name] || matchAny(b.cfg.Templates, t.Name)) {
			continue
		}
		m.ComponentTemplates = append(m.ComponentTemplates, namedBody{Name: t.Name, Body: t.ComponentTemplate})
	}
	sort.Slice(m.IndexTemplates, func(i, j int) bool { return m.IndexTemplates[i].Name < m.IndexTemplates[j].Name })
	sort.Slice(m.ComponentTemplates, func(i, j int) bool { return m.ComponentTemplates[i].Name < m.ComponentTemplates[j].Name })
	return nil
}

// pipelines adds the ingest pipelines that the backed-up indices and
// templates name as default or final pipeline, those they call in turn,
// and those matching a pipelines pattern.
func (b *backuper) pipelines(ctx context.Context, m *meta) error {
	var all map[string]json.RawMessage
	if err := b.c.request(ctx, http.MethodGet, "/_ingest/pipeline", nil, nil, &all); err != nil && !isStatus(err, http.StatusNotFound) {
		return err
	}
	want := map[string]bool{}
	addFrom := func(flat map[string]any) {
		for _, k := range []string{"index.default_pipeline", "index.final_pipeline"} {
			if s, ok := flat[k].(string); ok && s != "_none" && s != "" {
				want[s] = true
			}
		}
	}
	for _, im := range m.Indices {
		addFrom(im.Settings)
	}
	for _, t := range append(append([]namedBody(nil), m.IndexTemplates...), m.ComponentTemplates...) {
		var body struct {
			Template struct {
				Settings map[string]any `json:"settings"`
			} `json:"template"`
		}
		if json.Unmarshal(t.Body, &body) == nil {
			flat := map[string]any{}
			flatten("", body.Template.Settings, flat)
			for k, v := range flat {
				if len(k) < 6 || k[:6] != "index." {
					flat["index."+k] = v
				}
			}
			addFrom(flat)
		}
	}
	for id := range all {
		if matchAny(b.cfg.Pipelines, id) {
			want[id] = true
		}
	}
	// Pipelines that the wanted ones call with a pipeline processor.
	for changed := true; changed; {
		changed = false
		for id := range want {
			for _, called := range calledPipelines(all[id]) {
				if !want[called] {
					want[called], changed = true, true
				}
			}
		}
	}
	for _, id := range sortedKeys(want) {
		body, ok := all[id]
		if !ok {
			b.log.WithField("pipeline", id).Warn("pipeline named in settings does not exist: not backed up")
			continue
		}
		if managed(body) {
			continue
		}
		m.Pipelines = append(m.Pipelines, namedBody{Name: id, Body: body})
	}
	return nil
}

// calledPipelines finds {"pipeline":{"name":X}} processors anywhere in a
// pipeline's body.
func calledPipelines(body json.RawMessage) []string {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return nil
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if pp, ok := t["pipeline"].(map[string]any); ok {
				if n, ok := pp["name"].(string); ok {
					out = append(out, n)
				}
			}
			for _, c := range t {
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(v)
	return out
}

func writeJSONArtifact(aw engines.ArtifactWriter, name string, v any) error {
	w, err := aw.Create(name)
	if err != nil {
		return err
	}
	raw, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if _, err := w.Write(append(raw, '\n')); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// docsArtifact streams every document of an index or data stream into one
// NDJSON artifact: a header line, one line per document, a trailer line
// with the count.
func (b *backuper) docsArtifact(ctx context.Context, aw engines.ArtifactWriter, artifact, target string) (int64, error) {
	w, err := aw.Create(artifact)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false) // keep '<', '>' and '&' in sources as they were
	if err := enc.Encode(docLine{Capsule: docsHeader, Index: target}); err != nil {
		return 0, err
	}
	var n int64
	emit := func(hits []hit) error {
		for i := range hits {
			h := &hits[i]
			if len(h.Source) == 0 {
				return fmt.Errorf("index %s: document %s has no _source (source disabled?): it cannot be backed up logically, use mode snapshot", target, h.ID)
			}
			id := h.ID
			if err := enc.Encode(docLine{ID: &id, Routing: h.Routing, Source: h.Source}); err != nil {
				return fmt.Errorf("index %s: document %s: %w", target, h.ID, err)
			}
		}
		n += int64(len(hits))
		b.done += int64(len(hits))
		b.progress.Report("documents", b.done, 0)
		return nil
	}
	start := time.Now()
	if b.si.hasPIT() {
		err = b.readPIT(ctx, target, emit)
	} else {
		err = b.readScroll(ctx, target, emit)
	}
	if err != nil {
		return 0, err
	}
	if err := enc.Encode(docLine{End: &docsEnd{Count: n}}); err != nil {
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("%s: %w", artifact, err)
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("%s: %w", artifact, err)
	}
	b.log.WithFields(logrus.Fields{"index": target, "documents": n, "artifact": artifact, "seconds": time.Since(start).Seconds()}).Info("index backed up")
	return n, nil
}

type hit struct {
	ID      string            `json:"_id"`
	Routing string            `json:"_routing"`
	Source  json.RawMessage   `json:"_source"`
	Sort    []json.RawMessage `json:"sort"`
}

type searchResult struct {
	PITID    string `json:"pit_id"`
	ScrollID string `json:"_scroll_id"`
	Hits     struct {
		Hits []hit `json:"hits"`
	} `json:"hits"`
}

// readPIT reads target through a point in time, sorted on _shard_doc and
// paged with search_after.
func (b *backuper) readPIT(ctx context.Context, target string, emit func([]hit) error) error {
	var open struct {
		ID string `json:"id"`
	}
	q := url.Values{"keep_alive": {b.cfg.KeepAlive}}
	if err := b.c.request(ctx, http.MethodPost, esPath(seg(target), "_pit"), q, nil, &open); err != nil {
		return fmt.Errorf("index %s: open point in time: %w", target, err)
	}
	id := open.ID
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := b.c.request(cctx, http.MethodDelete, "/_pit", nil, map[string]string{"id": id}, nil); err != nil && !isStatus(err, http.StatusNotFound) {
			b.log.WithFields(logrus.Fields{"index": target, "error": err}).Warn("close point in time")
		}
	}()
	var after []json.RawMessage
	for {
		body := map[string]any{
			"size":             b.cfg.BatchSize,
			"pit":              map[string]string{"id": id, "keep_alive": b.cfg.KeepAlive},
			"sort":             []any{map[string]string{"_shard_doc": "asc"}},
			"track_total_hits": false,
		}
		if after != nil {
			body["search_after"] = after
		}
		var r searchResult
		if err := b.c.request(ctx, http.MethodPost, "/_search", nil, body, &r); err != nil {
			if isStatus(err, http.StatusNotFound) {
				return fmt.Errorf("index %s: point in time: %w (keepAlive %s): %v", target, ErrContextExpired, b.cfg.KeepAlive, err)
			}
			return fmt.Errorf("index %s: search: %w", target, err)
		}
		if r.PITID != "" {
			id = r.PITID
		}
		hits := r.Hits.Hits
		if len(hits) == 0 {
			return nil
		}
		if err := emit(hits); err != nil {
			return err
		}
		after = hits[len(hits)-1].Sort
		if len(after) == 0 {
			return fmt.Errorf("index %s: search answered hits without sort values", target)
		}
	}
}

// readScroll reads target with a scroll sorted on _doc: for servers
// without a point in time.
func (b *backuper) readScroll(ctx context.Context, target string, emit func([]hit) error) error {
	var r searchResult
	q := url.Values{"scroll": {b.cfg.KeepAlive}}
	body := map[string]any{"size": b.cfg.BatchSize, "sort": []string{"_doc"}}
	if err := b.c.request(ctx, http.MethodPost, esPath(seg(target), "_search"), q, body, &r); err != nil {
		return fmt.Errorf("index %s: open scroll: %w", target, err)
	}
	id := r.ScrollID
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := b.c.request(cctx, http.MethodDelete, "/_search/scroll", nil, map[string]any{"scroll_id": []string{id}}, nil); err != nil && !isStatus(err, http.StatusNotFound) {
			b.log.WithFields(logrus.Fields{"index": target, "error": err}).Warn("clear scroll")
		}
	}()
	for len(r.Hits.Hits) > 0 {
		if err := emit(r.Hits.Hits); err != nil {
			return err
		}
		next := searchResult{}
		if err := b.c.request(ctx, http.MethodPost, "/_search/scroll", nil, map[string]string{"scroll": b.cfg.KeepAlive, "scroll_id": id}, &next); err != nil {
			if isStatus(err, http.StatusNotFound) {
				return fmt.Errorf("index %s: scroll: %w (keepAlive %s): %v", target, ErrContextExpired, b.cfg.KeepAlive, err)
			}
			return fmt.Errorf("index %s: scroll: %w", target, err)
		}
		if next.ScrollID != "" {
			id = next.ScrollID
		}
		r = next
	}
	return nil
}

// drain reads the rest of an artifact after err so that a corrupt
// artifact is reported as the *engines.ChecksumError it is, not as the
// parse or load error its damage caused.
func drain(r io.Reader, err error) error {
	if _, derr := io.Copy(io.Discard, r); derr != nil {
		var ce *engines.ChecksumError
		if errors.As(derr, &ce) {
			return derr
		}
	}
	return err
}
