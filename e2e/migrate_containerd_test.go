package e2e

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/treecopy"
)

// ociBusyboxTar writes an OCI image layout tarball (one layer: the busybox rootfs) named ref,
// for `ctr images import`.
func ociBusyboxTar(t *testing.T, ref string) string {
	t.Helper()
	return ociBusyboxTarCmd(t, ref, []string{"/bin/sh"})
}

// ociBusyboxTarCmd is ociBusyboxTar with the image's command (a pause image sleeps).
func ociBusyboxTarCmd(t *testing.T, ref string, cmd []string) string {
	t.Helper()
	layer, err := os.ReadFile(harness.BusyboxRootfsTar(t))
	if err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{}
	add := func(b []byte) (string, int) {
		s := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(s[:])
		blobs[d] = b
		return d, len(b)
	}
	ld, ls := add(layer)
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": cmd}, "rootfs": map[string]any{"type": "layers", "diff_ids": []string{ld}}})
	cd, cs := add(cfg)
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}}})
	md, ms := add(man)
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
		"annotations": map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": "1"}}}})
	p := filepath.Join(harness.TempDir(t, "oci"), "busybox-oci.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	write := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	write("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	write("index.json", index)
	for d, b := range blobs {
		write("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// containerdDigest covers the content store and the unpacked snapshots.
func containerdDigest(t *testing.T, root string) (string, string) {
	t.Helper()
	var lines strings.Builder
	d, err := treecopy.Digest(context.Background(), root, treecopy.DigestOptions{Mtime: true, Lines: &lines, Skip: func(rel string) bool {
		top, _, _ := strings.Cut(rel, "/")
		return top != "io.containerd.content.v1.content" && top != "io.containerd.snapshotter.v1.native"
	}})
	if err != nil {
		t.Fatal(err)
	}
	return d, lines.String()
}

// TestMigrateContainerd moves a real containerd's root (images imported with ctr) from one
// tmpfs to another while a kubelet uses it over CRI, both as units under the sandboxed
// systemd: `ctr images ls` is intact, config.toml kept its comments and other settings, CRI
// reports the new image filesystem, and the restarted kubelet is healthy.
func TestMigrateContainerd(t *testing.T) {
	harness.RequireRoot(t)
	a, b := harness.TmpFS(t, 96<<20, 20000), harness.TmpFS(t, 96<<20, 20000)
	stateDir := harness.TempDir(t, "evictguard-state")
	sd := harness.StartSystemd(t)
	from, to := filepath.Join(a, "containerd"), filepath.Join(b, "containerd")
	c := harness.StartContainerdUnit(t, sd, harness.ContainerdOptions{Root: from})
	c.Ctr(t, "images", "import", "--snapshotter", "native", ociBusyboxTar(t, "evictguard.local/busybox:1"))
	imagesBefore := c.Ctr(t, "images", "ls", "-q")
	if !strings.Contains(imagesBefore, "evictguard.local/busybox:1") {
		t.Fatalf("import: ctr images ls = %q", imagesBefore)
	}
	cfgBefore, _ := os.ReadFile(c.ConfigPath)

	k := harness.PrepareKubelet(t, harness.KubeletOptions{Containerd: c})
	startKubeletService(t, sd, k)
	healthz := func() error {
		resp, err := http.Get(k.HealthzURL())
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	}
	if err := harness.WaitFor(context.Background(), 90*time.Second, nil, healthz); err != nil {
		t.Fatalf("kubelet.service never healthy: %v", err)
	}
	digest, lines := containerdDigest(t, from)

	out, errOut, code := runEvictguardEnv(t, nil, containerdMigrateArgs(sd, c, k, stateDir, "--to", to)...)
	if code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("migrate:\n%s", out)

	if got := c.Ctr(t, "images", "ls", "-q"); got != imagesBefore {
		t.Errorf("ctr images ls after: %q, before: %q", got, imagesBefore)
	}
	if check := c.Ctr(t, "images", "check"); !strings.Contains(check, "complete") {
		t.Errorf("ctr images check: %q", check)
	}
	got, gotLines := containerdDigest(t, to)
	if got != digest {
		t.Errorf("containerd data differs after the move:\nbefore:\n%s\nafter:\n%s", lines, gotLines)
	}
	cfg, _ := os.ReadFile(c.ConfigPath)
	want := strings.Replace(string(cfgBefore), fmt.Sprintf("root = %q", from), fmt.Sprintf("root = %q", to), 1)
	if string(cfg) != want {
		t.Errorf("config.toml:\n%s\nwant\n%s", cfg, want)
	}
	if _, err := os.Stat(from); !os.IsNotExist(err) {
		t.Errorf("old root %s still exists", from)
	}
	if err := harness.WaitFor(context.Background(), 30*time.Second, nil, healthz); err != nil {
		t.Errorf("kubelet unhealthy after the migration: %v", err)
	}
	ops := journalOps(t, stateDir)
	if len(ops) != 1 || ops[0].State != journal.StateDone {
		t.Fatalf("journal: %+v", ops)
	}
	for _, h := range ops[0].History {
		t.Logf("  %-14s %s", h.Step, h.Note)
		if h.Step == migration.StepKubelet && !strings.Contains(h.Note, "healthy") {
			t.Errorf("kubelet step: %q", h.Note)
		}
		if h.Step == migration.StepStartRuntime && !strings.Contains(h.Note, to) {
			t.Errorf("start-runtime step does not report the new root: %q", h.Note)
		}
	}
}
