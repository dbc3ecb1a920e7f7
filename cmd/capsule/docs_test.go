package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
)

// TestEngineReferencePages checks docs/engines/<engine>.md against the
// engines themselves: every engine of the binary is engines.Documented,
// has a page linked from the README, and its page names every setting
// of its settings struct (tls.* included) and every restore option with
// each of its values, in backquotes. A setting or option added without
// its line fails here.
func TestEngineReferencePages(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "docs/engines/") {
		t.Errorf("README.md does not link docs/engines/")
	}
	index, err := os.ReadFile("../../docs/engines/README.md")
	if err != nil {
		t.Fatal(err)
	}
	reg := registry()
	for _, name := range reg.Names() {
		t.Run(name, func(t *testing.T) {
			eng, _ := reg.Get(name)
			d, ok := eng.(engines.Documented)
			if !ok {
				t.Fatalf("engine %s does not implement engines.Documented", name)
			}
			page, err := os.ReadFile(filepath.Join("../../docs/engines", name+".md"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(index), "("+name+".md)") {
				t.Errorf("docs/engines/README.md does not link %s.md", name)
			}
			settings := settingNames(reflect.TypeOf(d.Settings()), "")
			if len(settings) == 0 {
				t.Fatalf("engine %s: its settings struct has no json keys", name)
			}
			for _, s := range settings {
				if !strings.Contains(string(page), "`"+s+"`") {
					t.Errorf("docs/engines/%s.md does not document setting `%s`", name, s)
				}
			}
			opts := d.RestoreOptions()
			if len(opts) == 0 && !strings.Contains(string(page), "takes no restore option") {
				t.Errorf("docs/engines/%s.md does not say that the engine takes no restore option", name)
			}
			for _, o := range opts {
				if !strings.Contains(string(page), "`"+o.Name+"`") {
					t.Errorf("docs/engines/%s.md does not document restore option `%s`", name, o.Name)
				}
				for _, v := range o.Values {
					if !strings.Contains(string(page), "`"+v+"`") {
						t.Errorf("docs/engines/%s.md does not name value `%s` of option %s", name, v, o.Name)
					}
				}
			}
		})
	}
}

// settingNames lists the json keys of a settings struct, descending into
// nested structs (tls.caFile) that decode field by field; a type with
// its own UnmarshalJSON (a list or "all") is one setting.
func settingNames(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if key == "-" || key == "" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(reflect.TypeFor[json.Unmarshaler]()) {
			names = append(names, settingNames(ft, prefix+key+".")...)
			continue
		}
		names = append(names, prefix+key)
	}
	return names
}
