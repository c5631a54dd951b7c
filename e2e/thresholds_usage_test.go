package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestThresholdsUsageWarnings: a real kubelet whose --root-dir and containerd's data root are
// on one real tmpfs (no separate imagefs). `evictguard thresholds` must say that the kubelet
// evaluates imagefs.available<20% against nodefs — which the kubelet's own /stats/summary
// confirms (its imageFs is the nodefs filesystem) — and, as the tmpfs fills, that
// imagefs.available<20% and then nodefs.available<10% are already breached, in the JSON
// warnings and in the table, each when the kubelet's eviction manager finds that same
// threshold met. Next to it a containerd on another filesystem gives a dedicated imagefs and
// no such warning.
func TestThresholdsUsageWarnings(t *testing.T) {
	harness.RequireRoot(t)
	fs := harness.TmpFS(t, 64<<20, 4000)
	c := harness.StartContainerd(t, harness.ContainerdOptions{Root: filepath.Join(fs, "containerd")})
	k := harness.StartKubelet(t, harness.KubeletOptions{Containerd: c, RootDir: filepath.Join(fs, "kubelet"),
		ConfigExtra: "evictionHard:\n  nodefs.available: \"10%\"\n  imagefs.available: \"20%\"\n",
		// --v=3: the eviction manager logs every threshold it finds met, by signal.
		Flags: []string{"--v=3"}})
	cmdline := strings.Join(k.Args, " ")
	thresholds := func(t *testing.T, output string) (warnings []string, stdout string) {
		t.Helper()
		stdout, stderr, code := runEvictguard(t, "thresholds", "-o", output, "--kubelet-cmdline", cmdline)
		if code != 0 {
			t.Fatalf("evictguard thresholds exited %d (warnings must not change the exit code)\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if output == "json" {
			warnings = decodeThresholds(t, stdout).Warnings
		}
		return warnings, stdout
	}
	src := func(field string) string {
		return fmt.Sprintf("(%s:%d)", k.ConfigPath, configLine(t, k.ConfigPath, field))
	}
	onNodefs := fmt.Sprintf("hard imagefs.available<20%% %s is evaluated against nodefs (%s, mounted at %s): containerd's image store %s",
		src("imagefs.available"), k.RootDir, fs, c.Root)
	sameFs := "is on the same filesystem as the kubelet root dir " + k.RootDir + "; it is stricter than nodefs.available<10%"
	imageBreached := fmt.Sprintf("hard imagefs.available<20%% %s is already breached: ", src("imagefs.available"))
	nodeBreached := fmt.Sprintf("hard nodefs.available<10%% %s is already breached: ", src("nodefs.available"))
	kubeletMet := func(signal string) bool {
		for _, line := range strings.Split(k.Proc.Log(), "\n") {
			if strings.Contains(line, "Eviction manager: threshold observed resource") && strings.Contains(line, `signal="`+signal+`"`) {
				return true
			}
		}
		return false
	}

	t.Run("imagefs thresholds are evaluated against nodefs", func(t *testing.T) {
		warnings, _ := thresholds(t, "json")
		if !containsAny(warnings, onNodefs) || !containsAny(warnings, sameFs) {
			t.Errorf("no warning %q … %q; warnings:\n%s", onNodefs, sameFs, strings.Join(warnings, "\n"))
		}
		if containsAny(warnings, "already breached") {
			t.Errorf("a breach on an empty tmpfs: %q", warnings)
		}
		// The kubelet agrees: its image filesystem is the nodefs filesystem.
		err := harness.WaitFor(t.Context(), 90*time.Second, k.Proc, func() error {
			s, err := kubeletSummary(k)
			if err != nil {
				return err
			}
			if s.Node.Fs.CapacityBytes == 0 || s.Node.Runtime.ImageFs.CapacityBytes != s.Node.Fs.CapacityBytes {
				return fmt.Errorf("summary: nodefs capacity %d, imagefs capacity %d", s.Node.Fs.CapacityBytes, s.Node.Runtime.ImageFs.CapacityBytes)
			}
			return nil
		})
		if err != nil {
			t.Errorf("the kubelet's /stats/summary does not show imagefs on nodefs: %v", err)
		}
		err = harness.WaitFor(t.Context(), 90*time.Second, k.Proc, func() error {
			if !strings.Contains(k.Proc.Log(), `"FileSystem detection" DedicatedImageFs=false`) {
				return fmt.Errorf("the eviction manager has not logged its filesystem detection yet")
			}
			return nil
		})
		if err != nil {
			t.Errorf("%v\nkubelet log tail:\n%s", err, k.Proc.LogTail(3000))
		}
		if kubeletMet("imagefs.available") || kubeletMet("nodefs.available") {
			t.Errorf("the kubelet found a threshold met on the empty tmpfs")
		}
	})

	t.Run("imagefs.available<20% breached on nodefs", func(t *testing.T) {
		fillToAvailable(t, fs, 0.15)
		warnings, _ := thresholds(t, "json")
		t.Logf("warnings:\n%s", strings.Join(warnings, "\n"))
		if !containsAny(warnings, imageBreached) {
			t.Errorf("no warning %q; warnings:\n%s", imageBreached, strings.Join(warnings, "\n"))
		}
		if containsAny(warnings, nodeBreached) {
			t.Errorf("nodefs.available<10%% reported breached at 15%% available: %q", warnings)
		}
		_, table := thresholds(t, "table")
		if !strings.Contains(table, "Warnings:") || !strings.Contains(table, "  - "+imageBreached) {
			t.Errorf("the table lacks %q:\n%s", imageBreached, table)
		}
		err := harness.WaitFor(t.Context(), 90*time.Second, k.Proc, func() error {
			if !kubeletMet("imagefs.available") {
				return fmt.Errorf("the kubelet has not found imagefs.available met yet")
			}
			return nil
		})
		if err != nil {
			t.Errorf("%v\nkubelet log tail:\n%s", err, k.Proc.LogTail(3000))
		}
		if kubeletMet("nodefs.available") {
			t.Errorf("the kubelet found nodefs.available met at 15%% available")
		}
	})

	t.Run("nodefs.available<10% breached", func(t *testing.T) {
		fillToAvailable(t, fs, 0.05)
		warnings, _ := thresholds(t, "json")
		t.Logf("warnings:\n%s", strings.Join(warnings, "\n"))
		where := "available on " + k.RootDir + ", mounted at " + fs + ", below the threshold of "
		if !containsAny(warnings, nodeBreached) || !containsAny(warnings, where) {
			t.Errorf("no warning %q…%q; warnings:\n%s", nodeBreached, where, strings.Join(warnings, "\n"))
		}
		err := harness.WaitFor(t.Context(), 90*time.Second, k.Proc, func() error {
			if !kubeletMet("nodefs.available") {
				return fmt.Errorf("the kubelet has not found nodefs.available met yet")
			}
			return nil
		})
		if err != nil {
			t.Errorf("%v\nkubelet log tail:\n%s", err, k.Proc.LogTail(3000))
		}
	})

	t.Run("a runtime on another filesystem is a dedicated imagefs", func(t *testing.T) {
		other := harness.StartContainerd(t, harness.ContainerdOptions{})
		stdout, stderr, code := runEvictguard(t, "thresholds", "-o", "json", "--kubelet-version", "1.37", "--kubelet-cmdline",
			fmt.Sprintf("--root-dir=%s --container-runtime-endpoint=%s --eviction-hard=nodefs.available<10%%,imagefs.available<20%%", k.RootDir, other.Endpoint()))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if w := decodeThresholds(t, stdout).Warnings; containsAny(w, "is evaluated against nodefs") {
			t.Errorf("imagefs on %s (not the tmpfs) reported as nodefs: %q", other.Root, w)
		}
	})
}

// configLine is the 1-based line of "field:" in a YAML file.
func configLine(t *testing.T, path, field string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), field+":") {
			return i + 1
		}
	}
	t.Fatalf("%s has no %s", path, field)
	return 0
}

// fillToAvailable writes a file so that about frac of the filesystem at dir stays available.
func fillToAvailable(t *testing.T, dir string, frac float64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	capacity, avail := int64(st.Blocks)*st.Frsize, int64(st.Bavail)*st.Frsize
	n := avail - int64(frac*float64(capacity))
	if n <= 0 {
		t.Fatalf("%s: %d of %d available, already below %.0f%%", dir, avail, capacity, frac*100)
	}
	f, err := os.CreateTemp(dir, "fill-")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	fill(t, f.Name(), n)
}

// kubeletSummary reads the kubelet's /stats/summary (anonymous, AlwaysAllow in the harness).
func kubeletSummary(k *harness.Kubelet) (*fsSummaryDoc, error) { return kubeletFsSummary(k) }
