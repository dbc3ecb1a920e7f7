// Package schemas embeds the JSON Schemas of every object capsule writes
// to the bucket (request, lease, progress, result, cancel, backupIndex,
// verification) and validates documents against them. The files beside
// this one are the reference for anyone reading a bucket without capsule.
package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed *.schema.json
var files embed.FS

// FS holds the schema files, named <name>.schema.json.
func FS() fs.FS { return files }

// Validator validates documents against the embedded schemas. Its zero
// value is ready to use and safe for concurrent use.
type Validator struct {
	once     sync.Once
	err      error
	compiled map[string]*jsonschema.Schema
}

const base = "https://capsule.cnvrg.io/schemas/"

func (v *Validator) compile() {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		v.err = err
		return
	}
	for _, e := range entries {
		data, err := files.ReadFile(e.Name())
		if err != nil {
			v.err = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			v.err = fmt.Errorf("schema %s: %w", e.Name(), err)
			return
		}
		if err := c.AddResource(base+e.Name(), doc); err != nil {
			v.err = fmt.Errorf("schema %s: %w", e.Name(), err)
			return
		}
	}
	v.compiled = map[string]*jsonschema.Schema{}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".schema.json")
		s, err := c.Compile(base + e.Name())
		if err != nil {
			v.err = fmt.Errorf("schema %s: %w", e.Name(), err)
			return
		}
		v.compiled[name] = s
	}
}

// Validate checks data (one JSON document) against the schema called name
// ("request", "backupIndex", ...).
func (v *Validator) Validate(name string, data []byte) error {
	v.once.Do(v.compile)
	if v.err != nil {
		return v.err
	}
	s, ok := v.compiled[name]
	if !ok {
		return fmt.Errorf("no schema %q", name)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: invalid JSON: %w", name, err)
	}
	if err := s.Validate(doc); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// ValidateValue marshals v and validates it.
func (v *Validator) ValidateValue(name string, value any) error {
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	return v.Validate(name, data)
}
