package elasticsearch

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Formats written into BackupInfo.Format.
const (
	FormatLogical  = "es-logical/v1"
	FormatSnapshot = "es-snapshot/v1"

	metaArtifact     = "meta.json"
	snapshotArtifact = "snapshot.json"
	docsHeader       = "es-docs/v1"
)

// meta is the first artifact of a logical backup: everything but the
// documents.
type meta struct {
	Format             string           `json:"format"`
	Server             string           `json:"server"`
	Indices            []indexMeta      `json:"indices"`
	DataStreams        []dataStreamMeta `json:"dataStreams,omitempty"`
	IndexTemplates     []namedBody      `json:"indexTemplates,omitempty"`
	ComponentTemplates []namedBody      `json:"componentTemplates,omitempty"`
	Pipelines          []namedBody      `json:"pipelines,omitempty"`
}

type indexMeta struct {
	Name     string `json:"name"`
	Artifact string `json:"artifact"`
	// Settings are flat ("index.number_of_shards") and restorable: the
	// ones the cluster sets itself are left out.
	Settings map[string]any             `json:"settings"`
	Mappings json.RawMessage            `json:"mappings,omitempty"`
	Aliases  map[string]json.RawMessage `json:"aliases,omitempty"`
}

type dataStreamMeta struct {
	Name     string `json:"name"`
	Artifact string `json:"artifact"`
}

type namedBody struct {
	Name string          `json:"name"`
	Body json.RawMessage `json:"body"`
}

// docLine is one line of a documents artifact: the header, a document, or
// the trailer.
type docLine struct {
	Capsule string          `json:"capsule,omitempty"`
	Index   string          `json:"index,omitempty"`
	ID      *string         `json:"_id,omitempty"`
	Routing string          `json:"_routing,omitempty"`
	Source  json.RawMessage `json:"_source,omitempty"`
	End     *docsEnd        `json:"_end,omitempty"`
}

type docsEnd struct {
	Count int64 `json:"count"`
}

// droppedSetting reports settings the cluster sets itself, which an index
// creation refuses or which would be wrong on a new index.
func droppedSetting(k string) bool {
	for _, pfx := range []string{
		"index.version.", "index.routing.allocation.initial_recovery.", "index.resize.",
		"index.shrink.", "index.store.snapshot.", "archived.", "index.history.",
	} {
		if strings.HasPrefix(k, pfx) {
			return true
		}
	}
	switch k {
	case "index.uuid", "index.creation_date", "index.creation_date_string", "index.provided_name",
		"index.verified_before_close", "index.frozen", "index.search.throttled",
		"index.store.type_snapshot", "index.blocks.read_only_allow_delete":
		return true
	}
	return false
}

// lateSetting reports settings applied only once the documents are loaded:
// a restore loads with no replicas, no refresh, no ingest pipeline (the
// documents were ingested already) and no write block.
func lateSetting(k string) bool {
	switch k {
	case "index.number_of_replicas", "index.refresh_interval",
		"index.default_pipeline", "index.final_pipeline":
		return true
	}
	return strings.HasPrefix(k, "index.blocks.")
}

// restorable returns the settings worth keeping.
func restorable(flat map[string]any) map[string]any {
	out := make(map[string]any, len(flat))
	for k, v := range flat {
		if !droppedSetting(k) {
			out[k] = v
		}
	}
	return out
}

// creationSettings are the settings an index is created with for loading.
func creationSettings(s map[string]any) map[string]any {
	out := make(map[string]any, len(s)+2)
	for k, v := range s {
		if !lateSetting(k) {
			out[k] = v
		}
	}
	if _, auto := s["index.auto_expand_replicas"]; !auto {
		out["index.number_of_replicas"] = "0"
	}
	out["index.refresh_interval"] = "-1"
	return out
}

// finalSettings are the settings set once the documents are loaded: the
// late ones as they were, and null (the default) for those the loading
// overrode and the backup did not have.
func finalSettings(s map[string]any) map[string]any {
	out := map[string]any{"index.refresh_interval": nil}
	if _, auto := s["index.auto_expand_replicas"]; !auto {
		out["index.number_of_replicas"] = nil
	}
	for k, v := range s {
		if lateSetting(k) {
			out[k] = v
		}
	}
	return out
}

// flatten turns nested settings ({"index":{"number_of_shards":"1"}})
// into flat ones ({"index.number_of_shards":"1"}).
func flatten(prefix string, in map[string]any, out map[string]any) {
	for k, v := range in {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if m, ok := v.(map[string]any); ok {
			flatten(key, m, out)
		} else {
			out[key] = v
		}
	}
}

// match reports whether name matches an Elasticsearch pattern, where '*'
// matches any run of characters.
func match(pattern, name string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	for i := 1; i < len(parts)-1; i++ {
		j := strings.Index(name, parts[i])
		if j < 0 {
			return false
		}
		name = name[j+len(parts[i]):]
	}
	return strings.HasSuffix(name, parts[len(parts)-1])
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if match(p, name) {
			return true
		}
	}
	return false
}

// managed reports a template or pipeline the cluster installs itself
// (_meta.managed: true): those are left to the cluster.
func managed(body json.RawMessage) bool {
	var b struct {
		Meta struct {
			Managed bool `json:"managed"`
		} `json:"_meta"`
	}
	return json.Unmarshal(body, &b) == nil && b.Meta.Managed
}

var unsafeArtifactChars = regexp.MustCompile(`[^a-z0-9._-]+`)

// artifactNamer gives each index or data stream a unique artifact name
// that shows its name where it can.
type artifactNamer map[string]bool

func (a artifactNamer) name(kind, index string) string {
	s := unsafeArtifactChars.ReplaceAllString(strings.ToLower(index), "_")
	if len(s) > 150 {
		s = s[:150]
	}
	base := kind + "-" + s
	n := base + ".ndjson"
	for i := 2; a[n]; i++ {
		n = fmt.Sprintf("%s-%d.ndjson", base, i)
	}
	a[n] = true
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
