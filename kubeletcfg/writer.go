package kubeletcfg

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// WriteMethod names one way a node carries the kubelet's eviction settings, and so the file a
// writer changes.
type WriteMethod string

// Write methods, chosen by PlanEvictionWrite from where the node's settings come from.
const (
	// MethodLegacyDropIn edits the kubeadm 1.7-era drop-in the operator owns
	// (/etc/systemd/system/kubelet.service.d/10-kubeadm.conf): it sets
	// Environment="KUBELET_EVICTION_POLICY_ARGS=--eviction-hard=…" and appends
	// $KUBELET_EVICTION_POLICY_ARGS to ExecStart= if it is missing.
	MethodLegacyDropIn WriteMethod = "kubeadm-legacy-dropin"
	// MethodSystemdDropIn writes a drop-in of evictguard's own,
	// /etc/systemd/system/kubelet.service.d/90-evictguard.conf, that re-declares the unit's
	// ExecStart= with $EVICTGUARD_EVICTION_ARGS appended (last on the command line, so its
	// --eviction-hard wins; repeated map flags accumulate, and the map written is complete).
	// Package-owned files are never edited.
	MethodSystemdDropIn WriteMethod = "systemd-dropin"
	// MethodConfigDir writes 90-evictguard.conf (a KubeletConfiguration) into the kubelet's
	// --config-dir (1.30+).
	MethodConfigDir WriteMethod = "config-dir"
	// MethodConfigFile rewrites evictionHard in the --config file. kubeadm upgrade overwrites
	// /var/lib/kubelet/config.yaml, so this is chosen only when asked for.
	MethodConfigFile WriteMethod = "config-file"
)

// Names of the files and variables evictguard owns.
const (
	OwnDropInName    = "90-evictguard.conf"
	OwnUnitDropInDir = "/etc/systemd/system/kubelet.service.d"
	legacyEvictVar   = "KUBELET_EVICTION_POLICY_ARGS"
	ownEvictVar      = "EVICTGUARD_EVICTION_ARGS"
)

// WriteRequest asks for the files that make the kubelet enforce Hard.
type WriteRequest struct {
	Root hostfs.Root
	// Version is the kubelet version ("1.37.2"); it selects the grammar and defaults.
	Version string
	// Hard is the complete evictionHard map to enforce (every signal the kubelet should keep
	// enforcing, not only the changed ones).
	Hard map[string]string
	// Method forces a write method; "" chooses from the node's layout.
	Method WriteMethod
	// SkipValidation writes Hard even if the kubelet would reject it. It exists only for the
	// rollback test hook and must not be set otherwise.
	SkipValidation bool
}

// FileWrite is one file a plan writes, with its content before (nil: absent) and after.
type FileWrite struct {
	Path   string // node path
	Before []byte
	After  []byte
	Perm   fs.FileMode
}

// Changed reports whether the write changes the file.
func (f FileWrite) Changed() bool { return f.Before == nil || !bytes.Equal(f.Before, f.After) }

// WritePlan is what PlanEvictionWrite decided: which mechanism, which files, and why.
type WritePlan struct {
	Method WriteMethod
	Files  []FileWrite
	// Reasons explain the choice of method, naming the files that led to it.
	Reasons  []string
	Warnings []string
	// UnitChanged says a systemd daemon-reload is needed before the restart.
	UnitChanged bool
}

// ErrFlagOverrides is returned when a requested method would be silently overridden by an
// --eviction-hard flag on the kubelet's command line.
var ErrFlagOverrides = errors.New("an --eviction-hard flag on the kubelet command line overrides this place")

// unitLayout is the structure of the kubelet unit relevant to writing.
type unitLayout struct {
	res *unitResult
	// execFile/execLine: where the effective ExecStart= is; execRaw its value as written.
	execFile string
	execLine int
	execRaw  string
	// hasEnvFile: some file of the unit has EnvironmentFile= (1.11+ kubeadm layout).
	hasEnvFile bool
	kf         *kubeletFlags
}

func readUnitLayout(root hostfs.Root, v Version) (*unitLayout, error) {
	res, err := readUnit(root)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, nil
	}
	l := &unitLayout{res: res}
	for _, f := range res.files {
		data, err := os.ReadFile(root.Path(f))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		opts, err := parseUnitFile(data, f)
		if err != nil {
			return nil, err
		}
		for _, op := range opts {
			if op.section != "Service" {
				continue
			}
			switch op.name {
			case "EnvironmentFile":
				if strings.TrimSpace(op.value) != "" {
					l.hasEnvFile = true
				}
			case "ExecStart":
				if strings.TrimSpace(op.value) == "" {
					l.execFile, l.execLine, l.execRaw = "", 0, ""
					continue
				}
				l.execFile, l.execLine, l.execRaw = f, op.o.line, strings.NewReplacer("\\\n", " ", "\n", " ").Replace(op.value)
			}
		}
	}
	if len(res.argv) > 0 {
		kf, err := parseKubeletFlags(v, res.argv[1:])
		if err != nil {
			return nil, err
		}
		l.kf = kf
	} else {
		l.kf = &kubeletFlags{set: map[string]origin{}}
	}
	return l, nil
}

// packageOwned reports whether a node path belongs to a package (and is replaced by package
// upgrades): anything outside /etc.
func packageOwned(p string) bool { return !strings.HasPrefix(p, "/etc/") }

// PlanEvictionWrite decides where the node's eviction settings live and renders the new content
// of each file to change; it writes nothing. The choice follows the provenance of the kubelet's
// command line as systemd builds it from kubelet.service:
//
//  1. an --eviction-hard flag through $KUBELET_EVICTION_POLICY_ARGS set in an operator-owned
//     unit file, or the 1.7-era layout (ExecStart= in an /etc drop-in, no EnvironmentFile=):
//     MethodLegacyDropIn, editing that file;
//  2. any other --eviction-hard flag (kubeadm-flags.env, /etc/default/kubelet): the flag beats
//     every file, so MethodSystemdDropIn, whose flag comes last;
//  3. a --config-dir on a 1.30+ kubelet: MethodConfigDir;
//  4. otherwise (modern kubeadm: config.yaml that kubeadm upgrade overwrites, package-owned
//     10-kubeadm.conf): MethodSystemdDropIn.
//
// Hard is validated with ParseThresholdConfig first. A forced method that a flag would override
// fails with ErrFlagOverrides.
func PlanEvictionWrite(req WriteRequest) (*WritePlan, error) {
	v, err := ParseVersion(req.Version)
	if err != nil {
		return nil, fmt.Errorf("kubelet version: %w", err)
	}
	if len(req.Hard) == 0 {
		return nil, errors.New("refusing to write an empty evictionHard: the kubelet would enforce no hard thresholds")
	}
	if !req.SkipValidation {
		if _, err := ParseThresholdConfig(v, nil, req.Hard, nil, nil, nil); err != nil {
			return nil, fmt.Errorf("the kubelet would refuse the new thresholds: %w", err)
		}
		for _, k := range []string{SignalAllocatableMemoryAvailable, SignalContainerFsAvailable, SignalContainerFsInodesFree} {
			if _, ok := req.Hard[k]; ok {
				return nil, fmt.Errorf("%s is set by the kubelet itself and must not be written", k)
			}
		}
	}
	root := req.Root
	if root == "" {
		root = "/"
	}
	l, err := readUnitLayout(root, v)
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, errors.New("no kubelet.service found: evictguard changes eviction settings only for a kubelet run by systemd")
	}
	if l.execFile == "" {
		return nil, errors.New("kubelet.service has no ExecStart=")
	}
	p := &WritePlan{}
	flagO, hasFlag := l.kf.set[flagEvictionHard]
	for _, f := range []string{flagEvictionSoft, flagEvictionGrace, flagEvictionReclaim} {
		if _, ok := l.kf.set[f]; ok {
			p.Warnings = append(p.Warnings, fmt.Sprintf("--%s is set on the command line (%s); evictguard only changes evictionHard", f, l.kf.set[f].String()))
		}
	}
	method := req.Method
	legacyLayout := !packageOwned(l.execFile) && !l.hasEnvFile && strings.HasSuffix(l.execFile, ".conf")
	switch {
	case method != "":
		p.Reasons = append(p.Reasons, fmt.Sprintf("write method %s was requested", method))
		if hasFlag && (method == MethodConfigDir || method == MethodConfigFile) {
			return nil, fmt.Errorf("%s: %w (%s)", method, ErrFlagOverrides, flagO.String())
		}
	case hasFlag && flagO.via == legacyEvictVar && !packageOwned(flagO.file) && strings.HasSuffix(flagO.file, ".conf"):
		method = MethodLegacyDropIn
		p.Reasons = append(p.Reasons, fmt.Sprintf("--eviction-hard comes from %s; that operator-owned drop-in is rewritten", flagO.String()))
	case hasFlag:
		method = MethodSystemdDropIn
		p.Reasons = append(p.Reasons, fmt.Sprintf("--eviction-hard is set at %s and overrides the config file and drop-ins; a later --eviction-hard in %s/%s carries the complete map", flagO.String(), OwnUnitDropInDir, OwnDropInName))
	case legacyLayout:
		method = MethodLegacyDropIn
		p.Reasons = append(p.Reasons, fmt.Sprintf("%s:%d defines ExecStart= in an operator-owned drop-in without EnvironmentFile= (kubeadm 1.7-era layout: every setting an Environment= there): $%s is added there", l.execFile, l.execLine, legacyEvictVar))
	case l.kf.configDir != "" && v.AtLeast(30):
		method = MethodConfigDir
		p.Reasons = append(p.Reasons, fmt.Sprintf("the kubelet has --config-dir=%s (%s) and no --eviction-hard flag: a drop-in there is merged last", l.kf.configDir, l.kf.set["config-dir"].String()))
	default:
		method = MethodSystemdDropIn
		why := fmt.Sprintf("ExecStart= is in %s", l.execFile)
		if packageOwned(l.execFile) {
			why += ", a package-owned file that must not be edited"
		}
		if l.kf.config != "" {
			why += fmt.Sprintf("; %s is overwritten by kubeadm upgrade", l.kf.config)
		}
		p.Reasons = append(p.Reasons, why+fmt.Sprintf("; evictguard's own %s/%s adds --eviction-hard to the command line (KUBELET_EXTRA_ARGS is left to /etc/default/kubelet)", OwnUnitDropInDir, OwnDropInName))
	}
	p.Method = method
	switch method {
	case MethodLegacyDropIn:
		file := l.execFile
		if hasFlag && flagO.via == legacyEvictVar {
			file = flagO.file
		}
		if packageOwned(file) {
			return nil, fmt.Errorf("%s is package-owned; refusing to edit it in place", file)
		}
		before, err := os.ReadFile(root.Path(file))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		after, err := RewriteLegacyDropIn(before, req.Hard)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		p.Files = append(p.Files, FileWrite{Path: file, Before: before, After: after, Perm: 0o644})
		p.UnitChanged = true
	case MethodSystemdDropIn:
		path := filepath.Join(OwnUnitDropInDir, OwnDropInName)
		before, err := readOptional(root, path)
		if err != nil {
			return nil, err
		}
		execFrom := l.execFile
		if l.execFile == path {
			// Our own drop-in already re-declares ExecStart: keep its command, without our var,
			// and the name of the file it was copied from.
			l.execRaw = strings.TrimSpace(strings.ReplaceAll(l.execRaw, " $"+ownEvictVar, ""))
			if _, rest, ok := strings.Cut(string(before), "# ExecStart= copied from "); ok {
				execFrom, _, _ = strings.Cut(rest, ";")
			}
		}
		// Repeated --eviction-hard flags accumulate: a key an earlier flag sets cannot be
		// removed by a later one.
		for k, e := range l.kf.hard {
			if _, ok := req.Hard[k]; !ok && e.o.via != ownEvictVar {
				return nil, fmt.Errorf("%s<%s is set by %s and cannot be removed by a later --eviction-hard; include it in the map", k, e.val, e.o.String())
			}
		}
		after := RenderSystemdDropIn(l.execRaw, execFrom, req.Hard)
		p.Files = append(p.Files, FileWrite{Path: path, Before: before, After: after, Perm: 0o644})
		p.UnitChanged = true
		if hasFlag {
			p.Warnings = append(p.Warnings, fmt.Sprintf("the earlier --eviction-hard at %s stays; map flags accumulate and evictguard's comes last with every key", flagO.String()))
		}
	case MethodConfigDir:
		if l.kf.configDir == "" {
			return nil, errors.New("the kubelet has no --config-dir")
		}
		path := filepath.Join(l.kf.configDir, OwnDropInName)
		before, err := readOptional(root, path)
		if err != nil {
			return nil, err
		}
		p.Files = append(p.Files, FileWrite{Path: path, Before: before, After: RenderConfigDirDropIn(req.Hard), Perm: 0o644})
	case MethodConfigFile:
		if l.kf.config == "" {
			return nil, errors.New("the kubelet has no --config file")
		}
		before, err := os.ReadFile(root.Path(l.kf.config))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", l.kf.config, err)
		}
		after, err := RewriteConfigFileEvictionHard(before, req.Hard)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", l.kf.config, err)
		}
		p.Files = append(p.Files, FileWrite{Path: l.kf.config, Before: before, After: after, Perm: 0o644})
		p.Warnings = append(p.Warnings, fmt.Sprintf("kubeadm upgrade overwrites %s from the kubelet-config ConfigMap; the change is lost then", l.kf.config))
	default:
		return nil, fmt.Errorf("unknown write method %q", method)
	}
	if l.kf.configDir != "" && method != MethodConfigDir {
		p.Warnings = append(p.Warnings, "drop-ins in --config-dir do not matter while the flag carries the map")
	}
	return p, nil
}

func readOptional(root hostfs.Root, p string) ([]byte, error) {
	b, err := os.ReadFile(root.Path(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return b, nil
}

// EvictionHardFlag renders --eviction-hard=k<v,… with keys sorted.
func EvictionHardFlag(hard map[string]string) string {
	keys := sortedKeys(hard)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"<"+hard[k])
	}
	return "--eviction-hard=" + strings.Join(parts, ",")
}

// unitEscape makes a value safe inside a double-quoted unit-file assignment: "%" is a
// specifier character (systemd.unit(5): "%%" is a literal "%"), and \ and " are escaped.
func unitEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "%", "%%").Replace(s)
}

// RewriteLegacyDropIn sets Environment="KUBELET_EVICTION_POLICY_ARGS=--eviction-hard=…" in a
// kubeadm 1.7-era drop-in (replacing the line if there is one, else inserting it before the
// first ExecStart=) and appends $KUBELET_EVICTION_POLICY_ARGS to the last ExecStart= if it is
// not there. Everything else, comments included, is kept byte for byte; applying it twice
// gives the same file.
func RewriteLegacyDropIn(data []byte, hard map[string]string) ([]byte, error) {
	envLine := `Environment="` + legacyEvictVar + "=" + unitEscape(EvictionHardFlag(hard)) + `"`
	lines := strings.Split(string(data), "\n")
	section := ""
	envIdx, firstExec, lastExec := -1, -1, -1
	lastExecEnd := -1
	for i := 0; i < len(lines); i++ {
		t := strings.TrimSpace(lines[i])
		switch {
		case strings.HasPrefix(t, "["):
			section = strings.Trim(t, "[]")
			continue
		case section != "Service" || t == "" || t[0] == '#' || t[0] == ';':
			continue
		}
		name, val, _ := strings.Cut(t, "=")
		name = strings.TrimSpace(name)
		end := i
		for end < len(lines)-1 && strings.HasSuffix(strings.TrimSpace(lines[end]), "\\") {
			end++
		}
		switch name {
		case "Environment":
			if strings.Contains(val, legacyEvictVar+"=") {
				if envIdx >= 0 || end != i {
					return nil, fmt.Errorf("line %d: %s is set more than once or over several lines; not editing by hand-written rules", i+1, legacyEvictVar)
				}
				if strings.Count(strings.TrimSpace(val), "=") > 1 && !strings.HasPrefix(strings.TrimSpace(val), `"`+legacyEvictVar) && !strings.HasPrefix(strings.TrimSpace(val), legacyEvictVar) {
					return nil, fmt.Errorf("line %d: %s shares its Environment= line with other variables", i+1, legacyEvictVar)
				}
				envIdx = i
			}
		case "ExecStart":
			if firstExec < 0 {
				firstExec = i
			}
			if strings.TrimSpace(val) != "" {
				lastExec, lastExecEnd = i, end
			}
		}
		i = end
	}
	if lastExec < 0 {
		return nil, errors.New("no ExecStart= in [Service]")
	}
	execText := strings.Join(lines[lastExec:lastExecEnd+1], " ")
	if !slices.Contains(strings.Fields(execText), "$"+legacyEvictVar) && !strings.Contains(execText, "${"+legacyEvictVar+"}") {
		lines[lastExecEnd] = strings.TrimRight(lines[lastExecEnd], " \t") + " $" + legacyEvictVar
	}
	if envIdx >= 0 {
		lines[envIdx] = envLine
	} else {
		lines = slices.Insert(lines, firstExec, envLine)
	}
	return []byte(strings.Join(lines, "\n")), nil
}

// RenderSystemdDropIn renders evictguard's own kubelet.service drop-in: ExecStart= reset and
// re-declared as execRaw (the unit's ExecStart= as written, from execFrom) with
// $EVICTGUARD_EVICTION_ARGS appended, which holds the complete --eviction-hard map.
func RenderSystemdDropIn(execRaw, execFrom string, hard map[string]string) []byte {
	var b strings.Builder
	b.WriteString("# Written by evictguard; do not edit (evictguard apply rewrites it, and restores the\n")
	b.WriteString("# previous state on failure). It carries the kubelet's complete hard eviction map as the\n")
	b.WriteString("# last --eviction-hard on the command line.\n")
	fmt.Fprintf(&b, "# ExecStart= copied from %s; re-run evictguard plan after a kubelet package upgrade.\n", execFrom)
	b.WriteString("[Service]\n")
	b.WriteString(`Environment="` + ownEvictVar + "=" + unitEscape(EvictionHardFlag(hard)) + "\"\n")
	b.WriteString("ExecStart=\n")
	b.WriteString("ExecStart=" + strings.TrimSpace(execRaw) + " $" + ownEvictVar + "\n")
	return []byte(b.String())
}

// RenderConfigDirDropIn renders a --config-dir drop-in with the complete evictionHard map.
// Values are quoted (a bare 10% is not valid YAML for some parsers, and 0 would be a number).
func RenderConfigDirDropIn(hard map[string]string) []byte {
	var b strings.Builder
	b.WriteString("# Written by evictguard; do not edit. The complete hard eviction map (maps in --config-dir\n")
	b.WriteString("# drop-ins merge key by key; every key is listed so nothing depends on the defaults).\n")
	b.WriteString("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nevictionHard:\n")
	for _, k := range sortedKeys(hard) {
		fmt.Fprintf(&b, "  %s: %s\n", k, strconv.Quote(hard[k]))
	}
	return []byte(b.String())
}

// CompleteHard returns the hard map to write: the kubelet's currently enforced hard thresholds
// (defaults included, signals the kubelet adds itself left out) with changes applied.
func CompleteHard(eff *Effective, changes map[string]string) map[string]string {
	out := map[string]string{}
	for _, t := range eff.Thresholds {
		if t.Kind != Hard || t.Signal == SignalAllocatableMemoryAvailable || t.Signal == SignalContainerFsAvailable || t.Signal == SignalContainerFsInodesFree {
			continue
		}
		out[t.Signal] = t.Raw
	}
	for k, v := range changes {
		out[k] = v
	}
	return out
}

// EnforcedHard returns the keys of a raw evictionHard map the kubelet enforces ("0%"/"100%"
// disable a signal), for comparing a /configz answer with what was written.
func EnforcedHard(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v == "0%" || v == "100%" || k == SignalContainerFsAvailable || k == SignalContainerFsInodesFree {
			continue
		}
		out[k] = v
	}
	return out
}

// DefaultsFor is DefaultEvictionHard for this machine's OS.
func DefaultsFor(version string) (map[string]string, error) {
	v, err := ParseVersion(version)
	if err != nil {
		return nil, err
	}
	return DefaultEvictionHard(v, runtime.GOOS), nil
}
