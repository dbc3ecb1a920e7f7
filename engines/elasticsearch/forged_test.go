package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// These tests restore forged backups into the stand-in: whoever can write
// the bucket's backups/ can change a real backup's meta.json or
// snapshot.json (and its documents artifacts) and record the new
// checksums in the index. The target source selects "<prefix>-*"; a
// second tenant's index, alias, templates and pipeline live beside it.

const tenantB = "tenantb"

// seedTenantB gives the stand-in another tenant's data: an index with an
// alias and documents, an index and a component template, a pipeline.
func seedTenantB(ctx context.Context, t *testing.T, svc *esService) {
	t.Helper()
	c := svc.client(t)
	defer c.close()
	req := func(method, path string, body any) {
		t.Helper()
		must(t, c.request(ctx, method, path, nil, body, nil))
	}
	req("PUT", esPath("_ingest", "pipeline", tenantB+"-pipe"), map[string]any{"processors": []any{map[string]any{"set": map[string]any{"field": "tenant", "value": "b"}}}})
	req("PUT", esPath("_component_template", tenantB+"-ct"), map[string]any{"template": map[string]any{"settings": map[string]any{"number_of_replicas": 0}}})
	req("PUT", esPath("_index_template", tenantB+"-tpl"), map[string]any{"index_patterns": []string{tenantB + "-*"}, "composed_of": []string{tenantB + "-ct"}, "priority": 100})
	req("PUT", esPath(tenantB+"-data"), map[string]any{"settings": map[string]any{"number_of_replicas": 0}, "aliases": map[string]any{tenantB + "-alias": map[string]any{}}})
	svc.bulk(ctx, t, c, "index", tenantB+"-data", 5, func(i int) string { return fmt.Sprintf("b-%d", i) }, nil,
		func(i int) map[string]any { return map[string]any{"secret": fmt.Sprintf("tenant b's document %d", i)} })
	req("POST", esPath(tenantB+"-data", "_refresh"), nil)
}

// state is everything on the stand-in whose name starts with prefix:
// indices (settings, mappings, aliases, documents), who holds aliases of
// that name, templates, pipelines, data streams.
func (s *standIn) state(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]any{}
	for n, ix := range s.indices {
		if strings.HasPrefix(n, prefix) {
			docs := map[string]string{}
			for id, d := range ix.docs {
				docs[id] = d.routing + " " + string(d.source)
			}
			out["index "+n] = map[string]any{"settings": ix.settings, "mappings": string(ix.mappings), "aliases": ix.aliases, "docs": docs}
		}
		for a := range ix.aliases {
			if strings.HasPrefix(a, prefix) {
				out["alias "+a+" on "+n] = true
			}
		}
	}
	for kind, m := range map[string]map[string]json.RawMessage{"itemplate": s.itemplates, "ctemplate": s.ctemplates, "pipeline": s.pipelines} {
		for n, b := range m {
			if strings.HasPrefix(n, prefix) {
				out[kind+" "+n] = string(b)
			}
		}
	}
	for n, b := range s.streams {
		if strings.HasPrefix(n, prefix) {
			out["stream "+n] = b
		}
	}
	raw, _ := json.Marshal(out)
	return string(raw)
}

// writeCalls counts the stand-in's requests that change the cluster.
func (s *standIn) writeCalls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]int{}
	for _, w := range []string{"index-put", "index-delete", "settings-put", "bulk", "aliases", "itemplate-put", "ctemplate-put", "pipeline-put", "datastream-delete", "snapshot-restore", "snapshot-put", "snapshot-delete"} {
		m[w] = s.calls[w]
	}
	return m
}

// forgeStore copies a real backup's artifacts into a new store, passing
// each through edit; the new store records the new checksums, as a forger
// who can write the index does.
func forgeStore(t *testing.T, store *enginetest.Store, edit func(name string, data []byte) []byte) *enginetest.Store {
	t.Helper()
	out := enginetest.NewStore()
	for _, n := range store.Names() {
		data := append([]byte(nil), store.Bytes(n)...)
		if edit != nil {
			data = edit(n, data)
		}
		w, err := out.Create(n)
		must(t, err)
		_, err = w.Write(data)
		must(t, err)
		must(t, w.Close())
	}
	return out
}

// renameDocs rewrites a documents artifact's header to name index.
func renameDocs(t *testing.T, data []byte, index string) []byte {
	t.Helper()
	_, rest, ok := bytes.Cut(data, []byte("\n"))
	if !ok {
		t.Fatalf("documents artifact without a header line")
	}
	head, err := json.Marshal(docLine{Capsule: docsHeader, Index: index})
	must(t, err)
	return append(append(head, '\n'), rest...)
}

// forgeMeta returns a copy of store whose meta.json went through edit;
// edit returns the documents artifacts to rename (artifact → index).
func forgeMeta(t *testing.T, store *enginetest.Store, edit func(m *meta) map[string]string) *enginetest.Store {
	t.Helper()
	var m meta
	must(t, json.Unmarshal(store.Bytes(metaArtifact), &m))
	renames := edit(&m)
	raw, err := json.Marshal(&m)
	must(t, err)
	return forgeStore(t, store, func(name string, data []byte) []byte {
		if name == metaArtifact {
			return raw
		}
		if idx, ok := renames[name]; ok {
			return renameDocs(t, data, idx)
		}
		return data
	})
}

// TestForgedMetaIsRefused: a forged meta.json that names a pattern, _all,
// a list, a path, another tenant's index, alias, template or pipeline is
// refused before any request that changes the cluster, in place and with
// renameSuffix; the other tenant and the target's own indices are
// untouched.
func TestForgedMetaIsRefused(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	ctx := context.Background()
	svc.Seed(ctx, t)
	seedTenantB(ctx, t, svc)
	store, info := enginetest.Backup(ctx, t, newTestEngine(), svc.Source(t))
	p := svc.prefix(t)

	// renameIndex names p-a's entry (and its documents' header) name.
	renameIndex := func(name string) func(m *meta) map[string]string {
		return func(m *meta) map[string]string {
			for i := range m.Indices {
				if m.Indices[i].Name == p+"-a" {
					m.Indices[i].Name = name
					return map[string]string{m.Indices[i].Artifact: name}
				}
			}
			t.Fatalf("no index %s-a in the backup", p)
			return nil
		}
	}
	addBody := func(list *[]namedBody, name string, body any) {
		raw, err := json.Marshal(body)
		must(t, err)
		*list = append(*list, namedBody{Name: name, Body: raw})
	}
	cases := []struct {
		name string
		edit func(m *meta) map[string]string
		want error
	}{
		{"wildcard", renameIndex("*"), ErrBadName},
		{"_all", renameIndex("_all"), ErrBadName},
		{"own pattern", renameIndex(p + "-*"), ErrBadName},
		{"comma list", renameIndex(p + "-a," + tenantB + "-data"), ErrBadName},
		{"dot dot slash", renameIndex("../" + tenantB + "-data"), ErrBadName},
		{"escaped slash", renameIndex(p + "-a%2F..%2F" + tenantB + "-data"), ErrBadName},
		{"sub path", renameIndex(tenantB + "-data/_doc"), ErrBadName},
		{"dot dot", renameIndex(".."), ErrBadName},
		{"empty", renameIndex(""), ErrBadName},
		{"upper case", renameIndex(strings.ToUpper(tenantB + "-data")), ErrBadName},
		{"too long", renameIndex(p + "-" + strings.Repeat("a", 256)), ErrBadName},
		{"another tenant's index", renameIndex(tenantB + "-data"), ErrOutsideTarget},
		{"another tenant's alias", func(m *meta) map[string]string {
			if m.Indices[0].Aliases == nil {
				m.Indices[0].Aliases = map[string]json.RawMessage{}
			}
			m.Indices[0].Aliases[tenantB+"-alias"] = json.RawMessage(`{"is_write_index":true}`)
			return nil
		}, ErrOutsideTarget},
		{"alias pattern", func(m *meta) map[string]string {
			if m.Indices[0].Aliases == nil {
				m.Indices[0].Aliases = map[string]json.RawMessage{}
			}
			m.Indices[0].Aliases[tenantB+"-*"] = json.RawMessage(`{}`)
			return nil
		}, ErrBadName},
		{"another tenant's data stream", func(m *meta) map[string]string {
			if len(m.DataStreams) == 0 {
				t.Fatalf("no data stream in the backup")
			}
			m.DataStreams[0].Name = tenantB + "-logs"
			return map[string]string{m.DataStreams[0].Artifact: tenantB + "-logs"}
		}, ErrOutsideTarget},
		{"another tenant's index template", func(m *meta) map[string]string {
			addBody(&m.IndexTemplates, tenantB+"-tpl", map[string]any{"index_patterns": []string{p + "-zz-*"}, "priority": 1})
			return nil
		}, ErrOutsideTarget},
		{"template for every index", func(m *meta) map[string]string {
			addBody(&m.IndexTemplates, p+"-everything", map[string]any{"index_patterns": []string{"*"}, "priority": 1000})
			return nil
		}, ErrOutsideTarget},
		{"another tenant's component template", func(m *meta) map[string]string {
			addBody(&m.ComponentTemplates, tenantB+"-ct", map[string]any{"template": map[string]any{"settings": map[string]any{"number_of_replicas": 5}}})
			return nil
		}, ErrOutsideTarget},
		{"another tenant's pipeline", func(m *meta) map[string]string {
			addBody(&m.Pipelines, tenantB+"-pipe", map[string]any{"processors": []any{map[string]any{"set": map[string]any{"field": "secret", "value": "stolen"}}}})
			return nil
		}, ErrOutsideTarget},
		{"template pattern name", func(m *meta) map[string]string {
			addBody(&m.IndexTemplates, "*", map[string]any{"index_patterns": []string{p + "-zz-*"}})
			return nil
		}, ErrBadName},
	}
	for _, extra := range []map[string]string{nil, {"renameSuffix": "-x"}} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/options=%v", c.name, extra), func(t *testing.T) {
				forged := forgeMeta(t, store, c.edit)
				beforeB, beforeOwn, beforeWrites := std.state(tenantB), std.state(p), std.writeCalls()
				_, err := newTestEngine().Restore(ctx, forged.RestoreJob(t, "forged", svc.Source(t), info, engines.RestoreOptions{Extra: extra}))
				if !errors.Is(err, c.want) || !strings.Contains(err.Error(), metaArtifact) {
					t.Errorf("Restore = %v, want %v naming %s", err, c.want, metaArtifact)
				}
				if after := std.writeCalls(); !reflect.DeepEqual(beforeWrites, after) {
					t.Errorf("requests that change the cluster were made: before %v, after %v", beforeWrites, after)
				}
				if after := std.state(tenantB); after != beforeB {
					t.Errorf("the other tenant changed:\nbefore %s\nafter  %s", beforeB, after)
				}
				if after := std.state(p); after != beforeOwn {
					t.Errorf("the target's own indices changed")
				}
			})
		}
	}

	// The real backup still restores, with both kinds of restore.
	for _, extra := range []map[string]string{nil, {"renameSuffix": "-ok"}} {
		if _, err := newTestEngine().Restore(ctx, store.RestoreJob(t, "good", svc.Source(t), info, engines.RestoreOptions{Extra: extra, DropPrevious: true})); err != nil {
			t.Fatalf("Restore of the real backup with %v: %v", extra, err)
		}
	}
}

// TestForgedSnapshotRecordIsRefused: a forged snapshot.json that names
// another repository, another tenant's index or a pattern is refused
// before any request that changes the cluster.
func TestForgedSnapshotRecordIsRefused(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	svc.noTemplates = true
	svc.extra = map[string]any{"mode": "snapshot", "repository": "s3repo"}
	std.repos[tenantB+"-repo"] = "s3"
	ctx := context.Background()
	svc.Seed(ctx, t)
	seedTenantB(ctx, t, svc)
	c := svc.client(t)
	defer c.close()
	must(t, c.request(ctx, http.MethodPut, esPath("_snapshot", tenantB+"-repo", "snap-b"), nil, map[string]any{"indices": tenantB + "-data", "include_global_state": false}, nil))
	store, info := enginetest.Backup(ctx, t, newTestEngine(), svc.Source(t))
	p := svc.prefix(t)

	cases := []struct {
		name string
		edit func(r *snapshotRecord)
		want error
	}{
		{"another tenant's repository", func(r *snapshotRecord) { r.Repository, r.Snapshot, r.UUID = tenantB+"-repo", "snap-b", "" }, ErrOutsideTarget},
		{"another tenant's index", func(r *snapshotRecord) { r.Indices[0].Name = tenantB + "-data" }, ErrOutsideTarget},
		{"wildcard index", func(r *snapshotRecord) { r.Indices[0].Name = "*" }, ErrBadName},
		{"wildcard data stream", func(r *snapshotRecord) { r.DataStreams = append(r.DataStreams, "*") }, ErrBadName},
		{"_all snapshot", func(r *snapshotRecord) { r.Snapshot = "_all" }, ErrBadName},
		{"snapshot path", func(r *snapshotRecord) { r.Snapshot = "../" + tenantB + "-repo/snap-b" }, ErrBadName},
		{"repository path", func(r *snapshotRecord) { r.Repository = "s3repo/../" + tenantB + "-repo" }, ErrBadName},
	}
	for _, extra := range []map[string]string{nil, {"renameSuffix": "-x"}} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/options=%v", tc.name, extra), func(t *testing.T) {
				var rec snapshotRecord
				must(t, json.Unmarshal(store.Bytes(snapshotArtifact), &rec))
				tc.edit(&rec)
				raw, err := json.Marshal(&rec)
				must(t, err)
				forged := forgeStore(t, store, func(string, []byte) []byte { return raw })
				beforeB, beforeOwn, beforeWrites := std.state(tenantB), std.state(p), std.writeCalls()
				_, err = newTestEngine().Restore(ctx, forged.RestoreJob(t, "forged", svc.Source(t), info, engines.RestoreOptions{Extra: extra}))
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), snapshotArtifact) {
					t.Errorf("Restore = %v, want %v naming %s", err, tc.want, snapshotArtifact)
				}
				if after := std.writeCalls(); !reflect.DeepEqual(beforeWrites, after) {
					t.Errorf("requests that change the cluster were made: before %v, after %v", beforeWrites, after)
				}
				if after := std.state(tenantB); after != beforeB {
					t.Errorf("the other tenant changed:\nbefore %s\nafter  %s", beforeB, after)
				}
				if after := std.state(p); after != beforeOwn {
					t.Errorf("the target's own indices changed")
				}
			})
		}
	}
}

// TestOversizedArtifactsAreRefused: a meta.json or snapshot.json larger
// than maxMetaBytes, or a documents line larger than maxDocLineBytes (what
// a small zstd bomb decodes to), is refused with ErrTooLarge before it is
// held whole, and before any request that changes the cluster.
func TestOversizedArtifactsAreRefused(t *testing.T) {
	ctx := context.Background()
	pad := func(raw []byte, n int) []byte {
		var m map[string]any
		must(t, json.Unmarshal(raw, &m))
		m["pad"] = strings.Repeat("a", n)
		out, err := json.Marshal(m)
		must(t, err)
		return out
	}
	check := func(t *testing.T, std *standIn, svc *esService, forged *enginetest.Store, info engines.BackupInfo, artifact string) {
		t.Helper()
		before := std.writeCalls()
		_, err := newTestEngine().Restore(ctx, forged.RestoreJob(t, "big", svc.Source(t), info, engines.RestoreOptions{Extra: map[string]string{"renameSuffix": "-big"}}))
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), artifact) {
			t.Fatalf("Restore = %v, want ErrTooLarge naming %s", err, artifact)
		}
		if artifact == metaArtifact || artifact == snapshotArtifact {
			if after := std.writeCalls(); !reflect.DeepEqual(before, after) {
				t.Errorf("requests that change the cluster were made: before %v, after %v", before, after)
			}
		}
		std.mu.Lock()
		defer std.mu.Unlock()
		for n := range std.indices {
			if strings.HasSuffix(n, "-big") {
				t.Errorf("staged index %s left behind", n)
			}
		}
	}
	t.Run(metaArtifact, func(t *testing.T) {
		svc, std := newStandInService(t, "elasticsearch", "8.11.0")
		svc.Seed(ctx, t)
		store, info := enginetest.Backup(ctx, t, newTestEngine(), svc.Source(t))
		forged := forgeStore(t, store, func(name string, data []byte) []byte {
			if name == metaArtifact {
				return pad(data, maxMetaBytes)
			}
			return data
		})
		check(t, std, svc, forged, info, metaArtifact)
	})
	t.Run(snapshotArtifact, func(t *testing.T) {
		svc, std := newStandInService(t, "elasticsearch", "8.11.0")
		svc.noTemplates = true
		svc.extra = map[string]any{"mode": "snapshot", "repository": "s3repo"}
		svc.Seed(ctx, t)
		store, info := enginetest.Backup(ctx, t, newTestEngine(), svc.Source(t))
		forged := forgeStore(t, store, func(_ string, data []byte) []byte { return pad(data, maxMetaBytes) })
		check(t, std, svc, forged, info, snapshotArtifact)
	})
	t.Run("document line", func(t *testing.T) {
		svc, std := newStandInService(t, "elasticsearch", "8.11.0")
		svc.Seed(ctx, t)
		store, info := enginetest.Backup(ctx, t, newTestEngine(), svc.Source(t))
		var m meta
		must(t, json.Unmarshal(store.Bytes(metaArtifact), &m))
		artifact := m.Indices[len(m.Indices)-1].Artifact
		forged := forgeStore(t, store, func(name string, data []byte) []byte {
			if name != artifact {
				return data
			}
			head, rest, _ := bytes.Cut(data, []byte("\n"))
			id := "big"
			line, err := json.Marshal(docLine{ID: &id, Source: json.RawMessage(`{"pad":"` + strings.Repeat("a", maxDocLineBytes) + `"}`)})
			must(t, err)
			return bytes.Join([][]byte{head, line, rest}, []byte("\n"))
		})
		check(t, std, svc, forged, info, artifact)
	})
}

// TestDataAfterTrailer: white space after a documents artifact's trailer
// is read (to the checksum) and ignored; anything else is refused.
func TestDataAfterTrailer(t *testing.T) {
	svc, _ := newStandInService(t, "elasticsearch", "8.11.0")
	ctx, store, info, want := backupAndDamage(t, svc)
	var m meta
	must(t, json.Unmarshal(store.Bytes(metaArtifact), &m))
	artifact := m.Indices[0].Artifact
	tail := func(s string) *enginetest.Store {
		return forgeStore(t, store, func(name string, data []byte) []byte {
			if name == artifact {
				return append(data, s...)
			}
			return data
		})
	}
	opts := engines.RestoreOptions{Extra: map[string]string{"renameSuffix": "-tail"}}
	_, err := newTestEngine().Restore(ctx, tail("{\"_id\":\"late\"}\n").RestoreJob(t, "tail", svc.Source(t), info, opts))
	if err == nil || !strings.Contains(err.Error(), "data after its trailer") {
		t.Fatalf("Restore with a document after the trailer = %v", err)
	}
	if _, err := newTestEngine().Restore(ctx, tail("\n \n\t\n").RestoreJob(t, "space", svc.Source(t), info, engines.RestoreOptions{})); err != nil {
		t.Fatalf("Restore with white space after the trailer: %v", err)
	}
	if diff := compareSnapshots(want, svc.Snapshot(ctx, t)); diff != "" {
		t.Fatalf("restored data differs: %s", diff)
	}
}
