package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestBuildReproducible: the same binary and time give the same archive byte for byte (and
// so the same digests); the archive reads back as an image (its manifest.json, as `docker
// load` and `crane push` read it) with the entrypoint, labels and time it was built with.
func TestBuildReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "evictguard")
	if err := os.WriteFile(bin, bytes.Repeat([]byte("not really a binary\n"), 1000), 0o755); err != nil {
		t.Fatal(err)
	}
	created := time.Unix(1_764_000_000, 0).UTC()
	var archives [2][]byte
	var digests [2]string
	for i := range archives {
		out := filepath.Join(dir, "image.tar")
		d, _, err := build(bin, out, "registry.example/evictguard:v9.9.9", created, "abc123", "https://example.com/evictguard")
		if err != nil {
			t.Fatal(err)
		}
		if archives[i], err = os.ReadFile(out); err != nil {
			t.Fatal(err)
		}
		digests[i] = d.String()
		// A second build a moment later must not differ.
		time.Sleep(1100 * time.Millisecond)
	}
	if digests[0] != digests[1] || !bytes.Equal(archives[0], archives[1]) {
		t.Fatalf("two builds differ: digests %s and %s, archives equal %v", digests[0], digests[1], bytes.Equal(archives[0], archives[1]))
	}
	img, err := tarball.ImageFromPath(filepath.Join(dir, "image.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// (tarball rebuilds a Docker manifest from manifest.json, so compare the config blob.)
	if cn, err := img.ConfigName(); err != nil || !bytes.Contains(archives[0], []byte("blobs/sha256/"+cn.Hex)) {
		t.Errorf("config %v %v is not a blob of the archive", cn, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/usr/local/bin/evictguard" || !cf.Created.Equal(created) {
		t.Errorf("entrypoint %v created %v", cf.Config.Entrypoint, cf.Created)
	}
	want := map[string]string{"org.opencontainers.image.version": "v9.9.9", "org.opencontainers.image.revision": "abc123",
		"org.opencontainers.image.source": "https://example.com/evictguard"}
	for k, v := range want {
		if cf.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cf.Config.Labels[k], v)
		}
	}
}
