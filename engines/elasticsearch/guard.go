package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A backup is data, not authority: whoever can write the bucket's backups/
// can forge a meta.json or snapshot.json whose checksum the index records.
// Everything a restore takes from one is checked here before the first
// request built from it: sizes, names, and that each name belongs to the
// target source.

const (
	// maxMetaBytes bounds meta.json and snapshot.json, which a restore
	// reads whole. The meta of thousands of indices with large mappings
	// stays far below it.
	maxMetaBytes = 64 << 20
	// maxDocLineBytes bounds one line of a documents artifact (one
	// document with its _id and _routing), which a restore holds whole.
	// Elasticsearch refuses a request larger than http.max_content_length,
	// 100mb by default: no document larger than that was ever indexed.
	maxDocLineBytes = 100 << 20
	// maxNameBytes is Elasticsearch's limit on an index name.
	maxNameBytes = 255
)

var (
	// ErrTooLarge reports an artifact, or a line of one, larger than the
	// engine reads whole: a corrupt or forged backup.
	ErrTooLarge = errors.New("larger than this engine reads whole")
	// ErrBadName reports a name in a backup that is not one real index,
	// alias, template, pipeline or snapshot name: a pattern, a list, _all,
	// or something that would change a request's path.
	ErrBadName = errors.New("not a real name")
	// ErrOutsideTarget reports a name in a backup that the target
	// source's settings (indices, templates, pipelines, repository) do not
	// cover, or that something outside them uses: a restore writes nothing
	// that is not the target's.
	ErrOutsideTarget = errors.New("outside what the target source selects")
)

// readWhole reads an artifact that is read whole, up to maxMetaBytes.
func readWhole(r io.Reader, artifact string) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxMetaBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxMetaBytes {
		return nil, fmt.Errorf("%s: %w (%d MiB): not an artifact this engine wrote", artifact, ErrTooLarge, maxMetaBytes>>20)
	}
	return raw, nil
}

// Kinds of names, as errors name them.
const (
	kindIndex      = "index"
	kindAlias      = "alias"
	kindDataStream = "data stream"
	kindITemplate  = "index template"
	kindCTemplate  = "component template"
	kindPipeline   = "pipeline"
	kindSnapshot   = "snapshot"
	kindRepository = "repository"
)

// checkName refuses a name that is not one real name of its kind. The
// rules are Elasticsearch's index name rules, tightened: lowercase
// (pipeline ids may have capitals), none of \ / * ? " < > | , # : % or
// whitespace or control characters, not starting with - _ or +, not . or
// .., at most 255 bytes. So no pattern, no list, no _all, and nothing that
// changes a path once escaped (.., %2F).
func checkName(artifact, kind, n string) error {
	why := ""
	switch {
	case n == "":
		why = "is empty"
	case len(n) > maxNameBytes:
		why = fmt.Sprintf("is longer than %d bytes", maxNameBytes)
	case !utf8.ValidString(n):
		why = "is not UTF-8"
	case n == "." || n == "..":
		why = "is . or .."
	case strings.ContainsAny(n, `\/*?"<>|,#:%`):
		why = `holds one of \ / * ? " < > | , # : %`
	case strings.IndexFunc(n, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		why = "holds whitespace or a control character"
	case strings.HasPrefix(n, "-") || strings.HasPrefix(n, "_") || strings.HasPrefix(n, "+"):
		why = "starts with -, _ or +"
	case kind != kindPipeline && n != strings.ToLower(n):
		why = "is not lowercase"
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("%s: %s %s: %w: it %s", artifact, kind, clip(n), ErrBadName, why)
}

// clip quotes a name for an error, cut short.
func clip(n string) string {
	if len(n) > 80 {
		return fmt.Sprintf("%q…", n[:80])
	}
	return fmt.Sprintf("%q", n)
}

// checkNames checks every name in meta.json.
func (m *meta) checkNames() error {
	seen := map[string]bool{}
	for _, im := range m.Indices {
		if err := checkIndexMeta(metaArtifact, im); err != nil {
			return err
		}
		if seen[im.Name] {
			return fmt.Errorf("%s: index %s appears twice", metaArtifact, im.Name)
		}
		seen[im.Name] = true
	}
	for _, ds := range m.DataStreams {
		if err := checkName(metaArtifact, kindDataStream, ds.Name); err != nil {
			return err
		}
		if seen[ds.Name] {
			return fmt.Errorf("%s: %s appears twice", metaArtifact, ds.Name)
		}
		seen[ds.Name] = true
	}
	for _, set := range []struct {
		kind  string
		items []namedBody
	}{{kindITemplate, m.IndexTemplates}, {kindCTemplate, m.ComponentTemplates}, {kindPipeline, m.Pipelines}} {
		names := map[string]bool{}
		for _, nb := range set.items {
			if err := checkName(metaArtifact, set.kind, nb.Name); err != nil {
				return err
			}
			if names[nb.Name] {
				return fmt.Errorf("%s: %s %s appears twice", metaArtifact, set.kind, nb.Name)
			}
			names[nb.Name] = true
		}
	}
	return nil
}

func checkIndexMeta(artifact string, im indexMeta) error {
	if err := checkName(artifact, kindIndex, im.Name); err != nil {
		return err
	}
	for a := range im.Aliases {
		if err := checkName(artifact, kindAlias, a); err != nil {
			return fmt.Errorf("%w (an alias of index %s)", err, im.Name)
		}
	}
	return nil
}

// checkNames checks every name in snapshot.json.
func (rec *snapshotRecord) checkNames() error {
	if !repoName.MatchString(rec.Repository) {
		return fmt.Errorf("%s: %s %s: %w", snapshotArtifact, kindRepository, clip(rec.Repository), ErrBadName)
	}
	if err := checkName(snapshotArtifact, kindSnapshot, rec.Snapshot); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, im := range rec.Indices {
		if err := checkIndexMeta(snapshotArtifact, im); err != nil {
			return err
		}
		seen[im.Name] = true
	}
	for _, ds := range rec.DataStreams {
		if err := checkName(snapshotArtifact, kindDataStream, ds); err != nil {
			return err
		}
		if seen[ds] {
			return fmt.Errorf("%s: %s appears twice", snapshotArtifact, ds)
		}
		seen[ds] = true
	}
	return nil
}

// guard decides, with read-only requests, whether everything a restore
// would write belongs to the target source:
//
//   - each index and data stream matches the target's indices, or is one
//     they resolve to on the cluster (the member of a selected alias);
//   - each alias the restore would create or move, and each index name
//     the cluster has as an alias, is held by nothing else;
//   - each index template matches templates, or applies only to names
//     inside indices (and so did the one it would replace);
//   - each component template and pipeline matches templates (pipelines)
//     or indices, or is new, or is unchanged.
type guard struct {
	r        *restorer
	artifact string
	resolved map[string]bool // what indices resolves to on the cluster; nil until needed
}

// outside reports a name the target's setting does not cover; why, when
// not empty, says more.
func (g *guard) outside(kind, name, setting string, patterns []string, why string) error {
	if why != "" {
		why = "; " + why
	}
	return fmt.Errorf("%s: %s %s: %w (%s %v)%s: refusing the backup", g.artifact, kind, name, ErrOutsideTarget, setting, patterns, why)
}

// selected reports whether an index or data stream is the target's.
func (g *guard) selected(ctx context.Context, name string) (bool, error) {
	if matchAny(g.r.cfg.Indices, name) {
		return true, nil
	}
	if g.resolved == nil {
		b := &backuper{c: g.r.c, cfg: g.r.cfg, si: g.r.si, log: g.r.log}
		idx, streams, err := b.resolve(ctx)
		if err != nil && !isStatus(err, http.StatusNotFound) {
			return false, fmt.Errorf("resolve the target's indices: %w", err)
		}
		g.resolved = map[string]bool{}
		for _, n := range append(idx, streams...) {
			g.resolved[n] = true
		}
	}
	return g.resolved[name], nil
}

// check runs every check on the indices and data streams (and, from a
// logical backup, the templates and pipelines) the restore would write.
func (g *guard) check(ctx context.Context, indices []indexMeta, streams []string, m *meta) error {
	cfg := g.r.cfg
	for _, im := range indices {
		if err := g.name(ctx, kindIndex, im.Name); err != nil {
			return err
		}
		// A name the cluster has as an alias is moved (and, with
		// dropPrevious, its indices deleted) by a renameSuffix restore.
		if err := g.aliasHolders(ctx, im.Name, im.Name); err != nil {
			return err
		}
		for _, a := range sortedKeys(im.Aliases) {
			if err := g.aliasHolders(ctx, a, im.Name); err != nil {
				return err
			}
		}
		if sfx := g.r.opts.renameSuffix; len(im.Name+sfx) > maxNameBytes {
			return fmt.Errorf("%s: index %s with renameSuffix %s is longer than %d bytes", g.artifact, im.Name, sfx, maxNameBytes)
		}
	}
	for _, ds := range streams {
		if err := g.name(ctx, kindDataStream, ds); err != nil {
			return err
		}
	}
	if m == nil || len(m.IndexTemplates)+len(m.ComponentTemplates)+len(m.Pipelines) == 0 {
		return nil
	}
	if len(m.IndexTemplates)+len(m.ComponentTemplates) > 0 && !g.r.si.hasComposableTemplates() {
		return fmt.Errorf("%s: names composable templates, which %s does not have", g.artifact, g.r.si.product())
	}
	var live struct {
		itemplates, ctemplates, pipelines map[string]json.RawMessage
	}
	for _, t := range m.IndexTemplates {
		if matchAny(cfg.Templates, t.Name) {
			continue
		}
		patterns, err := indexPatterns(t.Body)
		if err != nil {
			return fmt.Errorf("%s: index template %s: %w", g.artifact, t.Name, err)
		}
		if !g.inside(patterns) {
			return g.outside(kindITemplate, t.Name, "indices", cfg.Indices, fmt.Sprintf("it applies to %v: name it in templates to restore it", patterns))
		}
		if live.itemplates == nil {
			if live.itemplates, err = g.listITemplates(ctx); err != nil {
				return err
			}
		}
		if old, ok := live.itemplates[t.Name]; ok && !sameJSON(old, t.Body) {
			oldPatterns, err := indexPatterns(old)
			if err != nil || !g.inside(oldPatterns) {
				return g.outside(kindITemplate, t.Name, "indices", cfg.Indices, fmt.Sprintf("the cluster's template of that name applies to %v: name it in templates to replace it", oldPatterns))
			}
		}
	}
	for _, t := range m.ComponentTemplates {
		if matchAny(cfg.Templates, t.Name) || matchAny(cfg.Indices, t.Name) {
			continue
		}
		if live.ctemplates == nil {
			var err error
			if live.ctemplates, err = g.listCTemplates(ctx); err != nil {
				return err
			}
		}
		if old, ok := live.ctemplates[t.Name]; ok && !sameJSON(old, t.Body) {
			return g.outside(kindCTemplate, t.Name, "templates", cfg.Templates, "the cluster has another component template of that name: name it in templates to replace it")
		}
	}
	for _, p := range m.Pipelines {
		if matchAny(cfg.Pipelines, p.Name) || matchAny(cfg.Indices, p.Name) {
			continue
		}
		if live.pipelines == nil {
			live.pipelines = map[string]json.RawMessage{}
			err := g.r.c.request(ctx, http.MethodGet, "/_ingest/pipeline", nil, nil, &live.pipelines)
			if err != nil && !isStatus(err, http.StatusNotFound) {
				return fmt.Errorf("list pipelines: %w", err)
			}
		}
		if old, ok := live.pipelines[p.Name]; ok && !sameJSON(old, p.Body) {
			return g.outside(kindPipeline, p.Name, "pipelines", cfg.Pipelines, "the cluster has another pipeline of that id: name it in pipelines to replace it")
		}
	}
	return nil
}

func (g *guard) name(ctx context.Context, kind, name string) error {
	ok, err := g.selected(ctx, name)
	if err != nil {
		return err
	}
	if !ok {
		return g.outside(kind, name, "indices", g.r.cfg.Indices, "")
	}
	return nil
}

// aliasHolders refuses an alias that an index outside the target holds:
// creating or moving it would change what that index's readers see.
func (g *guard) aliasHolders(ctx context.Context, alias, of string) error {
	holders, err := g.r.aliasHolders(ctx, alias)
	if err != nil {
		return fmt.Errorf("alias %s: %w", alias, err)
	}
	for _, h := range holders {
		ok, err := g.selected(ctx, h)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s: alias %s (of index %s): %w: index %s holds it, and is not in indices %v: refusing the backup", g.artifact, alias, of, ErrOutsideTarget, h, g.r.cfg.Indices)
		}
	}
	return nil
}

// inside reports whether every name the index patterns match is matched
// by the target's indices: each pattern equals a selected name or
// pattern, is a name a pattern matches, or extends the prefix of a
// pattern whose only '*' is its last character.
func (g *guard) inside(patterns []string) bool {
	if len(patterns) == 0 {
		return false
	}
	for _, p := range patterns {
		ok := false
		for _, q := range g.r.cfg.Indices {
			switch {
			case p == q:
				ok = true
			case !strings.Contains(p, "*") && match(q, p):
				ok = true
			case strings.Index(q, "*") == len(q)-1 && strings.HasPrefix(p, q[:len(q)-1]):
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func indexPatterns(body json.RawMessage) ([]string, error) {
	var b struct {
		IndexPatterns json.RawMessage `json:"index_patterns"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, err
	}
	// A single pattern may be a string.
	var one string
	if json.Unmarshal(b.IndexPatterns, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(b.IndexPatterns, &many); err != nil {
		return nil, fmt.Errorf("index_patterns: %w", err)
	}
	return many, nil
}

func (g *guard) listITemplates(ctx context.Context) (map[string]json.RawMessage, error) {
	var it struct {
		IndexTemplates []struct {
			Name          string          `json:"name"`
			IndexTemplate json.RawMessage `json:"index_template"`
		} `json:"index_templates"`
	}
	if err := g.r.c.request(ctx, http.MethodGet, "/_index_template", nil, nil, &it); err != nil && !isStatus(err, http.StatusNotFound) {
		return nil, fmt.Errorf("list index templates: %w", err)
	}
	out := map[string]json.RawMessage{}
	for _, t := range it.IndexTemplates {
		out[t.Name] = t.IndexTemplate
	}
	return out, nil
}

func (g *guard) listCTemplates(ctx context.Context) (map[string]json.RawMessage, error) {
	var ct struct {
		ComponentTemplates []struct {
			Name              string          `json:"name"`
			ComponentTemplate json.RawMessage `json:"component_template"`
		} `json:"component_templates"`
	}
	if err := g.r.c.request(ctx, http.MethodGet, "/_component_template", nil, nil, &ct); err != nil && !isStatus(err, http.StatusNotFound) {
		return nil, fmt.Errorf("list component templates: %w", err)
	}
	out := map[string]json.RawMessage{}
	for _, t := range ct.ComponentTemplates {
		out[t.Name] = t.ComponentTemplate
	}
	return out, nil
}

// sameJSON reports whether two JSON documents are equal as values.
func sameJSON(a, b json.RawMessage) bool {
	decode := func(raw json.RawMessage) (any, bool) {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v) == nil
	}
	va, ok1 := decode(a)
	vb, ok2 := decode(b)
	return ok1 && ok2 && reflect.DeepEqual(va, vb)
}
