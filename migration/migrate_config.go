package migration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// SetRuntimeRoot returns the runtime's config content with its data root set to root:
// daemon.json's data-root for docker, config.toml's top-level root for containerd.
func SetRuntimeRoot(runtime string, content []byte, root string) ([]byte, error) {
	if runtime == RuntimeDocker {
		return SetDockerDataRoot(content, root)
	}
	return SetContainerdRoot(content, root)
}

// SetDockerDataRoot returns daemon.json content with "data-root" set to root. A legacy "graph"
// key (the 1.7-era spelling, as in the incident in README.md) is replaced in place by "data-root"; every
// other key keeps its value and its position. The output is indented with two spaces.
func SetDockerDataRoot(content []byte, root string) ([]byte, error) {
	type kv struct {
		key string
		val json.RawMessage
	}
	var kvs []kv
	if len(bytes.TrimSpace(content)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(content))
		dec.UseNumber()
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("daemon.json: %w", err)
		}
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			return nil, errors.New("daemon.json: not a JSON object")
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, fmt.Errorf("daemon.json: %w", err)
			}
			key, _ := tok.(string)
			var val json.RawMessage
			if err := dec.Decode(&val); err != nil {
				return nil, fmt.Errorf("daemon.json: value of %q: %w", key, err)
			}
			kvs = append(kvs, kv{key, val})
		}
		if _, err := dec.Token(); err != nil {
			return nil, fmt.Errorf("daemon.json: %w", err)
		}
		if _, err := dec.Token(); err == nil {
			return nil, errors.New("daemon.json: trailing data after the object")
		}
	}
	rootJSON, _ := json.Marshal(root)
	var out []kv
	placed := false
	for _, e := range kvs {
		switch e.key {
		case "data-root", "graph":
			if !placed {
				out = append(out, kv{"data-root", rootJSON})
				placed = true
			}
		default:
			out = append(out, e)
		}
	}
	if !placed {
		out = append(out, kv{"data-root", rootJSON})
	}
	var b bytes.Buffer
	b.WriteString("{\n")
	for i, e := range out {
		k, _ := json.Marshal(e.key)
		var v bytes.Buffer
		if err := json.Indent(&v, e.val, "  ", "  "); err != nil {
			return nil, fmt.Errorf("daemon.json: value of %q: %w", e.key, err)
		}
		fmt.Fprintf(&b, "  %s: %s", k, v.Bytes())
		if i < len(out)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}\n")
	// Validate: it parses, and says what we meant.
	var check map[string]any
	if err := json.Unmarshal(b.Bytes(), &check); err != nil {
		return nil, fmt.Errorf("daemon.json: rewrite does not parse: %w", err)
	}
	if check["data-root"] != root || check["graph"] != nil {
		return nil, errors.New("daemon.json: rewrite did not set data-root")
	}
	return b.Bytes(), nil
}

// SetContainerdRoot returns config.toml content with the top-level `root` set to root. It
// edits the one line (keeping its comment, every other line and comment untouched), or
// inserts `root = "…"` before the first table (after `version = …` if present) when there is
// none. The result is re-parsed with a TOML parser and must keep every other setting.
func SetContainerdRoot(content []byte, root string) ([]byte, error) {
	var before map[string]any
	if _, err := toml.Decode(string(content), &before); err != nil {
		return nil, fmt.Errorf("config.toml: %w", err)
	}
	lines := strings.SplitAfter(string(content), "\n")
	quoted := strconv.Quote(root)
	replaced := false
	firstTable, versionLine := -1, -1
	for i, line := range lines {
		trim := strings.TrimSpace(line)
		if strings.HasPrefix(trim, "[") {
			firstTable = i
			break
		}
		key, rest, ok := strings.Cut(trim, "=")
		if !ok || strings.HasPrefix(trim, "#") {
			continue
		}
		switch strings.Trim(strings.TrimSpace(key), `"'`) {
		case "version":
			versionLine = i
		case "root":
			indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
			comment := ""
			if v := strings.TrimSpace(rest); len(v) > 0 && (v[0] == '"' || v[0] == '\'') {
				if end := strings.IndexByte(v[1:], v[0]); end >= 0 {
					if c := strings.TrimSpace(v[end+2:]); strings.HasPrefix(c, "#") {
						comment = " " + c
					}
				}
			}
			nl := ""
			if strings.HasSuffix(line, "\n") {
				nl = "\n"
			}
			lines[i] = indent + "root = " + quoted + comment + nl
			replaced = true
		}
	}
	if !replaced {
		at := 0
		switch {
		case versionLine >= 0:
			at = versionLine + 1
		case firstTable >= 0:
			at = firstTable
		}
		ins := "root = " + quoted + "\n"
		if at > 0 && !strings.HasSuffix(lines[at-1], "\n") {
			ins = "\n" + ins
		}
		lines = append(lines[:at], append([]string{ins}, lines[at:]...)...)
	}
	out := strings.Join(lines, "")
	var after map[string]any
	if _, err := toml.Decode(out, &after); err != nil {
		return nil, fmt.Errorf("config.toml: rewrite does not parse: %w", err)
	}
	if after["root"] != root {
		return nil, fmt.Errorf("config.toml: rewrite did not set root (got %v)", after["root"])
	}
	delete(before, "root")
	delete(after, "root")
	if fmt.Sprint(before) != fmt.Sprint(after) {
		return nil, errors.New("config.toml: rewrite changed other settings")
	}
	return []byte(out), nil
}

// containerdConfig is what evictguard reads from containerd's config.toml.
type containerdConfig struct {
	Root    string `toml:"root"`
	Version int    `toml:"version"`
	GRPC    struct {
		Address string `toml:"address"`
	} `toml:"grpc"`
	Plugins map[string]toml.Primitive `toml:"plugins"`
}

// parseContainerdConfig returns root, the gRPC socket and the CRI snapshotter ("" when unset).
func parseContainerdConfig(content []byte) (root, address, snapshotter string, err error) {
	var c containerdConfig
	md, err := toml.Decode(string(content), &c)
	if err != nil {
		return "", "", "", fmt.Errorf("config.toml: %w", err)
	}
	for _, name := range []string{"io.containerd.grpc.v1.cri", "cri"} {
		prim, ok := c.Plugins[name]
		if !ok {
			continue
		}
		var cri struct {
			Containerd struct {
				Snapshotter string `toml:"snapshotter"`
			} `toml:"containerd"`
		}
		if err := md.PrimitiveDecode(prim, &cri); err == nil && cri.Containerd.Snapshotter != "" {
			snapshotter = cri.Containerd.Snapshotter
		}
	}
	return c.Root, c.GRPC.Address, snapshotter, nil
}
