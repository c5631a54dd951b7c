package kubeletcfg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// row is "kind signal value grace minReclaim | source", compact enough to list every
// threshold of a fixture exactly.
func rows(eff *Effective) []string {
	var out []string
	for _, t := range eff.Thresholds {
		g := ""
		if t.Kind == Soft {
			g = t.GracePeriod.String()
		}
		out = append(out, fmt.Sprintf("%s %s %s %s %s | %s", t.Kind, t.Signal, t.Raw, g, t.MinimumReclaim, t.Source))
	}
	return out
}

const (
	dropin110 = "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
	cfgFile   = "/var/lib/kubelet/config.yaml"
	flagsEnv  = "/var/lib/kubelet/kubeadm-flags.env"
)

func TestDiscoverFixtures(t *testing.T) {
	def := func(v string) string { return "default (kubelet " + v + ", no evictionHard in " + cfgFile + ")" }
	alloc := func(src string) string {
		return "auto-added by the kubelet: copy of hard memory.available from " + src + " (enforceNodeAllocatable contains pods)"
	}
	tests := []struct {
		host, version string
		want          []string
		configFile    string
		configDir     string
		rootDir       string
		warnings      []string // substrings, each must match one warning
		noWarnings    bool
		sources       []string // prefix of Sources
	}{{
		host: "kubeadm-1.7-before", version: "1.7",
		want: []string{
			"hard memory.available 100Mi   | default (kubelet 1.7, no --config and no --eviction-hard)",
			"hard allocatableMemory.available 100Mi   | " + alloc("default (kubelet 1.7, no --config and no --eviction-hard)"),
			"hard nodefs.available 10%   | default (kubelet 1.7, no --config and no --eviction-hard)",
			"hard nodefs.inodesFree 5%   | default (kubelet 1.7, no --config and no --eviction-hard)",
		},
		noWarnings: true,
		sources:    []string{"/etc/systemd/system/kubelet.service", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"},
	}, {
		// The operator's fix from the incident in README.md, and the trap he walked past.
		host: "kubeadm-1.7-after", version: "1.7",
		want: []string{
			"hard nodefs.available 5%   | flag --eviction-hard in /etc/systemd/system/kubelet.service.d/10-kubeadm.conf:4 via $KUBELET_EVICTION_POLICY_ARGS",
		},
		warnings: []string{"defaults memory.available<100Mi, nodefs.inodesFree<5% are NOT enforced"},
	}, {
		// Old kubeadm wrote the 4-key map explicitly; deb legacy layout.
		host: "deb-1.25", version: "1.25", configFile: cfgFile,
		want: []string{
			"hard memory.available 100Mi   | " + cfgFile + ":19",
			"hard allocatableMemory.available 100Mi   | " + alloc(cfgFile+":19"),
			"hard nodefs.available 10%   | " + cfgFile + ":20",
			"hard nodefs.inodesFree 5%   | " + cfgFile + ":21",
			"hard imagefs.available 15%   | " + cfgFile + ":18",
		},
		noWarnings: true,
		sources:    []string{"/lib/systemd/system/kubelet.service", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", flagsEnv, "/etc/default/kubelet", cfgFile},
	}, {
		// Repeated --eviction-hard (kubeadm-flags.env, then /etc/sysconfig/kubelet) accumulate.
		host: "rpm-1.28", version: "1.28", configFile: cfgFile,
		want: []string{
			"hard memory.available 200Mi   | flag --eviction-hard in /etc/sysconfig/kubelet:2 via $KUBELET_EXTRA_ARGS",
			"hard allocatableMemory.available 200Mi   | " + alloc("flag --eviction-hard in /etc/sysconfig/kubelet:2 via $KUBELET_EXTRA_ARGS"),
			"hard nodefs.available 8%   | flag --eviction-hard in " + flagsEnv + ":1 via $KUBELET_KUBEADM_ARGS",
			"hard imagefs.available 12%   | flag --eviction-hard in " + flagsEnv + ":1 via $KUBELET_KUBEADM_ARGS",
			"soft nodefs.available 15% 2m0s  | flag --eviction-soft in /etc/sysconfig/kubelet:2 via $KUBELET_EXTRA_ARGS",
		},
		warnings: []string{"replaces the whole evictionHard map", "defaults nodefs.inodesFree<5% are NOT enforced"},
		sources:  []string{"/usr/lib/systemd/system/kubelet.service", dropin110, flagsEnv, "/etc/sysconfig/kubelet", cfgFile},
	}, {
		host: "deb-1.35", version: "1.35", configFile: cfgFile,
		want: []string{
			"hard memory.available 100Mi   | " + def("1.35"),
			"hard allocatableMemory.available 100Mi   | " + alloc(def("1.35")),
			"hard nodefs.available 10%   | " + def("1.35"),
			"hard nodefs.inodesFree 5%   | " + def("1.35"),
			"hard imagefs.available 15%   | " + def("1.35"),
			"hard imagefs.inodesFree 5%   | " + def("1.35"),
		},
		noWarnings: true,
	}, {
		// Same layout on 1.29: four defaults.
		host: "deb-1.35", version: "1.29", configFile: cfgFile,
		want: []string{
			"hard memory.available 100Mi   | " + def("1.29"),
			"hard allocatableMemory.available 100Mi   | " + alloc(def("1.29")),
			"hard nodefs.available 10%   | " + def("1.29"),
			"hard nodefs.inodesFree 5%   | " + def("1.29"),
			"hard imagefs.available 15%   | " + def("1.29"),
		},
	}, {
		host: "rpm-1.33-merge", version: "1.33", configFile: cfgFile,
		want: []string{
			"hard memory.available 500Mi  0 | " + cfgFile + ":19",
			"hard allocatableMemory.available 500Mi  0 | " + alloc(cfgFile+":19"),
			"hard nodefs.available 10%  500Mi | default (kubelet 1.33, merged by mergeDefaultEvictionSettings at " + cfgFile + ":17)",
			"hard nodefs.inodesFree 5%   | default (kubelet 1.33, merged by mergeDefaultEvictionSettings at " + cfgFile + ":17)",
			"hard imagefs.available 15%   | default (kubelet 1.33, merged by mergeDefaultEvictionSettings at " + cfgFile + ":17)",
		},
		noWarnings: true,
	}, {
		// The same file on 1.32: mergeDefaultEvictionSettings is unknown, the partial map stands.
		host: "rpm-1.33-merge", version: "1.32", configFile: cfgFile,
		want: []string{
			"hard memory.available 500Mi  0 | " + cfgFile + ":19",
			"hard allocatableMemory.available 500Mi  0 | " + alloc(cfgFile+":19"),
		},
		warnings: []string{"mergeDefaultEvictionSettings needs kubelet ≥1.33", "defaults nodefs.available<10%, nodefs.inodesFree<5%, imagefs.available<15% are NOT enforced"},
	}, {
		host: "partial-1.31", version: "1.31", configFile: cfgFile,
		want: []string{
			"hard nodefs.available 5%   | " + cfgFile + ":18",
			"soft memory.available 1Gi 1m30s  | " + cfgFile + ":20",
		},
		warnings: []string{"evictionHard at " + cfgFile + ":17 replaces the whole default map: the kubelet's defaults memory.available<100Mi, nodefs.inodesFree<5%, imagefs.available<15%, imagefs.inodesFree<5% are NOT enforced"},
	}, {
		host: "configdir-1.35", version: "1.35", configFile: cfgFile, configDir: "/etc/kubernetes/kubelet.conf.d",
		want: []string{
			"hard memory.available 500Mi   | /etc/kubernetes/kubelet.conf.d/10-eviction.conf:4",
			"hard allocatableMemory.available 500Mi   | " + alloc("/etc/kubernetes/kubelet.conf.d/10-eviction.conf:4"),
			"hard nodefs.available 10%   | " + def("1.35"),
			"hard nodefs.inodesFree 10%   | /etc/kubernetes/kubelet.conf.d/15-nulls.conf:4",
			"hard imagefs.available 15%   | " + def("1.35"),
			"soft nodefs.available 15% 5m0s  | /etc/kubernetes/kubelet.conf.d/20-more/30-soft.conf:2",
		},
		noWarnings: true,
	}, {
		host: "flags-only-1.35", version: "1.35", rootDir: "/data/kubelet",
		warnings: []string{"enforces NO hard eviction thresholds"},
	}, {
		// Flags only before 1.26: the defaults apply.
		host: "flags-only-1.35", version: "1.25", rootDir: "/data/kubelet",
		want: []string{
			"hard memory.available 100Mi   | default (kubelet 1.25, no --config and no --eviction-hard)",
			"hard allocatableMemory.available 100Mi   | " + alloc("default (kubelet 1.25, no --config and no --eviction-hard)"),
			"hard nodefs.available 10%   | default (kubelet 1.25, no --config and no --eviction-hard)",
			"hard nodefs.inodesFree 5%   | default (kubelet 1.25, no --config and no --eviction-hard)",
			"hard imagefs.available 15%   | default (kubelet 1.25, no --config and no --eviction-hard)",
		},
		noWarnings: true,
	}, {
		// "_" spelling, "--flag value", %% in the unit, continuation lines, repeated flags.
		host: "flags-only-hard-1.35", version: "1.35",
		want: []string{
			"hard memory.available 1Gi   | flag --eviction-hard in /etc/systemd/system/kubelet.service.d/10-flags.conf:2 via $EVICT",
			"hard allocatableMemory.available 1Gi   | " + alloc("flag --eviction-hard in /etc/systemd/system/kubelet.service.d/10-flags.conf:2 via $EVICT"),
			"hard nodefs.available 20%  1Gi | flag --eviction-hard in /etc/systemd/system/kubelet.service.d/10-flags.conf:2 via $EVICT2",
		},
		noWarnings: true,
	}, {
		host: "flag-overrides-1.35", version: "1.35", configFile: cfgFile,
		want: []string{
			"hard memory.available 300Mi   | flag --eviction-hard in " + flagsEnv + ":1 via $KUBELET_KUBEADM_ARGS",
			"hard allocatableMemory.available 300Mi   | " + alloc("flag --eviction-hard in "+flagsEnv+":1 via $KUBELET_KUBEADM_ARGS"),
			"hard nodefs.available 7%   | flag --eviction-hard in " + flagsEnv + ":1 via $KUBELET_KUBEADM_ARGS",
			"hard nodefs.inodesFree 5%   | flag --eviction-hard in " + flagsEnv + ":1 via $KUBELET_KUBEADM_ARGS",
			"hard imagefs.available 10%   | flag --eviction-hard in " + flagsEnv + ":1 via $KUBELET_KUBEADM_ARGS",
			"hard imagefs.inodesFree 5%   | flag --eviction-hard in " + flagsEnv + ":1 via $KUBELET_KUBEADM_ARGS",
		},
		warnings: []string{
			"flag --eviction-hard in " + flagsEnv + ":1 via $KUBELET_KUBEADM_ARGS replaces the whole evictionHard map of the config file and drop-ins",
			"/etc/kubernetes/kubelet.conf.d has drop-ins (/etc/kubernetes/kubelet.conf.d/90-evictguard.conf) but the kubelet has no --config-dir",
		},
	}, {
		// A running kubelet whose command line matches the unit: provenance from the files.
		host: "proc-1.35", version: "1.35", configFile: cfgFile,
		want: []string{
			"hard memory.available 100Mi   | " + def("1.35"),
			"hard allocatableMemory.available 100Mi   | " + alloc(def("1.35")),
			"hard nodefs.available 10%   | " + def("1.35"),
			"hard nodefs.inodesFree 5%   | " + def("1.35"),
			"hard imagefs.available 15%   | " + def("1.35"),
			"hard imagefs.inodesFree 5%   | " + def("1.35"),
		},
		noWarnings: true,
		sources:    []string{"/proc/4242/cmdline", "/usr/lib/systemd/system/kubelet.service"},
	}}
	for _, tc := range tests {
		t.Run(tc.host+"@"+tc.version, func(t *testing.T) {
			eff, err := Discover(context.Background(), Options{HostRoot: hostfs.Root(filepath.Join("testdata/hosts", tc.host)), Version: tc.version})
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if got := rows(eff); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("thresholds:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tc.want, "\n      "))
			}
			if !eff.KubeletFound {
				t.Errorf("KubeletFound = false")
			}
			if eff.ConfigFile != tc.configFile || eff.ConfigDir != tc.configDir {
				t.Errorf("config file/dir = %q/%q, want %q/%q", eff.ConfigFile, eff.ConfigDir, tc.configFile, tc.configDir)
			}
			wantRoot := tc.rootDir
			if wantRoot == "" {
				wantRoot = "/var/lib/kubelet"
			}
			if eff.RootDir != wantRoot {
				t.Errorf("RootDir = %q, want %q", eff.RootDir, wantRoot)
			}
			for _, w := range tc.warnings {
				if !containsSub(eff.Warnings, w) {
					t.Errorf("no warning containing %q in:\n%s", w, strings.Join(eff.Warnings, "\n"))
				}
			}
			if tc.noWarnings && len(eff.Warnings) > 0 {
				t.Errorf("unexpected warnings:\n%s", strings.Join(eff.Warnings, "\n"))
			}
			for i, s := range tc.sources {
				if i >= len(eff.Sources) || eff.Sources[i] != s {
					t.Errorf("Sources = %q, want prefix %q", eff.Sources, tc.sources)
					break
				}
			}
		})
	}
}

func containsSub(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestDiscoverCmdline is the path the real-kubelet e2e uses: a command line plus files.
func TestDiscoverCmdline(t *testing.T) {
	root := hostfs.Root("testdata/hosts/configdir-1.35")
	eff, err := Discover(context.Background(), Options{
		HostRoot: root, Version: "v1.37.2",
		Cmdline: []string{"/usr/bin/kubelet", "--config", cfgFile, "--config-dir=/etc/kubernetes/kubelet.conf.d",
			"--eviction-soft=nodefs.available<20%", "--eviction-soft-grace-period", "nodefs.available=1m", "--fail-swap-on=false", "--unknown-flag", "x"},
		ConfigzURL: "testdata/configz/configdir-soft-flag.json",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"hard memory.available 500Mi   | /etc/kubernetes/kubelet.conf.d/10-eviction.conf:4",
		"hard allocatableMemory.available 500Mi   | auto-added by the kubelet: copy of hard memory.available from /etc/kubernetes/kubelet.conf.d/10-eviction.conf:4 (enforceNodeAllocatable contains pods)",
		"hard nodefs.available 10%   | default (kubelet 1.37, no evictionHard in /var/lib/kubelet/config.yaml)",
		"hard nodefs.inodesFree 10%   | /etc/kubernetes/kubelet.conf.d/15-nulls.conf:4",
		"hard imagefs.available 15%   | default (kubelet 1.37, no evictionHard in /var/lib/kubelet/config.yaml)",
		"soft nodefs.available 20% 1m0s  | flag --eviction-soft in --kubelet-cmdline",
	}
	if got := rows(eff); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if eff.Version != "1.37.2" {
		t.Errorf("Version = %q", eff.Version)
	}
	wantMis := []string{`evictionHard[memory.available]: computed "500Mi" (/etc/kubernetes/kubelet.conf.d/10-eviction.conf:4) but configz has "100Mi"`}
	if strings.Join(eff.Mismatches, "\n") != strings.Join(wantMis, "\n") {
		t.Errorf("Mismatches = %q, want %q", eff.Mismatches, wantMis)
	}
}

// TestDiscoverNoKubelet: nothing on the node; the kubeadm defaults of DefaultKubeletVersion.
func TestDiscoverNoKubelet(t *testing.T) {
	eff, err := Discover(context.Background(), Options{HostRoot: hostfs.Root(t.TempDir())})
	if err != nil {
		t.Fatal(err)
	}
	if eff.KubeletFound || eff.Version != DefaultKubeletVersion || len(eff.Thresholds) != 6 {
		t.Errorf("found=%v version=%s thresholds=%d", eff.KubeletFound, eff.Version, len(eff.Thresholds))
	}
	for _, w := range []string{"no kubelet found", "kubelet version unknown"} {
		if !containsSub(eff.Warnings, w) {
			t.Errorf("no warning %q: %q", w, eff.Warnings)
		}
	}
}

// writeTree creates files (node path → content) under a temp host root.
func writeTree(t *testing.T, files map[string]string) hostfs.Root {
	t.Helper()
	root := hostfs.Root(t.TempDir())
	for p, c := range files {
		full := root.Path(p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const unitOK = "[Service]\nExecStart=/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml\n"

func cfg(body string) string {
	return "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n" + body
}

func TestDiscoverBadInput(t *testing.T) {
	unit := "/etc/systemd/system/kubelet.service"
	tests := []struct {
		name    string
		files   map[string]string
		cmdline []string
		version string
		want    string // the whole error message
	}{
		{"malformed YAML", map[string]string{unit: unitOK, cfgFile: cfg("evictionHard:\n  nodefs.available: \"10%\"\n   bad: [\n")},
			nil, "", cfgFile + ":4: malformed YAML: did not find expected key"},
		{"unknown signal", map[string]string{unit: unitOK, cfgFile: cfg("evictionHard:\n  allocatableNodeFs.available: \"10%\"\n")},
			nil, "", cfgFile + ":4: unsupported eviction signal allocatableNodeFs.available"},
		{"zero quantity", map[string]string{unit: unitOK, cfgFile: cfg("evictionHard:\n  nodefs.available: \"0\"\n")},
			nil, "", cfgFile + ":4: eviction threshold nodefs.available must be positive: 0"},
		{"nodefs.available<0 flag", map[string]string{"/etc/default/kubelet": "KUBELET_EXTRA_ARGS=--eviction-hard=nodefs.available<0\n",
			unit: "[Service]\nEnvironmentFile=-/etc/default/kubelet\nExecStart=/usr/bin/kubelet $KUBELET_EXTRA_ARGS\n"},
			nil, "", "/etc/default/kubelet:1: --eviction-hard (via $KUBELET_EXTRA_ARGS): eviction threshold nodefs.available must be positive: 0"},
		{"percentage over 100", nil, []string{"--eviction-hard=memory.available<101%"}, "",
			"--kubelet-cmdline: --eviction-hard: eviction percentage threshold memory.available must be <= 100%: 101%"},
		{"1.7 0%", nil, []string{"--eviction-hard=nodefs.available<0%"}, "1.7",
			"--kubelet-cmdline: --eviction-hard: eviction percentage threshold nodefs.available must be positive: 0%"},
		{"1.7 duplicate", nil, []string{"--eviction-hard=nodefs.available<5%,nodefs.available<6%"}, "1.7",
			"--kubelet-cmdline: --eviction-hard: found duplicate eviction threshold for signal nodefs.available"},
		{"malformed flag pair", nil, []string{"--eviction-hard", "nodefs.available=5%"}, "",
			`--kubelet-cmdline: invalid argument "--eviction-hard nodefs.available=5%" for --eviction-hard: malformed pair, expect string<string`},
		{"soft without grace", map[string]string{unit: unitOK, cfgFile: cfg("evictionSoft:\n  memory.available: 1Gi\n")},
			nil, "", cfgFile + ":4: grace period must be specified for the soft eviction threshold memory.available"},
		{"unknown apiVersion", map[string]string{unit: unitOK, cfgFile: "apiVersion: kubelet.config.k8s.io/v1\nkind: KubeletConfiguration\n"},
			nil, "", cfgFile + `:1: unknown apiVersion "kubelet.config.k8s.io/v1": the kubelet reads kubelet.config.k8s.io/v1beta1`},
		{"unquoted integer", map[string]string{unit: unitOK, cfgFile: cfg("evictionHard:\n  nodefs.inodesFree: 1000\n")},
			nil, "", cfgFile + ":3: cannot decode KubeletConfiguration: cannot unmarshal number into Go struct field KubeletConfiguration.evictionHard of type string"},
		{"unreadable config file", map[string]string{unit: unitOK},
			nil, "", cfgFile + ": cannot read kubelet config file: no such file or directory"},
		{"empty config file", map[string]string{unit: unitOK, cfgFile: "\n"},
			nil, "", cfgFile + ": kubelet config file was empty"},
		{"truncated unit", map[string]string{unit: "[Service]\nExecStart=/usr/bin/kubelet \\\n"},
			nil, "", unit + ":2: malformed unit file: truncated (continuation line at end of file)"},
		{"unit section header", map[string]string{unit: "[Servi"},
			nil, "", unit + `:1: malformed unit file: unterminated section header "[Servi"`},
		{"unit garbage line", map[string]string{unit: "[Service]\nExecStart=/usr/bin/kubelet\nthis is not a unit\n"},
			nil, "", unit + `:3: malformed unit file: "this is not a unit" is not an assignment`},
		{"unit unterminated quote", map[string]string{unit: "[Service]\nEnvironment=\"A=--eviction-hard=nodefs.available<5%\nExecStart=/usr/bin/kubelet $A\n"},
			nil, "", unit + ":2: Environment=: unterminated \" quote"},
		{"two ExecStart", map[string]string{unit: unitOK, "/etc/systemd/system/kubelet.service.d/10-x.conf": "[Service]\nExecStart=/usr/bin/kubelet --v=2\n"},
			nil, "", "/etc/systemd/system/kubelet.service.d/10-x.conf:2: kubelet.service has more than one ExecStart= (first at " + unit + ":2) and no empty ExecStart= to reset it; systemd refuses to load the unit"},
		{"drop-in without kind", map[string]string{"/d/10.conf": "evictionHard: {}\n"}, []string{"--config-dir=/d"}, "",
			"/d/10.conf:1: no apiVersion/kind: the kubelet needs apiVersion: kubelet.config.k8s.io/v1beta1 and kind: KubeletConfiguration"},
		{"bad version", nil, []string{"--v=2"}, "banana", `kubelet version "banana": want X.Y or vX.Y.Z`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := writeTree(t, tc.files)
			v := tc.version
			if v == "" {
				v = "1.35"
			}
			eff, err := Discover(context.Background(), Options{HostRoot: root, Cmdline: tc.cmdline, Version: v})
			if err == nil {
				t.Fatalf("no error; thresholds %q", rows(eff))
			}
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v (%T) is not an *InputError", err, err)
			}
			if eff != nil {
				t.Errorf("partial result returned with error")
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tc.want)
			}
		})
	}
}
