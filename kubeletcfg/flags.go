package kubeletcfg

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// word is one kubelet command-line argument and where it came from.
type word struct {
	s string
	o origin
}

func wordsOf(args []string, o origin) []word {
	out := make([]word, len(args))
	for i, a := range args {
		out[i] = word{s: a, o: o}
	}
	return out
}

// kubeletFlags holds what the kubelet's command line says about eviction and where the
// config comes from. Map flags use the kubelet's own flag types (component-base cli/flag) so
// the first occurrence replaces the map and later ones add to it, exactly as in
// k/k@v1.37.2:cmd/kubelet/app/options/options.go AddKubeletConfigFlags.
type kubeletFlags struct {
	config, configDir, rootDir, runtimeEndpoint string

	// set lists flag names (normalised) that appeared at least once.
	set map[string]origin

	// Maps of 1.10+ kubelets, with the origin of each key.
	hard, soft, grace, reclaim emap

	// Strings of ≤1.9 kubelets (last occurrence wins).
	legacy map[string]word

	transition       time.Duration
	enforceAllocable []string

	// Where the pods' cgroups are (Cgroups).
	cgroupDriver, cgroupRoot string
	cgroupsPerQOS            bool

	// positional arguments; the kubelet refuses them ("unknown command").
	positional []word
}

const (
	flagEvictionHard       = "eviction-hard"
	flagEvictionSoft       = "eviction-soft"
	flagEvictionGrace      = "eviction-soft-grace-period"
	flagEvictionReclaim    = "eviction-minimum-reclaim"
	flagEvictionTransition = "eviction-pressure-transition-period"
	flagEnforceAllocatable = "enforce-node-allocatable"
	flagCgroupDriver       = "cgroup-driver"
	flagCgroupRoot         = "cgroup-root"
	flagCgroupsPerQOS      = "cgroups-per-qos"
)

// trackedMap wraps a kubelet map flag so each key remembers the argument that set it; the
// wrapped Value still does the parsing, so its semantics are the kubelet's.
type trackedMap struct {
	inner pflag.Value
	m     *map[string]string
	out   *emap
	cur   *origin
	name  string
}

func (t *trackedMap) String() string { return t.inner.String() }
func (t *trackedMap) Type() string   { return t.inner.Type() }
func (t *trackedMap) Set(v string) error {
	if err := t.inner.Set(v); err != nil {
		return err
	}
	// The first Set replaced the map (or later ones added to it); rebuild the origins from
	// the map contents, keeping older origins for keys not mentioned now.
	old := *t.out
	n := make(emap, len(*t.m))
	mentioned := map[string]bool{}
	sep := "="
	if t.name == flagEvictionHard || t.name == flagEvictionSoft {
		sep = "<"
	}
	for _, pair := range strings.Split(v, ",") {
		if k, _, ok := strings.Cut(pair, sep); ok {
			mentioned[strings.TrimSpace(k)] = true
		}
	}
	for k, val := range *t.m {
		o := *t.cur
		o.flag = "--" + t.name
		if e, ok := old[k]; ok && !mentioned[k] {
			o = e.o
		}
		n[k] = entry{val: val, o: o}
	}
	*t.out = n
	return nil
}

// parseKubeletFlags parses the kubelet's arguments (without argv[0]) for a kubelet of
// version v. Flags the kubelet has but we do not need are skipped: a "--name=value" is
// one word; a bare "--name" takes the next word as its value unless that word starts with
// "-" (what pflag does for unknown flags), so boolean flags are safe as long as their values
// are written with "=", which the kubelet requires anyway.
func parseKubeletFlags(v Version, args []word) (*kubeletFlags, error) {
	kf := &kubeletFlags{set: map[string]origin{}, legacy: map[string]word{}}
	fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The kubelet normalises "_" to "-" in flag names (cliflag.WordSepNormalizeFunc).
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	fs.StringVar(&kf.config, "config", "", "")
	fs.StringVar(&kf.configDir, "config-dir", "", "")
	fs.StringVar(&kf.rootDir, "root-dir", "/var/lib/kubelet", "")
	fs.StringVar(&kf.runtimeEndpoint, "container-runtime-endpoint", "", "")
	fs.DurationVar(&kf.transition, flagEvictionTransition, 0, "")
	fs.StringSliceVar(&kf.enforceAllocable, flagEnforceAllocatable, nil, "")
	fs.StringVar(&kf.cgroupDriver, flagCgroupDriver, "", "")
	fs.StringVar(&kf.cgroupRoot, flagCgroupRoot, "", "")
	fs.BoolVar(&kf.cgroupsPerQOS, flagCgroupsPerQOS, true, "")
	// Flags that take no value; listed so that "--version" or "-h" never eats the next word.
	for _, b := range []string{"version", "help"} {
		f := fs.VarPF(&boolish{}, b, "", "")
		f.NoOptDefVal = "true"
	}
	fs.Lookup("help").Shorthand = "h"
	fs.StringP("v", "v", "", "")

	var cur origin
	var hard, soft, grace, reclaim map[string]string
	if legacyGrammar(v) {
		for _, name := range []string{flagEvictionHard, flagEvictionSoft, flagEvictionGrace, flagEvictionReclaim} {
			fs.Var(&legacyString{kf: kf, name: name, cur: &cur}, name, "")
		}
	} else {
		fs.Var(&trackedMap{inner: cliflag.NewLangleSeparatedMapStringString(&hard), m: &hard, out: &kf.hard, cur: &cur, name: flagEvictionHard}, flagEvictionHard, "")
		fs.Var(&trackedMap{inner: cliflag.NewLangleSeparatedMapStringString(&soft), m: &soft, out: &kf.soft, cur: &cur, name: flagEvictionSoft}, flagEvictionSoft, "")
		fs.Var(&trackedMap{inner: cliflag.NewMapStringString(&grace), m: &grace, out: &kf.grace, cur: &cur, name: flagEvictionGrace}, flagEvictionGrace, "")
		fs.Var(&trackedMap{inner: cliflag.NewMapStringString(&reclaim), m: &reclaim, out: &kf.reclaim, cur: &cur, name: flagEvictionReclaim}, flagEvictionReclaim, "")
	}

	for i := 0; i < len(args); i++ {
		a := args[i]
		if a.s == "--" {
			kf.positional = append(kf.positional, args[i+1:]...)
			break
		}
		if len(a.s) < 2 || a.s[0] != '-' {
			kf.positional = append(kf.positional, a)
			continue
		}
		name := strings.TrimLeft(a.s, "-")
		name, _, hasValue := strings.Cut(name, "=")
		short := !strings.HasPrefix(a.s, "--")
		var f *pflag.Flag
		if short {
			if len(name) > 0 {
				f = fs.ShorthandLookup(name[:1])
				hasValue = hasValue || len(name) > 1
			}
		} else {
			f = fs.Lookup(string(cliflag.WordSepNormalizeFunc(fs, name)))
		}
		group := []string{a.s}
		switch {
		case hasValue:
		case f != nil && f.NoOptDefVal != "":
		case f != nil:
			if i+1 >= len(args) {
				return nil, inputErrorf(a.o, "flag needs an argument: %s", a.s)
			}
			i++
			group = append(group, args[i].s)
		default:
			// Unknown to us: skip it and, like pflag, a following non-flag word.
			if i+1 < len(args) && !strings.HasPrefix(args[i+1].s, "-") {
				i++
			}
			continue
		}
		if f == nil {
			continue
		}
		cur = a.o
		if err := fs.Parse(group); err != nil {
			return nil, inputErrorf(a.o, "invalid argument %q for --%s: %s", strings.Join(group, " "), f.Name, unwrapFlagErr(err))
		}
		o := a.o
		o.flag = "--" + f.Name
		kf.set[f.Name] = o
	}
	return kf, nil
}

// unwrapFlagErr trims pflag's "invalid argument … for … flag:" prefix down to the value's
// own error, which is the kubelet's message.
func unwrapFlagErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "flag: "); i >= 0 {
		return s[i+len("flag: "):]
	}
	return s
}

// boolish accepts any value; used for --version (which also takes "raw") and --help.
type boolish struct{ v string }

func (b *boolish) String() string     { return b.v }
func (b *boolish) Set(v string) error { b.v = v; return nil }
func (b *boolish) Type() string       { return "bool" }

// legacyString is a ≤1.9 eviction flag: a plain string, the last occurrence wins.
type legacyString struct {
	kf   *kubeletFlags
	name string
	cur  *origin
	v    string
}

func (l *legacyString) String() string { return l.v }
func (l *legacyString) Type() string   { return "string" }
func (l *legacyString) Set(v string) error {
	l.v = v
	l.kf.legacy[l.name] = word{s: v, o: *l.cur}
	return nil
}

// legacyMaps turns ≤1.9 string flags into maps, checking their syntax like 1.7 did.
func (kf *kubeletFlags) legacyMaps() error {
	for name, w := range kf.legacy {
		o := w.o
		o.flag = "--" + name
		var m map[string]string
		var err error
		switch name {
		case flagEvictionHard, flagEvictionSoft:
			m, err = ParseLegacyThresholds(w.s)
		case flagEvictionGrace:
			m, err = parseLegacyPairs(w.s, "grace period")
		case flagEvictionReclaim:
			m, err = parseLegacyPairs(w.s, "minimum reclaim")
		}
		if err != nil {
			return inputErrorf(o, "%s", err)
		}
		em := fromPlain(m, o)
		if em == nil {
			em = emap{}
		}
		switch name {
		case flagEvictionHard:
			kf.hard = em
		case flagEvictionSoft:
			kf.soft = em
		case flagEvictionGrace:
			kf.grace = em
		case flagEvictionReclaim:
			kf.reclaim = em
		}
	}
	return nil
}

// has reports whether the flag appeared.
func (kf *kubeletFlags) has(name string) bool { _, ok := kf.set[name]; return ok }

// SplitCommandLine splits a shell-like command line ("--a=b --c 'd e'") into words: single
// and double quotes group, backslash escapes outside single quotes. It is for the
// --kubelet-cmdline override, not for systemd lines.
func SplitCommandLine(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case quote == '"':
			if r == '"' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 || escaped {
		return nil, fmt.Errorf("unterminated quote or escape in %q", s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}
