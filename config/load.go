package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/evictguard/evictguard/policy"
)

// Error is a problem at a position in a file; it prints as FILE:LINE: MESSAGE.
type Error struct {
	File string
	Line int // 0: unknown
	Path string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadFile reads, decodes, defaults and validates a configuration file.
func LoadFile(path string) (*Configuration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Load(path, b)
}

// Load decodes data (named name in errors) strictly, applies defaults and validates. Every
// error is an *Error (joined when there are several) naming name and, where known, the line.
func Load(name string, data []byte) (*Configuration, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{File: name, Line: extra.Line, Msg: "more than one YAML document; the configuration is a single document"}
	}
	lines := map[string]int{}
	index(&root, "", lines)
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, &Error{File: name, Line: root.Line, Msg: "not a YAML mapping (expected apiVersion, kind, …)"}
	}

	c := &Configuration{}
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(c); err != nil {
		return nil, decodeError(name, err, &root)
	}
	c.present = lines
	c.ApplyDefaults(c.Present)
	if err := c.Validate(); err != nil {
		return nil, Positioned(name, err, lines)
	}
	return c, nil
}

// Positioned turns the *FieldErrors in err into *Errors with the line of their key
// (or of the nearest enclosing key that is in the file).
func Positioned(name string, err error, lines map[string]int) error {
	var out []error
	for _, e := range unjoin(err) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			out = append(out, &Error{File: name, Msg: e.Error()})
			continue
		}
		line := 0
		for p := fe.Path; p != ""; p = parent(p) {
			if l, ok := lines[p]; ok {
				line = l
				break
			}
		}
		out = append(out, &Error{File: name, Line: line, Path: fe.Path, Msg: fe.Msg})
	}
	return errors.Join(out...)
}

func unjoin(err error) []error {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// parent strips the last element of a key path: "a.b[2]" → "a.b", "a.b" → "a".
func parent(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndex(p, "["); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndex(p, "."); i >= 0 {
		return p[:i]
	}
	return ""
}

// index records the line of every key and sequence item under n by dotted path.
func index(n *yaml.Node, path string, lines map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			index(c, path, lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if _, dup := lines[p]; !dup {
				lines[p] = k.Line
			}
			index(v, p, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = c.Line
			index(c, p, lines)
		}
	}
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// syntaxError positions a YAML syntax error ("yaml: line 3: mapping values are not allowed").
func syntaxError(name string, err error) error {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &Error{File: name, Line: n, Msg: m[2]}
	}
	if errors.Is(err, io.EOF) {
		return &Error{File: name, Msg: "empty file (expected apiVersion: " + APIVersion + ", kind: " + Kind + ")"}
	}
	return &Error{File: name, Msg: err.Error()}
}

var notFoundRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)

// decodeError turns yaml.v3's strict-decoding errors ("line 5: field foo not found in type
// config.Monitor") into one *Error per problem.
func decodeError(name string, err error, root *yaml.Node) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		// A value's own UnmarshalText failed (a duration such as "fast"): yaml.v3 drops the
		// position, so point at the first scalar holding the quoted value.
		if m := quotedRE.FindStringSubmatch(err.Error()); m != nil {
			if line := findScalar(root, m[1]); line > 0 {
				return &Error{File: name, Line: line, Msg: err.Error()}
			}
		}
		return syntaxError(name, err)
	}
	var out []error
	for _, s := range te.Errors {
		m := lineRE.FindStringSubmatch(s)
		if m == nil {
			out = append(out, &Error{File: name, Msg: s})
			continue
		}
		n, _ := strconv.Atoi(m[1])
		msg := m[2]
		if f := notFoundRE.FindStringSubmatch(msg); f != nil {
			msg = fmt.Sprintf("unknown key %q (in %s)", f[1], schemaName(f[2]))
		}
		out = append(out, &Error{File: name, Line: n, Msg: msg})
	}
	return errors.Join(out...)
}

var quotedRE = regexp.MustCompile(`"([^"]*)"`)

func findScalar(n *yaml.Node, v string) int {
	if n.Kind == yaml.ScalarNode && n.Value == v {
		return n.Line
	}
	for _, c := range n.Content {
		if l := findScalar(c, v); l > 0 {
			return l
		}
	}
	return 0
}

// schemaName maps a Go type in a decoder message to the YAML section users know.
func schemaName(goType string) string {
	switch goType {
	case "config.Configuration":
		return "the top level"
	case "config.Monitor":
		return "monitor"
	case "config.Configz":
		return "monitor.configz"
	case "config.Metrics":
		return "metrics"
	case "config.Alerts":
		return "alerts"
	case "config.Kubernetes":
		return "kubernetes"
	case "config.Hysteresis":
		return "monitor.hysteresis"
	case "config.Logs":
		return "logs"
	case "config.LogBudget":
		return "logs.budget"
	case "config.Actions":
		return "actions"
	case "config.Reclaim":
		return "actions.reclaim"
	case "config.ReclaimBallast":
		return "actions.reclaim.ballast"
	case "config.ReclaimGC":
		return "actions.reclaim.gc"
	case "config.ReclaimLogs":
		return "actions.reclaim.rotatedLogs"
	case "policy.Policy":
		return "policy"
	case "policy.Amount":
		return "policy.headroom/floor"
	case "policy.Window":
		return "policy.windows[]"
	case "policy.Blockers":
		return "policy.blockers"
	case "policy.Lock":
		return "policy.lock"
	case "policy.MigrationPolicy":
		return "policy.migration"
	}
	return goType
}

// Marshal renders c as YAML, as `evictguard config defaults` prints it.
func Marshal(c *Configuration) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return b.Bytes(), nil
}

// LoadPolicy decodes a standalone remediation policy file (`--policy FILE`) as the
// configuration's policy section is decoded: strictly (unknown or duplicated keys, a second
// document, a value of the wrong type are errors), then defaults and validation. Errors are
// *Errors naming the file and, where known, the line. An empty file is the default policy.
func LoadPolicy(name string, data []byte) (*policy.Policy, error) {
	p := &policy.Policy{}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if !errors.Is(err, io.EOF) {
			return nil, syntaxError(name, err)
		}
	} else {
		var extra yaml.Node
		if err := dec.Decode(&extra); err == nil {
			return nil, &Error{File: name, Line: extra.Line, Msg: "more than one YAML document; the policy is a single document"}
		}
		strict := yaml.NewDecoder(bytes.NewReader(data))
		strict.KnownFields(true)
		if err := strict.Decode(p); err != nil && !errors.Is(err, io.EOF) {
			return nil, decodeError(name, err, &root)
		}
	}
	lines := map[string]int{}
	index(&root, "", lines)
	p.ApplyDefaults()
	if errs := p.Validate(); len(errs) > 0 {
		fes := make([]error, 0, len(errs))
		for _, e := range errs {
			fes = append(fes, &FieldError{Path: e.Field, Msg: e.Detail})
		}
		return nil, Positioned(name, errors.Join(fes...), lines)
	}
	return p, nil
}
