package schemas_test

import (
	"encoding/json"
	"io/fs"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/schemas"
)

// Every field of every schema says what it means: people write requests
// by hand and read the bucket without capsule.
func TestEveryFieldHasADescription(t *testing.T) {
	names, err := fs.Glob(schemas.FS(), "*.schema.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no schemas: %v", err)
	}
	for _, name := range names {
		data, err := fs.ReadFile(schemas.FS(), name)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, field := range undescribed(doc, "") {
			t.Errorf("%s: field %s has no description", name, field)
		}
	}
}

// undescribed returns the fields (properties, in objects and in the
// items of arrays) below node that have no non-empty description.
func undescribed(node map[string]any, path string) []string {
	var out []string
	props, _ := node["properties"].(map[string]any)
	for k, v := range props {
		field, _ := v.(map[string]any)
		full := strings.TrimPrefix(path+"."+k, ".")
		if d, _ := field["description"].(string); strings.TrimSpace(d) == "" {
			out = append(out, full)
		}
		out = append(out, undescribed(field, full)...)
	}
	if items, ok := node["items"].(map[string]any); ok {
		out = append(out, undescribed(items, path+"[]")...)
	}
	return out
}
