package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

var (
	// yaml.v3's messages, as KnownFields and type mismatches give them.
	unknownField = regexp.MustCompile("^line (\\d+): field (.+) not found in type (\\S+)$")
	badValue     = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// explain turns yaml.v3's errors, which name Go types ("field clustr not
// found in type config.Config"), into ones that name the file's keys:
// `line 3: unknown key "clustr" at the top level (known: bucket, ...)`,
// `line 5: worker.poll: "often" is not a duration (like 30s or 5m)`.
func explain(data []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return err
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		msgs = append(msgs, explainOne(&root, m))
	}
	return errors.New(strings.Join(msgs, "; "))
}

func explainOne(root *yaml.Node, msg string) string {
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		path := keyPath(root, line, m[2])
		parent := "at the top level"
		if i := strings.LastIndex(path, "."); i > 0 {
			parent = "in " + path[:i]
		}
		s := fmt.Sprintf("line %d: unknown key %q %s", line, m[2], parent)
		if known := knownKeys(path); len(known) > 0 {
			s += " (known: " + strings.Join(known, ", ") + ")"
		}
		return s
	}
	if m := badValue.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		path := valuePath(root, line, m[3])
		want := m[4]
		switch want {
		case "time.Duration":
			want = "a duration (like 30s or 5m)"
		case "int", "int64":
			want = "a whole number"
		case "bool":
			want = "true or false"
		case "string":
			want = "a string"
		default:
			if strings.HasPrefix(want, "map[") || strings.HasPrefix(want, "config.") {
				want = "a mapping of keys"
			}
		}
		if path == "" {
			return fmt.Sprintf("line %d: %q is not %s", line, m[3], want)
		}
		return fmt.Sprintf("line %d: %s: %q is not %s", line, path, m[3], want)
	}
	return msg
}

// keyPath is the dotted path of the mapping key named key on line.
func keyPath(n *yaml.Node, line int, key string) string {
	var found string
	walk(n, "", func(path string, k, _ *yaml.Node) bool {
		if k.Line == line && k.Value == key {
			found = path
			return true
		}
		return false
	})
	return found
}

// valuePath is the dotted path of the key whose scalar value on line is
// value.
func valuePath(n *yaml.Node, line int, value string) string {
	var found string
	walk(n, "", func(path string, _, v *yaml.Node) bool {
		if v.Line == line && (v.Value == value || value == "") {
			found = path
			return true
		}
		return false
	})
	return found
}

// walk calls fn for each key of each mapping under n with the key's
// dotted path, until fn returns true.
func walk(n *yaml.Node, prefix string, fn func(path string, k, v *yaml.Node) bool) bool {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			if walk(c, prefix, fn) {
				return true
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if fn(path, k, v) || walk(v, path, fn) {
				return true
			}
		}
	}
	return false
}

// knownKeys lists the keys the mapping holding path's last key accepts,
// from Config's yaml tags.
func knownKeys(path string) []string {
	t := reflect.TypeFor[Config]()
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		f, ok := fieldByTag(t, p)
		if !ok || f.Type.Kind() != reflect.Struct || f.Type == reflect.TypeFor[time.Duration]() {
			return nil
		}
		t = f.Type
	}
	var keys []string
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	sort.Strings(keys)
	return keys
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name == tag {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}
