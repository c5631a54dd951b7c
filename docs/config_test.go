package docs

import (
	"encoding"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/evictguard/evictguard/config"
)

const configDoc = "configuration.md"

// refKey is one key of the configuration reference: its dotted path, line in configuration.md,
// whether it is commented out (documented, not set), whether it has a value on its line, and
// its line comment.
type refKey struct {
	path      string
	line      int
	commented bool
	inline    bool
	comment   string
}

// referenceBlock returns the reference configuration (the fenced yaml block that starts with
// "# /etc/evictguard/config.yaml") and the line it starts on.
func referenceBlock(t *testing.T) (string, int) {
	t.Helper()
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if l != "```yaml" || i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "# /etc/evictguard/config.yaml") {
			continue
		}
		for j := i + 1; j < len(lines); j++ {
			if lines[j] == "```" {
				return strings.Join(lines[i+1:j], "\n") + "\n", i + 2
			}
		}
	}
	t.Fatalf("%s: no ```yaml block starting with \"# /etc/evictguard/config.yaml\"", configDoc)
	return "", 0
}

// keyLineRE matches "  key: value  # comment" and its commented-out form "  # key: value"; a
// commented key's indentation is where it would start once "# " is removed.
var keyLineRE = regexp.MustCompile(`^(\s*)(#\s)?(\s*)([A-Za-z][A-Za-z0-9]*):(?:\s+|$)(.*)$`)

func referenceKeys(block string, first int) []refKey {
	type level struct {
		indent int
		key    string
	}
	var stack []level
	var out []refKey
	for i, line := range strings.Split(block, "\n") {
		m := keyLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		indent := len(m[1]) + len(m[3])
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		var path []string
		for _, l := range stack {
			path = append(path, l.key)
		}
		path = append(path, m[4])
		value, comment, _ := strings.Cut(m[5], "#")
		out = append(out, refKey{
			path: strings.Join(path, "."), line: first + i, commented: m[2] != "",
			inline: strings.TrimSpace(value) != "", comment: comment,
		})
		stack = append(stack, level{indent, m[4]})
	}
	return out
}

var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()

// schemaKeys returns every key path of the configuration file, from the yaml tags of
// config.Configuration (a type that marshals itself, such as a duration, is one key; the
// elements of a list of objects share the list's path).
func schemaKeys(t reflect.Type, prefix string, out map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.Implements(textMarshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		p := prefix + name
		out[p] = true
		schemaKeys(f.Type, p+".", out)
	}
}

// TestConfigurationReference keeps configuration.md's reference file true to the config
// package: every key of the file (outside policy, whose keys are remediation.md's policy
// table) is in it, every key in it exists, and every value it sets is the default unless its
// comment says otherwise ("default: …").
func TestConfigurationReference(t *testing.T) {
	block, first := referenceBlock(t)
	keys := referenceKeys(block, first)
	schema := map[string]bool{}
	schemaKeys(reflect.TypeFor[config.Configuration](), "", schema)

	documented := map[string]bool{}
	for _, k := range keys {
		documented[k.path] = true
	}
	t.Run("every key documented", func(t *testing.T) {
		var missing []string
		for p := range schema {
			if p != "policy" && !strings.HasPrefix(p, "policy.") && !documented[p] {
				missing = append(missing, p)
			}
		}
		sort.Strings(missing)
		for _, p := range missing {
			t.Errorf("%s: key %s is not in the reference configuration", configDoc, p)
		}
	})
	t.Run("every documented key exists", func(t *testing.T) {
		for _, k := range keys {
			if !schema[k.path] {
				t.Errorf("%s:%d: %s is not a configuration key", configDoc, k.line, k.path)
			}
		}
	})

	loaded, err := config.Load(configDoc, []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	got, want := marshalled(t, loaded), marshalled(t, config.Default())
	for _, k := range keys {
		if k.commented || strings.Contains(k.comment, "default") {
			continue
		}
		g, gok, inList := lookup(got, k.path)
		w, _, _ := lookup(want, k.path)
		if inList {
			continue // compared with its list
		}
		if !gok {
			t.Errorf("%s:%d: %s is set but not in the loaded configuration", configDoc, k.line, k.path)
			continue
		}
		if _, isMap := g.(map[string]any); isMap && !k.inline {
			continue // a section: its keys are checked on their own lines
		}
		t.Run(k.path, func(t *testing.T) {
			if !reflect.DeepEqual(g, w) {
				t.Errorf("%s:%d: %s is %v, the default is %v: note it in the comment (\"default: …\") or use the default", configDoc, k.line, k.path, g, w)
			}
		})
	}
}

func marshalled(t *testing.T, c *config.Configuration) map[string]any {
	t.Helper()
	b, err := config.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// lookup returns the value at a dotted path, and whether the path runs through a list (the
// key of a list item).
func lookup(m map[string]any, path string) (v any, found, inList bool) {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		if _, ok := cur.([]any); ok {
			return nil, false, true
		}
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false, false
		}
	}
	return cur, true, false
}
