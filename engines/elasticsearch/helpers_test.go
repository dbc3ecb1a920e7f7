package elasticsearch

import (
	"fmt"
	"io"
	"reflect"
	"sync"

	"github.com/sirupsen/logrus"
)

// newBufferLogger returns a logger that writes JSON lines into buf.
func newBufferLogger(buf io.Writer) logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(&lockedWriter{w: buf})
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetLevel(logrus.DebugLevel)
	return l
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// compareSnapshots is enginetest's Compare for esSnapshot: equality by
// reflect.DeepEqual, and a short description of the first difference
// (DeepCompare would print two 100k-document snapshots).
func compareSnapshots(want, got any) string {
	if reflect.DeepEqual(want, got) {
		return ""
	}
	w, ok1 := want.(esSnapshot)
	g, ok2 := got.(esSnapshot)
	if !ok1 || !ok2 {
		return fmt.Sprintf("snapshots of types %T and %T", want, got)
	}
	for _, name := range unionKeys(w.Indices, g.Indices) {
		wi, inW := w.Indices[name]
		gi, inG := g.Indices[name]
		switch {
		case !inW:
			return "index " + name + " should not exist"
		case !inG:
			return "index " + name + " is missing"
		case !reflect.DeepEqual(wi.Settings, gi.Settings):
			return fmt.Sprintf("index %s settings: want %v, got %v", name, wi.Settings, gi.Settings)
		case !reflect.DeepEqual(wi.Mappings, gi.Mappings):
			return fmt.Sprintf("index %s mappings: want %v, got %v", name, wi.Mappings, gi.Mappings)
		case !reflect.DeepEqual(wi.Aliases, gi.Aliases):
			return fmt.Sprintf("index %s aliases: want %v, got %v", name, wi.Aliases, gi.Aliases)
		}
		if d := compareDocs("index "+name, wi.Docs, gi.Docs); d != "" {
			return d
		}
	}
	for _, name := range unionKeys(w.DataStreams, g.DataStreams) {
		if d := compareDocs("data stream "+name, w.DataStreams[name], g.DataStreams[name]); d != "" {
			return d
		}
	}
	for _, part := range []struct {
		what string
		w, g map[string]any
	}{{"index template", w.Templates, g.Templates}, {"component template", w.Components, g.Components}, {"pipeline", w.Pipelines, g.Pipelines}} {
		for _, n := range unionKeys(part.w, part.g) {
			if !reflect.DeepEqual(part.w[n], part.g[n]) {
				return fmt.Sprintf("%s %s: want %v, got %v", part.what, n, part.w[n], part.g[n])
			}
		}
	}
	return "snapshots differ"
}

func compareDocs(what string, w, g map[string]docSnap) string {
	if len(w) != len(g) {
		return fmt.Sprintf("%s: %d documents, want %d", what, len(g), len(w))
	}
	for _, id := range unionKeys(w, g) {
		if !reflect.DeepEqual(w[id], g[id]) {
			return fmt.Sprintf("%s document %q: want %v, got %v", what, id, w[id], g[id])
		}
	}
	return ""
}

func unionKeys[V any](a, b map[string]V) []string {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return sortedKeys(m)
}
