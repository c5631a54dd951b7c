package deploy

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/evictguard/evictguard/config"
)

// exampleConfigs finds every evictguard configuration shipped in deploy/ (files whose kind is
// EvictguardConfiguration) and every fenced ```yaml block of that kind in README.md and
// docs/**/*.md.
func exampleConfigs(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		if strings.Contains(path, "/templates/") { // Helm templates are not YAML until rendered
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("kind: "+config.Kind)) {
			out[path] = b
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fence := regexp.MustCompile("(?ms)^```ya?ml[^\n]*\n(.*?)^```")
	mds := []string{"../README.md"}
	err = filepath.WalkDir("../docs", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			mds = append(mds, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, md := range mds {
		b, err := os.ReadFile(md)
		if err != nil {
			t.Fatalf("read %s: %v", md, err)
		}
		for _, m := range fence.FindAllSubmatchIndex(b, -1) {
			block := b[m[2]:m[3]]
			if !bytes.Contains(block, []byte("kind: "+config.Kind)) {
				continue
			}
			line := bytes.Count(b[:m[2]], []byte("\n")) + 1
			out[md+":"+strconv.Itoa(line)] = block
		}
	}
	return out
}

// TestExampleConfigsLoad: every example configuration parses strictly and validates.
func TestExampleConfigsLoad(t *testing.T) {
	ex := exampleConfigs(t)
	for _, want := range []string{"kubernetes/base/config.yaml", "kubernetes/overlays/remediation/config.yaml"} {
		if _, ok := ex[want]; !ok {
			t.Errorf("example %s not found", want)
		}
	}
	for name, b := range ex {
		t.Run(name, func(t *testing.T) {
			if _, err := config.Load(name, b); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestSystemdUnit pins the unit's contract with the binary (Type=notify, watchdog, reload by
// SIGHUP) and the monitor-only hardening, and that the remediation drop-in only loosens
// what actions need.
func TestSystemdUnit(t *testing.T) {
	read := func(path string) map[string][]string {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		opts, err := unit.DeserializeOptions(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		m := map[string][]string{}
		for _, o := range opts {
			m[o.Section+"."+o.Name] = append(m[o.Section+"."+o.Name], o.Value)
		}
		return m
	}
	svc := read("systemd/evictguard.service")
	want := map[string]string{
		"Service.Type": "notify", "Service.NotifyAccess": "main", "Service.ExecReload": "/bin/kill -HUP $MAINPID",
		"Service.NoNewPrivileges": "yes", "Service.ProtectSystem": "strict", "Service.PrivateTmp": "yes",
		"Service.CapabilityBoundingSet": "CAP_DAC_READ_SEARCH", "Service.StateDirectory": "evictguard",
	}
	for k, v := range want {
		if got := svc[k]; len(got) != 1 || got[0] != v {
			t.Errorf("evictguard.service %s = %q, want %q", k, got, v)
		}
	}
	if w := svc["Service.WatchdogSec"]; len(w) != 1 || w[0] == "0" {
		t.Errorf("WatchdogSec = %q", w)
	}
	if e := svc["Service.ExecStart"]; len(e) != 1 || !strings.Contains(e[0], " run --config /etc/evictguard/config.yaml") {
		t.Errorf("ExecStart = %q", e)
	}
	drop := read("systemd/evictguard-remediate.conf")
	for k := range drop {
		if !strings.HasPrefix(k, "Service.") {
			t.Errorf("drop-in sets %s outside [Service]", k)
		}
		switch k {
		case "Service.NoNewPrivileges", "Service.ProtectSystem", "Service.Type", "Service.ExecStart", "Service.User":
			t.Errorf("the remediation drop-in must not change %s", k)
		}
	}
	if caps := drop["Service.CapabilityBoundingSet"]; len(caps) != 2 || caps[0] != "" {
		t.Errorf("drop-in CapabilityBoundingSet must reset, then list: %q", caps)
	}
}
