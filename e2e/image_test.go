package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestImageLoadsAndRuns: the archive `make image` writes loads with `docker load` into a real
// dockerd (20.10, which reads the archive's manifest.json) and with `ctr -n k8s.io images
// import` into a real containerd (which reads its OCI layout), under the name deploy/image
// gives, with its OCI labels and entrypoint; a container of it runs the static binary with
// no shell and no libc in the image.
func TestImageLoadsAndRuns(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	image, ref := evictguardImage(t), imageRef(t)
	st, err := os.Stat(image)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 40<<20 {
		t.Errorf("the image archive is %.1f MiB, over 40 MiB", float64(st.Size())/(1<<20))
	}
	t.Logf("%s: %s, %.1f MiB", image, ref, float64(st.Size())/(1<<20))

	d := harness.StartDocker(t, harness.DockerOptions{})
	d.CLI(t, "load", "-i", image)
	var inspect []struct {
		Config struct {
			Entrypoint []string
			Labels     map[string]string
			User       string
		}
		Os, Architecture string
	}
	if err := json.Unmarshal([]byte(d.CLI(t, "image", "inspect", ref)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("docker image inspect %s: %v", ref, err)
	}
	cfg := inspect[0].Config
	if strings.Join(cfg.Entrypoint, " ") != "/usr/local/bin/evictguard" || inspect[0].Os != "linux" {
		t.Errorf("entrypoint %v, os %s", cfg.Entrypoint, inspect[0].Os)
	}
	for _, l := range []string{"org.opencontainers.image.source", "org.opencontainers.image.revision", "org.opencontainers.image.version"} {
		if cfg.Labels[l] == "" {
			t.Errorf("label %s missing: %v", l, cfg.Labels)
		}
	}
	if v := cfg.Labels["org.opencontainers.image.version"]; !strings.HasSuffix(ref, ":"+v) {
		t.Errorf("version label %q is not the tag of %s", v, ref)
	}
	out := d.CLI(t, "run", "--rm", "--network", "none", ref, "version")
	if !strings.Contains(out, "evictguard") {
		t.Errorf("`docker run %s version`: %q", ref, out)
	}
	if _, err := d.TryCLI("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", ref, "-c", "true"); err == nil {
		t.Error("the image has a shell")
	}

	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	c.Ctr(t, "images", "import", image)
	if ls := c.Ctr(t, "images", "ls", "-q"); !strings.Contains(ls, ref) {
		t.Errorf("ctr images ls after the import:\n%s", ls)
	}
}
