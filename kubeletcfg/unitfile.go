package kubeletcfg

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// unitDirs are searched for kubelet.service and its drop-ins, highest priority first
// (systemd.unit(5), "System Unit Search Path").
var unitDirs = []string{
	"/etc/systemd/system",
	"/run/systemd/system",
	"/usr/local/lib/systemd/system",
	"/usr/lib/systemd/system",
	"/lib/systemd/system",
}

const kubeletUnit = "kubelet.service"

// unitResult is the kubelet's command line as systemd would build it from the unit.
type unitResult struct {
	files    []string // fragment and drop-ins, node paths, in the order applied
	envFiles []string // EnvironmentFile= files read
	argv     []word   // ExecStart after expansion, argv[0] first
	warnings []string
}

// findUnitFile returns the node path of the highest-priority copy of name in dirs, following
// symlinks under the host root; "" when there is none. A unit masked by a link to /dev/null
// counts as absent.
func findUnitFile(root hostfs.Root, name string) (string, error) {
	for _, d := range unitDirs {
		p := filepath.Join(d, name)
		target, err := resolveUnderRoot(root, p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		if target == "/dev/null" {
			return "", nil
		}
		return target, nil
	}
	return "", nil
}

// resolveUnderRoot follows symlinks of a node path with absolute targets taken relative to
// the host root (a DaemonSet sees the node's /lib → usr/lib links under /host). It returns the
// node path of the final file.
func resolveUnderRoot(root hostfs.Root, p string) (string, error) {
	for range 16 {
		fi, err := os.Lstat(root.Path(p))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			// A directory symlink higher up (/lib → usr/lib) is followed by the OS when it is
			// relative, which is the usual case.
			return p, nil
		}
		t, err := os.Readlink(root.Path(p))
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		p = filepath.Clean(t)
		if p == "/dev/null" {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", p)
}

// dropIns lists kubelet.service.d/*.conf: a file name in a higher-priority directory hides the
// same name in lower ones, and all are applied in lexical order of their file names
// (systemd.unit(5), "drop-in").
func dropIns(root hostfs.Root) ([]string, error) {
	byName := map[string]string{}
	for _, d := range unitDirs {
		dir := filepath.Join(d, kubeletUnit+".d")
		ents, err := os.ReadDir(root.Path(dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read drop-in directory %s: %w", dir, err)
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".conf") {
				continue
			}
			if _, ok := byName[e.Name()]; !ok {
				byName[e.Name()] = filepath.Join(dir, e.Name())
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]string, 0, len(names))
	for _, n := range names {
		p, err := resolveUnderRoot(root, byName[n])
		if err != nil {
			return nil, fmt.Errorf("drop-in %s: %w", byName[n], err)
		}
		if p != "/dev/null" {
			out = append(out, p)
		}
	}
	return out, nil
}

// unitOption is one option with its position; go-systemd's parser does not report lines.
type unitOption struct {
	section, name, value string
	o                    origin
}

// parseUnitFile parses one unit file with go-systemd's deserializer. go-systemd reports
// options but no line numbers, and its errors carry no position, so the file is also
// scanned line by line: the scan validates the structure (to name the bad line) and gives
// the k-th option of a name the line of the k-th "Name=" line in that section.
func parseUnitFile(data []byte, file string) ([]unitOption, error) {
	lines, err := scanUnitLines(data, file)
	if err != nil {
		return nil, err
	}
	opts, err := unit.DeserializeOptions(bytes.NewReader(data))
	if err != nil {
		n := strings.Count(string(data), "\n") + 1
		return nil, inputErrorf(origin{file: file, line: n}, "malformed unit file: %s", err)
	}
	seen := map[string]int{}
	out := make([]unitOption, 0, len(opts))
	for _, op := range opts {
		k := op.Section + "\x00" + op.Name
		line := 0
		if ls := lines[k]; seen[k] < len(ls) {
			line = ls[seen[k]]
		}
		seen[k]++
		out = append(out, unitOption{section: op.Section, name: op.Name, value: op.Value, o: origin{file: file, line: line}})
	}
	return out, nil
}

// scanUnitLines returns, per "section\x00name", the lines options start on, and rejects what
// systemd would not load: an option before any section, an unterminated section header, a
// line that is neither comment, section nor assignment, and a continuation at end of file
// (a truncated file).
func scanUnitLines(data []byte, file string) (map[string][]int, error) {
	out := map[string][]int{}
	section := ""
	cont := false
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	lines := strings.Split(text, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i, raw := range lines {
		n := i + 1
		line := strings.TrimSpace(raw)
		if cont {
			cont = strings.HasSuffix(line, "\\")
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return nil, inputErrorf(origin{file: file, line: n}, "malformed unit file: unterminated section header %q", line)
			}
			section = line[1:end]
			continue
		}
		name, _, ok := strings.Cut(line, "=")
		if !ok {
			return nil, inputErrorf(origin{file: file, line: n}, "malformed unit file: %q is not an assignment", line)
		}
		if section == "" {
			return nil, inputErrorf(origin{file: file, line: n}, "malformed unit file: assignment %q before any [section]", line)
		}
		name = strings.TrimSpace(name)
		out[section+"\x00"+name] = append(out[section+"\x00"+name], n)
		cont = strings.HasSuffix(line, "\\")
	}
	if cont {
		return nil, inputErrorf(origin{file: file, line: len(lines)}, "malformed unit file: truncated (continuation line at end of file)")
	}
	return out, nil
}

// readUnit reads kubelet.service and its drop-ins and builds the command line systemd would
// run. It returns nil when there is no kubelet unit.
func readUnit(root hostfs.Root) (*unitResult, error) {
	frag, err := findUnitFile(root, kubeletUnit)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", kubeletUnit, err)
	}
	if frag == "" {
		return nil, nil
	}
	dis, err := dropIns(root)
	if err != nil {
		return nil, err
	}
	res := &unitResult{}
	type envFile struct {
		path     string
		optional bool
		o        origin
	}
	var (
		env      []envKV // Environment= in order; "" key means reset
		envFiles []envFile
		execs    []unitOption
	)
	for _, f := range append([]string{frag}, dis...) {
		data, err := os.ReadFile(root.Path(f))
		if err != nil {
			return nil, &InputError{File: f, Msg: fmt.Sprintf("read unit file: %v", err), Err: err}
		}
		res.files = append(res.files, f)
		opts, err := parseUnitFile(data, f)
		if err != nil {
			return nil, err
		}
		for _, op := range opts {
			if op.section != "Service" {
				continue
			}
			// go-systemd keeps the line breaks of continued lines; systemd joins them with a
			// space.
			val := expandSpecifiers(strings.NewReplacer("\\\n", " ", "\n", " ").Replace(op.value))
			switch op.name {
			case "Environment":
				if strings.TrimSpace(val) == "" {
					env = append(env, envKV{}) // reset
					continue
				}
				words, err := splitSystemdWords(val, false)
				if err != nil {
					return nil, inputErrorf(op.o, "Environment=: %s", err)
				}
				for _, w := range words {
					k, v, ok := strings.Cut(w, "=")
					if !ok || k == "" {
						res.warnings = append(res.warnings, fmt.Sprintf("%s: invalid environment assignment %q; systemd ignores it", op.o.pos(), w))
						continue
					}
					env = append(env, envKV{key: k, v: envVar{val: v, o: op.o}})
				}
			case "EnvironmentFile":
				p := strings.TrimSpace(val)
				if p == "" {
					envFiles = nil
					continue
				}
				opt := strings.HasPrefix(p, "-")
				envFiles = append(envFiles, envFile{path: strings.TrimPrefix(p, "-"), optional: opt, o: op.o})
			case "ExecStart":
				if strings.TrimSpace(val) == "" {
					execs = nil
					continue
				}
				execs = append(execs, unitOption{name: op.name, value: val, o: op.o})
			}
		}
	}
	vars := map[string]envVar{}
	for _, kv := range env {
		if kv.key == "" {
			clear(vars)
			continue
		}
		vars[kv.key] = kv.v
	}
	// EnvironmentFile= settings override Environment= ones (systemd.exec(5)).
	for _, ef := range envFiles {
		data, err := os.ReadFile(root.Path(ef.path))
		if errors.Is(err, fs.ErrNotExist) {
			if !ef.optional {
				res.warnings = append(res.warnings, fmt.Sprintf("%s: EnvironmentFile=%s does not exist; systemd will refuse to start the kubelet", ef.o.pos(), ef.path))
			}
			continue
		}
		if err != nil {
			return nil, &InputError{File: ef.path, Msg: fmt.Sprintf("read environment file: %v", err), Err: err}
		}
		kvs, err := parseEnvFile(string(data), ef.path)
		if err != nil {
			return nil, err
		}
		res.envFiles = append(res.envFiles, ef.path)
		for _, kv := range kvs {
			vars[kv.key] = kv.v
		}
	}
	switch len(execs) {
	case 0:
		return nil, inputErrorf(origin{file: res.files[len(res.files)-1]}, "kubelet.service has no ExecStart=")
	case 1:
	default:
		return nil, inputErrorf(execs[1].o, "kubelet.service has more than one ExecStart= (first at %s) and no empty ExecStart= to reset it; systemd refuses to load the unit", execs[0].o.pos())
	}
	argv, err := expandExecStart(execs[0], vars)
	if err != nil {
		return nil, err
	}
	res.argv = argv
	return res, nil
}

// expandSpecifiers resolves the unit-file specifiers a kubelet unit can meaningfully contain:
// "%%" is "%" and "%n" the unit name; others are left as written.
func expandSpecifiers(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+1 < len(s) {
			switch s[i+1] {
			case '%':
				b.WriteByte('%')
				i++
				continue
			case 'n':
				b.WriteString(kubeletUnit)
				i++
				continue
			case 'N', 'p':
				b.WriteString("kubelet")
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// splitSystemdWords splits like systemd's extract_first_word with EXTRACT_UNQUOTE and
// EXTRACT_CUNESCAPE: whitespace separates, single and double quotes group, a backslash
// escapes the next character (\n, \t are C escapes). relax accepts an unterminated quote
// (EXTRACT_RELAX, used when splitting a $VAR value).
func splitSystemdWords(s string, relax bool) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && quote != '\'':
			if i+1 >= len(s) {
				if relax {
					continue
				}
				return nil, errors.New("trailing backslash")
			}
			i++
			switch s[i] {
			case 'n':
				cur.WriteByte('\n')
			case 't':
				cur.WriteByte('\t')
			default:
				cur.WriteByte(s[i])
			}
			inWord = true
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 && !relax {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// expandExecStart turns an ExecStart= value into argv the way systemd does: prefixes
// ("-", "@", "+", "!", "!!", ":") are dropped, the line is split into words, a word that is
// exactly $VAR becomes the variable's value split at whitespace (zero or more words), and
// ${VAR} (or $VAR inside a word) is replaced in place without splitting; "$$" is a "$".
// Unset variables expand to nothing. Words from a variable carry the variable's origin.
func expandExecStart(op unitOption, vars map[string]envVar) ([]word, error) {
	val := strings.TrimLeft(op.value, " \t")
	noEnv := false
	for len(val) > 0 && strings.IndexByte("-@+!:", val[0]) >= 0 {
		if val[0] == ':' {
			noEnv = true
		}
		val = val[1:]
	}
	words, err := splitSystemdWords(val, false)
	if err != nil {
		return nil, inputErrorf(op.o, "ExecStart=: %s", err)
	}
	var out []word
	for _, w := range words {
		if noEnv {
			out = append(out, word{s: w, o: op.o})
			continue
		}
		if name, ok := strings.CutPrefix(w, "$"); ok && isEnvName(name) {
			v, ok := vars[name]
			if !ok {
				continue
			}
			parts, _ := splitSystemdWords(v.val, true)
			o := v.o
			o.via = name
			for _, p := range parts {
				out = append(out, word{s: p, o: o})
			}
			continue
		}
		s, via := replaceEnv(w, vars)
		o := op.o
		if via != "" {
			o = vars[via].o
			o.via = via
		}
		out = append(out, word{s: s, o: o})
	}
	return out, nil
}

// replaceEnv substitutes ${VAR} and $VAR inside one word; via names the variable when exactly
// one was substituted.
func replaceEnv(w string, vars map[string]envVar) (string, string) {
	var b strings.Builder
	var used []string
	for i := 0; i < len(w); i++ {
		if w[i] != '$' || i+1 >= len(w) {
			b.WriteByte(w[i])
			continue
		}
		switch w[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(w[i+2:], '}')
			if end < 0 {
				b.WriteString(w[i:])
				i = len(w)
				continue
			}
			name := w[i+2 : i+2+end]
			b.WriteString(vars[name].val)
			used = append(used, name)
			i += 2 + end
		default:
			j := i + 1
			for j < len(w) && isEnvChar(w[j], j == i+1) {
				j++
			}
			if j == i+1 {
				b.WriteByte('$')
				continue
			}
			name := w[i+1 : j]
			b.WriteString(vars[name].val)
			used = append(used, name)
			i = j - 1
		}
	}
	via := ""
	if len(used) == 1 {
		if _, ok := vars[used[0]]; ok {
			via = used[0]
		}
	}
	return b.String(), via
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isEnvChar(s[i], i == 0) {
			return false
		}
	}
	return true
}

func isEnvChar(c byte, first bool) bool {
	return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (!first && c >= '0' && c <= '9')
}
